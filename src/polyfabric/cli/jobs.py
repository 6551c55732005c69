"""`polyfabric job`: list, inspect, wait for and steer workflow runs.

Why these shapes: a job may have 10,000 task instances, so `job show` prints the counts and the
first tasks and pages through the rest only on `--all`; waiting rides the coordinator's events
long-poll, never a polling loop. Exit codes are the same for every command that waits
(`job wait`, `run --wait`, `run --watch`): 0 succeeded, 1 failed or cancelled, 124 still running
at the timeout. The helpers at the bottom are shared with `run` and `task`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import click

from polyfabric.cli.config import load_config
from polyfabric.cli.output import age, client_options, emit, handle_errors, table, when
from polyfabric.cli.policies import policy_lines
from polyfabric.client.jobs import (
    JOB_STATUSES,
    TASK_STATUSES,
    TERMINAL_TASK_STATUSES,
    JobsClient,
    WaitTimeout,
)
from polyfabric.domain.errors import ValidationError
from polyfabric.domain.jobs import parse_duration

__all__ = [
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "LogPrinter",
    "compact",
    "done_of",
    "duration_of",
    "exit_code_for",
    "job",
    "open_jobs",
    "parse_timeout",
    "progress_line",
    "render_result",
    "timeout_option",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_TIMEOUT = 124  # like timeout(1): the job goes on, we stopped waiting

SHOW_TASKS = 50


def open_jobs(url: str | None, token: str | None) -> JobsClient:
    config = load_config(url, token)
    return JobsClient(config.url, config.token)


def exit_code_for(job: dict[str, Any]) -> int:
    return EXIT_OK if job.get("status") == "succeeded" else EXIT_FAILED


def parse_timeout(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="--timeout") from None


def timeout_option(func: Any) -> Any:
    return click.option("--timeout", default=None, metavar="DURATION",
                        help="Stop waiting after this long (30s, 5m, 1h): exit 124, the job goes on.")(func)


def compact(value: Any, width: int | None = 60) -> str:
    """A JSON value on one line, cut to `width` characters."""
    if value is None:
        return "-"
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    if width is not None and len(text) > width:
        return text[: width - 1] + "…"
    return text


def duration_of(item: dict[str, Any]) -> str:
    start, end = item.get("started_at"), item.get("finished_at")
    if start is None or end is None:
        return "-"
    return age(max(0.0, end - start))


def done_of(job: dict[str, Any]) -> tuple[int, int]:
    """(task instances finished, all task instances) from a JobOut's counts."""
    counts = job.get("counts") or {}
    total = job.get("total")
    return (sum(n for s, n in counts.items() if s in TERMINAL_TASK_STATUSES),
            int(total if total is not None else sum(counts.values())))


def progress_line(job: dict[str, Any]) -> str:
    """'12/40 done (succeeded 10, failed 2); running 4, waiting 24'."""
    counts: dict[str, int] = {k: v for k, v in (job.get("counts") or {}).items() if v}
    done, total = done_of(job)
    finished = ", ".join(f"{s} {counts[s]}" for s in TASK_STATUSES if s in TERMINAL_TASK_STATUSES and s in counts)
    open_ = ", ".join(f"{s} {counts[s]}" for s in TASK_STATUSES if s not in TERMINAL_TASK_STATUSES and s in counts)
    others = ", ".join(f"{s} {n}" for s, n in sorted(counts.items()) if s not in TASK_STATUSES)
    text = f"{done}/{total} done" + (f" ({finished})" if finished else "")
    rest = ", ".join(p for p in (open_, others) if p)
    return text + (f"; {rest}" if rest else "")


def _job_rows(jobs: list[dict[str, Any]]) -> str:
    return table([
        (j["id"], j.get("name"), j.get("domain"), j.get("status"), "{}/{} done".format(*done_of(j)),
         j.get("priority"), when(j.get("submitted_at")), j.get("submitted_by"))
        for j in jobs
    ], ["ID", "NAME", "DOMAIN", "STATUS", "PROGRESS", "PRIORITY", "SUBMITTED", "BY"])


