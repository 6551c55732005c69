"""`polyfabric semaphore`: named concurrency limits that tasks share across jobs (`semaphore:` in a task).

Why operators set them by hand: a semaphore guards something outside the fabric (a licence
server, a database) whose capacity only people know; `set` creates or resizes one, `ls` shows
how much of each is in use.
"""

from __future__ import annotations

import click

from polyfabric.cli.jobs import open_jobs
from polyfabric.cli.output import client_options, emit, handle_errors, table

__all__ = ["semaphore"]


@click.group()
def semaphore() -> None:
    """Semaphores: named limits on how many tasks hold them at once."""


@semaphore.command("set")
@click.argument("name")
@click.argument("size", type=click.IntRange(0))
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def semaphore_set(name: str, size: int, as_json: bool, url: str | None, token: str | None) -> None:
    """Create semaphore NAME with SIZE permits, or resize it (operator)."""
    with open_jobs(url, token) as client:
        out = client.set_semaphore(name, size)
    emit(out, as_json, lambda s: f"semaphore {s['name']}: size {s['size']}, {s.get('in_use', 0)} in use")


@semaphore.command("ls")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def semaphore_ls(as_json: bool, url: str | None, token: str | None) -> None:
    """List semaphores with their size and how many permits are in use."""
    with open_jobs(url, token) as client:
        sems = client.semaphores()
    emit(sems, as_json, lambda ss: table([(s["name"], s["size"], s.get("in_use", 0)) for s in ss],
                                         ["NAME", "SIZE", "IN USE"]))
