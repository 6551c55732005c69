"""`polyfabric schedule`: run a workflow file on a cron schedule."""

from __future__ import annotations

from typing import Any

import click

from polyfabric.cli.jobs import open_jobs
from polyfabric.cli.output import client_options, emit, handle_errors, open_client, table, when
from polyfabric.cli.run import load_workflow_file, parse_params
from polyfabric.client.jobs import DomainNeeded

__all__ = ["schedule"]


@click.group()
def schedule() -> None:
    """Cron schedules: submit a workflow at every due time (docs/triggers.md)."""


def _domain(client: Any, domain: str | None) -> str:
    if domain:
        return domain
    try:
        return str(client.default_domain())
    except DomainNeeded as exc:
        raise click.UsageError(f"{exc.message}: pass --domain (or set POLYFABRIC_DOMAIN)") from None


@schedule.command("create")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--cron", required=True,
              help='Cron expression, 5 fields ("*/5 * * * *"), or 6 with seconds last ("* * * * * */10").')
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Override a declared param (repeat).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone the cron is read in.")
@click.option("--concurrency", type=click.Choice(["allow", "forbid", "replace"]), default="allow", show_default=True,
              help="When the previous run is still going: start anyway, skip this one, or cancel it and start.")
@click.option("--catch-up", type=click.IntRange(0, 100), default=0, show_default=True,
              help="After downtime, run at most this many of the most recent missed due times (0: skip them).")
@click.option("--name", default=None, help="Schedule name (default: the workflow's name).")
@click.option("--domain", default=None, envvar="POLYFABRIC_DOMAIN", help="The domain the runs go to.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
@handle_errors
def schedule_create(file: str, cron: str, params: tuple[str, ...], timezone: str, concurrency: str, catch_up: int,
                    name: str | None, domain: str | None, as_json: bool, url: str | None, token: str | None) -> None:
    """Create a schedule that submits FILE at every due time of --cron."""
    doc = load_workflow_file(file)
    with open_jobs(url, token) as client:
        created = client.post("/v1/schedules", {
            "workflow": doc, "params": parse_params(params), "domain": _domain(client, domain), "cron": cron,
            "timezone": timezone, "concurrency": concurrency, "catch_up": catch_up, "name": name})
    emit(created, as_json, lambda s: f"schedule {s['id']} ({s['name']}): {s['cron']} {s['timezone']}, "
                                     f"next run {when(s['next_at'])}")


def _rows(items: list[dict[str, Any]]) -> str:
    return table([(s["id"], s["name"], s["domain"], s["cron"], s["timezone"], s["concurrency"], s["catch_up"],
                   "paused" if s["paused"] else "active", when(s.get("next_at")),
                   s["fires"].get("submitted", 0), s["fires"].get("skipped", 0) + s["fires"].get("missed", 0))
                  for s in items],
                 ["ID", "NAME", "DOMAIN", "CRON", "TZ", "CONCURRENCY", "CATCH-UP", "STATE", "NEXT", "RUNS", "SKIPPED"])


@schedule.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
@handle_errors
def schedule_ls(as_json: bool, url: str | None, token: str | None) -> None:
    """List schedules."""
    with open_client(url, token) as client:
        items = client.get("/v1/schedules")
    emit(items, as_json, _rows)


@schedule.command("show")
@click.argument("ref")
@click.option("--fires", type=click.IntRange(0, 1000), default=20, show_default=True, help="Recent fires to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
@handle_errors
def schedule_show(ref: str, fires: int, as_json: bool, url: str | None, token: str | None) -> None:
    """Show a schedule (by id or name), its next due times and its recent fires."""
    with open_client(url, token) as client:
        item = client.get(f"/v1/schedules/{ref}", fires=fires)

    def render(s: dict[str, Any]) -> str:
        lines = [_rows([s]), "", "next: " + (", ".join(when(t) for t in s["upcoming"]) or "- (paused)"), ""]
        lines.append(table([(when(f["scheduled_at"]), f["outcome"], "yes" if f["catch_up"] else "",
                             f["job_id"] or "-", f["reason"] or "") for f in s["recent"]],
                           ["DUE", "OUTCOME", "CATCH-UP", "JOB", "REASON"]))
        return "\n".join(lines)

    emit(item, as_json, render)


def _action(verb: str, help_text: str) -> None:
    @schedule.command(verb, help=help_text)
    @click.argument("ref")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @client_options
    @handle_errors
    def command(ref: str, as_json: bool, url: str | None, token: str | None) -> None:
        with open_client(url, token) as client:
            out = client.delete(f"/v1/schedules/{ref}") if verb == "rm" else client.post(f"/v1/schedules/{ref}/{verb}")
        emit(out, as_json, lambda s: f"schedule {s['name']} " + {"pause": "paused", "resume": "resumed",
                                                                 "rm": "deleted"}[verb])


_action("pause", "Pause a schedule: no run starts until it is resumed.")
_action("resume", "Resume a paused schedule (due times that passed while paused are skipped).")
_action("rm", "Delete a schedule (its runs go on).")