def _task_rows(tasks: Iterable[dict[str, Any]]) -> str:
    rows = []
    for t in tasks:
        outcome = f"error: {t['error']}" if t.get("error") else compact(t.get("result"))
        if t.get("status") in ("waiting", "ready") and t.get("pending_reason"):
            outcome = f"({t['pending_reason']})"
        rows.append((t.get("key"), t.get("id"), t.get("status"), t.get("attempt") or "-", t.get("lost") or 0,
                     t.get("node_id") or "-", when(t.get("started_at")), duration_of(t), outcome))
    return table(rows, ["KEY", "ID", "STATUS", "ATTEMPT", "LOST", "NODE", "STARTED", "DURATION", "RESULT"])


def _job_header(j: dict[str, Any]) -> list[str]:
    lines = [
        f"Job:        {j['id']} ({j.get('name')})",
        f"Domain:     {j.get('domain')}",
        f"Status:     {j.get('status')}, priority {j.get('priority')}",
        f"Submitted:  {when(j.get('submitted_at'))} by {j.get('submitted_by') or '-'}",
        f"Started:    {when(j.get('started_at'))}",
        f"Finished:   {when(j.get('finished_at'))}" + (f" (took {duration_of(j)})" if j.get("finished_at") else ""),
        f"Progress:   {progress_line(j)}",
    ]
    if j.get("lost"):
        lines.append(f"Lost:       {j['lost']} attempt(s) lost with their node (run again elsewhere; not failures)")
    if j.get("params"):
        lines.append("Params:     " + ", ".join(f"{k}={compact(v, 40)}" for k, v in j["params"].items()))
    if j.get("error"):
        lines.append(f"Error:      {j['error']}")
    lines.extend(policy_lines(j.get("policy")))  # issue 6: which policy versions allowed it, declines
    return lines


def render_result(r: dict[str, Any], header: bool = True) -> str:
    lines = [f"job {r.get('job_id')} {r.get('status')}"] if header else []
    short = compact(r.get("result"), None)
    if len(short) <= 100:
        lines.append(f"result: {short}")
    else:
        lines.append("result:")
        lines.extend("  " + line for line in json.dumps(r.get("result"), indent=2, sort_keys=True,
                                                        default=str).splitlines())
    tasks = r.get("tasks") or {}
    if tasks:
        lines.append("tasks:")
        lines.extend(f"  {name}: {compact(value, None)}" for name, value in tasks.items())
    return "\n".join(lines)


class LogPrinter:
    """Writes log chunks as they come: stdout chunks to stdout, stderr chunks to stderr; with a
    `prefix`, each line starts with it (partial lines wait for their end, per stream)."""

    def __init__(self) -> None:
        self._partial: dict[tuple[str, str], str] = {}

    def write(self, chunk: dict[str, Any], prefix: str | None = None) -> None:
        stream = chunk.get("stream", "stdout")
        data = str(chunk.get("data") or "")
        err = stream == "stderr"
        if prefix is None:
            click.echo(data, nl=False, err=err)
            return
        key = (prefix, stream)
        text = self._partial.pop(key, "") + data
        *lines, last = text.split("\n")
        for line in lines:
            click.echo(f"{prefix} | {line}", err=err)
        if last:
            self._partial[key] = last

    def flush(self) -> None:
        for (prefix, stream), rest in self._partial.items():
            click.echo(f"{prefix} | {rest}", err=stream == "stderr")
        self._partial.clear()


# -- commands ------------------------------------------------------------------------------------


@click.group()
def job() -> None:
    """Jobs (workflow runs): list, show, logs, wait, and pause/resume/cancel/retry them."""


