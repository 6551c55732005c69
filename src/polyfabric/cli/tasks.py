"""`polyfabric task`: one task instance of a job — its attempts, and its logs (live with -f).

Why a noun of its own: a task id (`t-...`) names one instance across all its attempts, and its
logs are what people look at when something fails. `task logs -f` follows a running task through
the coordinator's long-poll until it says `done` (no polling loop); earlier attempts' logs stay
readable with `--attempt N`. stdout chunks go to stdout and stderr chunks to stderr, as the task
wrote them.
"""

from __future__ import annotations

from typing import Any

import click

from polyfabric.cli.jobs import LogPrinter, compact, duration_of, open_jobs
from polyfabric.cli.output import client_options, emit, handle_errors, table, when
from polyfabric.cli.policies import policy_lines

__all__ = ["task"]


@click.group()
def task() -> None:
    """Task instances: show one (with every attempt) and read its logs."""


def _render_task(t: dict[str, Any]) -> str:
    lines = [
        f"Task:       {t.get('key')} ({t.get('id')})",
        f"Job:        {t.get('job_id')}",
        f"Status:     {t.get('status')}, attempt {t.get('attempt') or 0} "
        f"(failures {t.get('failures') or 0}, preemptions {t.get('preemptions') or 0})",
        f"Lost:       {t.get('lost') or 0} (attempts lost with their node: Down, quarantined or drained; "
        "no retry used)",
        f"Node:       {t.get('node_id') or '-'}",
        f"Priority:   {t.get('priority')}",
        f"Started:    {when(t.get('started_at'))}",
        f"Finished:   {when(t.get('finished_at'))}" + (f" (took {duration_of(t)})" if t.get("finished_at") else ""),
    ]
    if t.get("not_before"):
        lines.append(f"Not before: {when(t['not_before'])}")
    if t.get("pending_reason"):
        lines.append(f"Pending:    {t['pending_reason']}")
    if t.get("exit_code") is not None:
        lines.append(f"Exit code:  {t['exit_code']}")
    if t.get("error"):
        lines.append(f"Error:      {t['error']}")
    lines.append(f"Result:     {compact(t.get('result'), None)}")
    lines.extend(policy_lines(t.get("policy")))  # issue 6: policy versions, declines
    attempts = t.get("attempts") or []
    if attempts:
        lines.append("Attempts:")
        rows = [(a.get("attempt"), a.get("status"), a.get("node_id") or "-", when(a.get("leased_at")),
                 when(a.get("started_at")), duration_of(a), "-" if a.get("exit_code") is None else a["exit_code"],
                 a.get("error") or (f"preempted by {a['preempted_by']}" if a.get("preempted_by") else ""))
                for a in attempts]
        lines.extend("  " + line for line in table(
            rows, ["#", "STATUS", "NODE", "LEASED", "STARTED", "DURATION", "EXIT", "ERROR"]).splitlines())
    return "\n".join(lines)


@task.command("show")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def task_show(task_id: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Show a task: status, node, times, result or error, and every attempt."""
    with open_jobs(url, token) as client:
        t = client.task(task_id)
    emit(t, as_json, _render_task)


@task.command("logs")
@click.argument("task_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the attempt is finished.")
@click.option("--attempt", type=click.IntRange(1), default=None,
              help="Only the logs of this attempt (default: every attempt, each under a --- attempt N --- line).")
@client_options
@handle_errors
def task_logs(task_id: str, follow: bool, attempt: int | None, url: str | None, token: str | None) -> None:
    """Print a task's logs (stdout to stdout, stderr to stderr); -f follows a running task to its end."""
    printer = LogPrinter()
    shown_attempt: int | None = None
    with open_jobs(url, token) as client:
        try:
            for chunk in client.follow_logs(task_id, attempt=attempt, follow=follow):
                if attempt is None and chunk.get("attempt") is not None:
                    if shown_attempt is not None and chunk["attempt"] != shown_attempt:
                        click.echo(f"--- attempt {chunk['attempt']} ---", err=True)
                    shown_attempt = chunk["attempt"]
                printer.write(chunk)
        except KeyboardInterrupt:
            click.echo("", err=True)
