"""`polyfabric limits`: how many tasks may run at once, fabric-wide, per domain and per node.

Workflow-level caps live in the workflow file (`max_parallel`), shared ones in semaphores; these
are the operator's caps over everything (admin only to change).
"""

from __future__ import annotations

from typing import Any

import click

from polyfabric.cli.output import client_options, emit, handle_errors, open_client

__all__ = ["limits"]


def _render(out: dict[str, Any]) -> str:
    per_domain = ", ".join(f"{d}={n}" for d, n in sorted(out["per_domain"].items())) or "none"
    return (f"global:     {out['global_max'] if out['global_max'] is not None else 'no limit'}\n"
            f"per domain: {per_domain}\n"
            f"per node:   {out['per_node'] if out['per_node'] is not None else 'no limit (slots decide)'}")


@click.group()
def limits() -> None:
    """Concurrency limits on running tasks: global, per domain, per node."""


@limits.command("show")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def limits_show(as_json: bool, url: str | None, token: str | None) -> None:
    """Show the limits in force."""
    with open_client(url, token) as client:
        emit(client.get("/v1/limits"), as_json, _render)


@limits.command("set")
@click.option("--global", "global_max", type=click.IntRange(0), default=None,
              help="At most this many tasks running in the whole fabric.")
@click.option("--domain", "per_domain", multiple=True, help="DOMAIN=N: at most N running tasks of that domain.")
@click.option("--per-node", type=click.IntRange(0), default=None, help="At most this many tasks on any node.")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def limits_set(global_max: int | None, per_domain: tuple[str, ...], per_node: int | None, as_json: bool,
               url: str | None, token: str | None) -> None:
    """Replace the limits (an option left out means no limit). Admin only."""
    domains: dict[str, int] = {}
    for item in per_domain:
        name, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            raise click.BadParameter(f"{item!r} is not DOMAIN=N", param_hint="--domain")
        domains[name] = int(value)
    with open_client(url, token) as client:
        out = client.request("PUT", "/v1/limits", json={"global_max": global_max, "per_domain": domains,
                                                         "per_node": per_node})
    emit(out, as_json, _render)