@job.command("ls")
@click.option("--status", type=click.Choice(JOB_STATUSES), default=None, help="Only jobs in this status.")
@click.option("--domain", default=None, help="Only jobs of this domain.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def job_ls(status: str | None, domain: str | None, limit: int, as_json: bool, url: str | None,
           token: str | None) -> None:
    """List jobs, newest first."""
    with open_jobs(url, token) as client:
        jobs = client.list(status=status, domain=domain, limit=limit)
    emit(jobs, as_json, _job_rows)


def _all_tasks(client: JobsClient, job_id: str, status: str | None) -> Iterator[dict[str, Any]]:
    return client.tasks(job_id, status=status)


@job.command("show")
@click.argument("job_id")
@click.option("--all", "show_all", is_flag=True, help="Page through every task (default: the first --limit).")
@click.option("--limit", type=click.IntRange(0, 1000), default=SHOW_TASKS, show_default=True,
              help="How many tasks to print without --all.")
@click.option("--status", "task_status", type=click.Choice(TASK_STATUSES), default=None,
              help="Only tasks in this status.")
@click.option("--json", "as_json", is_flag=True, help="JobDetail as JSON (with --all: every task).")
@client_options
@handle_errors
def job_show(job_id: str, show_all: bool, limit: int, task_status: str | None, as_json: bool, url: str | None,
             token: str | None) -> None:
    """Show a job: status, counts, and its tasks (status, attempt, node, times, result)."""
    with open_jobs(url, token) as client:
        detail = client.get_job(job_id)
        if as_json:
            if show_all or task_status:
                detail["tasks"] = list(_all_tasks(client, job_id, task_status))
            emit(detail, True, str)
            return
        for line in _job_header(detail):
            click.echo(line)
        total = detail.get("total")
        if show_all:
            click.echo("Tasks:")
            click.echo(_task_rows(list(_all_tasks(client, job_id, task_status))))
            return
        if limit == 0:
            return
        if task_status:
            tasks: list[dict[str, Any]] = []
            for t in _all_tasks(client, job_id, task_status):
                if len(tasks) == limit:
                    more, of = True, ""
                    break
                tasks.append(t)
            else:
                more, of = False, ""
        else:
            listed = list(detail.get("tasks") or [])
            tasks = listed[:limit]
            known = max(total or 0, len(listed))
            more, of = known > len(tasks), f" of {known}"
        click.echo(f"Tasks (the first {len(tasks)}{of}; --all for every task):" if more else "Tasks:")
        click.echo(_task_rows(tasks))


