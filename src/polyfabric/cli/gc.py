"""`polyfabric gc`: collect the records of finished jobs whose ttl has passed (docs/operations.md)."""

from __future__ import annotations

from typing import Any

import click

from polyfabric.cli.output import age, client_options, emit, handle_errors, open_client, table, when

__all__ = ["gc"]


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Only list what would be collected now.")
@click.option("--limit", type=click.IntRange(1, 10000), default=1000, show_default=True, help="At most this many jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
@handle_errors
def gc(dry_run: bool, limit: int, as_json: bool, url: str | None, token: str | None) -> None:
    """Collect expired jobs now (the coordinator also does it periodically).

    A finished job expires ttl after it finished (the workflow's `ttl:`, else the coordinator's
    default); outputs the workflow keeps (`keep:`) stay. Running and paused jobs are never touched."""
    with open_client(url, token) as client:
        out = client.get("/v1/gc", limit=limit) if dry_run else client.post(f"/v1/gc?limit={limit}")

    def render(o: dict[str, Any]) -> str:
        jobs = o["jobs"]
        verb = "would collect" if o["dry_run"] else "collected"
        if not jobs:
            return f"nothing to collect (default ttl {age(o['default_ttl_s'])})"
        rows = table([(j["job_id"], j["name"], j["status"], when(j["finished_at"]), age(j["ttl_s"]),
                       j["action"], ",".join(j["kept"]) or "-", j["footprint"]["tasks"], j["footprint"]["logs"])
                      for j in jobs], ["JOB", "NAME", "STATUS", "FINISHED", "TTL", "ACTION", "KEPT", "TASKS", "LOGS"])
        return f"{rows}\n{verb} {len(jobs)} job(s)"

    emit(out, as_json, render)