@job.command("result")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def job_result(job_id: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Print a job's result and each task's result."""
    with open_jobs(url, token) as client:
        result = client.result(job_id)
    emit(result, as_json, render_result)


def _matches(task: dict[str, Any], wanted: str | None) -> bool:
    if wanted is None:
        return True
    return task.get("key") == wanted or (task.get("task") == wanted and task.get("index") is not None)


@job.command("logs")
@click.argument("job_id")
@click.option("--task", "task_key", default=None, metavar="KEY",
              help="Only this task: a key (work[3]) or a foreach task's name (all its items).")
@click.option("--json", "as_json", is_flag=True,
              help="A JSON list, one object per task that ran: key, task_id, attempt, status, stdout, stderr.")
@client_options
@handle_errors
def job_logs(job_id: str, task_key: str | None, as_json: bool, url: str | None, token: str | None) -> None:
    """Print the logs of a job's tasks (their current attempts), each line prefixed with the task key."""
    printer = LogPrinter()
    found = False
    entries: list[dict[str, Any]] = []
    with open_jobs(url, token) as client:
        for t in client.tasks(job_id):
            if not _matches(t, task_key):
                continue
            found = True
            if not t.get("attempt") or t.get("is_group"):
                continue  # never ran, or a foreach task's own record
            chunks = client.follow_logs(t["id"], attempt=t.get("attempt"))
            if as_json:
                streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
                for chunk in chunks:
                    streams.setdefault(str(chunk.get("stream", "stdout")), []).append(str(chunk.get("data") or ""))
                entries.append({"key": t["key"], "task_id": t["id"], "attempt": t["attempt"], "status": t.get("status"),
                                **{stream: "".join(parts) for stream, parts in streams.items()}})
                continue
            for chunk in chunks:
                printer.write(chunk, prefix=t["key"])
            printer.flush()
    if task_key is not None and not found:
        click.echo(f"Error: job {job_id} has no task {task_key!r}", err=True)
        sys.exit(EXIT_FAILED)
    if as_json:
        emit(entries, True, str)


@job.command("wait")
@click.argument("job_id")
@timeout_option
@click.option("--json", "as_json", is_flag=True, help="Print the final JobOut as JSON.")
@client_options
@handle_errors
def job_wait(job_id: str, timeout: str | None, as_json: bool, url: str | None, token: str | None) -> None:
    """Wait until a job is finished: exit 0 if it succeeded, 1 if it failed or was cancelled, 124 at --timeout."""
    limit = parse_timeout(timeout)
    with open_jobs(url, token) as client:
        try:
            final = client.wait(job_id, timeout=limit)
        except WaitTimeout as exc:
            emit(exc.job, as_json, lambda j: f"job {j['id']} is still {j['status']}: {progress_line(j)}")
            sys.exit(EXIT_TIMEOUT)
    emit(final, as_json, lambda j: f"job {j['id']} {j['status']}: {progress_line(j)}"
         + (f"\nerror: {j['error']}" if j.get("error") else ""))
    sys.exit(exit_code_for(final))


def _action(verb: str, doc: str) -> click.Command:
    @click.command(verb, help=doc)
    @click.argument("job_id")
    @click.option("--reason", default="", help="Why (recorded in the audit chain).")
    @click.option("--json", "as_json", is_flag=True)
    @client_options
    @handle_errors
    def command(job_id: str, reason: str, as_json: bool, url: str | None, token: str | None) -> None:
        with open_jobs(url, token) as client:
            out = getattr(client, verb)(job_id, reason=reason)
        emit(out, as_json, lambda j: f"job {j['id']} is now {j['status']}")

    return command


for _verb, _doc in (
    ("pause", "Hand out no new tasks of a job; running ones go on."),
    ("resume", "Let a paused job hand out tasks again."),
    ("cancel", "Cancel a job: queued tasks are dropped, running ones are stopped."),
):
    job.add_command(_action(_verb, _doc))


@job.command("retry")
@click.argument("job_id")
@click.option("--from-failed", is_flag=True,
              help="Re-run only the failed tasks and what was skipped or cancelled because of them "
                   "(a task cancelled on its own stays cancelled).")
@click.option("--reason", default="", help="Why (recorded in the audit chain).")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def job_retry(job_id: str, from_failed: bool, reason: str, as_json: bool, url: str | None,
              token: str | None) -> None:
    """Re-run a finished job's failed and cancelled tasks and what depends on them.

    Every succeeded task keeps its result and is not run again (its attempt number does not
    change); a failed foreach task re-runs only its items that did not succeed. Each re-run
    task resumes from its last checkpoint, if it saved one."""
    with open_jobs(url, token) as client:
        out = client.retry(job_id, reason=reason, from_failed=from_failed)
    emit(out, as_json, lambda j: f"job {j['id']} is now {j['status']}")


@job.command("set-priority")
@click.argument("job_id")
@click.argument("priority", type=int)
@click.option("--reason", default="", help="Why (recorded in the audit chain).")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def job_set_priority(job_id: str, priority: int, reason: str, as_json: bool, url: str | None,
                     token: str | None) -> None:
    """Change a job's priority (higher runs first; a negative one goes after `--`)."""
    with open_jobs(url, token) as client:
        out = client.set_priority(job_id, priority, reason=reason)
    emit(out, as_json, lambda j: f"job {j['id']} now has priority {j['priority']}")


# Issue 6: signed result manifests (cli/manifests.py).
from polyfabric.cli.manifests import job_export, job_verify  # noqa: E402

job.add_command(job_verify)
job.add_command(job_export)
