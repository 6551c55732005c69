"""`polyfabric run FILE`: submit a workflow file, and optionally wait for it or watch it live.

Why here and not under `job`: running a file is the one thing most users do, so it is a verb of
its own. The file is parsed locally only as YAML (a syntax error names its line and column);
the coordinator validates the workflow and lists every problem, which we print in full (exit 2,
nothing created). `--watch` draws a live view with `rich` on a terminal (a progress bar and the
running tasks, updated in place) and falls back to one line per task change when stdout is not
a terminal, so logs and CI output stay readable. Exit codes as for `job wait`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import click
import yaml

from polyfabric.cli.jobs import (
    EXIT_INVALID,
    EXIT_TIMEOUT,
    done_of,
    exit_code_for,
    open_jobs,
    parse_timeout,
    progress_line,
    render_result,
    timeout_option,
)
from polyfabric.cli.output import client_options, emit, handle_errors
from polyfabric.client.jobs import (
    TERMINAL_JOB_STATUSES,
    TERMINAL_TASK_STATUSES,
    DomainNeeded,
    JobsClient,
    WaitTimeout,
    WorkflowRejected,
)

__all__ = ["WatchView", "load_workflow_file", "parse_params", "run", "watch_job"]

_MARKS = {"succeeded": "✓", "failed": "✗", "cancelled": "⊘", "skipped": "↷", "running": "●", "leased": "◌",
          "ready": "·", "waiting": "·"}
_STYLES = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "skipped": "dim", "running": "cyan",
           "leased": "cyan", "ready": "dim", "waiting": "dim"}


def load_workflow_file(path: str) -> dict[str, Any]:
    """The YAML document of FILE ('-': stdin); a syntax error exits 2 naming the line and column."""
    shown = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        click.echo(f"Error: cannot read {shown}: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    try:
        doc = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark, context = exc.problem_mark or exc.context_mark, exc.context_mark
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark is not None else shown
        what = exc.problem or "invalid YAML"
        if exc.context:
            what += f" ({exc.context}" + (f" at line {context.line + 1}, column {context.column + 1}"
                                          if context is not None and context is not mark else "") + ")"
        click.echo(f"Error: {where}: YAML syntax error: {what}", err=True)
        for candidate in (mark, context):
            snippet = candidate.get_snippet() if candidate is not None else None
            if snippet and snippet.strip() != "^":
                click.echo(snippet, err=True)
                break
        sys.exit(EXIT_INVALID)
    except yaml.YAMLError as exc:
        click.echo(f"Error: {shown}: YAML syntax error: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    if not isinstance(doc, dict):
        click.echo(f"Error: {shown}: the workflow must be a map with at least 'name' and 'tasks'", err=True)
        sys.exit(EXIT_INVALID)
    return doc


def parse_params(values: tuple[str, ...]) -> dict[str, str]:
    """`-p k=v` pairs. Values stay text: the coordinator reads them by the declared param's type."""
    params: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="-p/--param")
        params[key.strip()] = value
    return params


# -- the live view -------------------------------------------------------------------------------


def _natural(key: str) -> tuple[str, int]:
    name, _, index = key.partition("[")
    return name, int(index.rstrip("]")) if index.rstrip("]").isdigit() else -1


class WatchView:
    """What `--watch` knows of a job: its latest JobOut and the last state of each task that
    changed. Fed from the events long-poll; read by the renderer (another thread: hence the lock)."""

    def __init__(self, job_id: str, recent: int = 6, clock: Any = time.monotonic) -> None:
        self.job_id = job_id
        self.job: dict[str, Any] = {"id": job_id, "status": "pending"}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.recent: deque[str] = deque(maxlen=recent)
        self.started = clock()
        self._clock = clock
        self._lock = threading.Lock()

    def update(self, page: dict[str, Any]) -> list[dict[str, Any]]:
        """Apply one events answer; return its events (for line-by-line output)."""
        with self._lock:
            self.job = page.get("job") or self.job
            events = list(page.get("events") or [])
            now = self._clock()
            for event in events:
                key = str(event.get("key"))
                old = self.tasks.get(key)
                entry = dict(event)
                entry["since"] = now if old is None or old.get("status") != event.get("status") else old["since"]
                self.tasks[key] = entry
                if event.get("status") in TERMINAL_TASK_STATUSES:
                    if key in self.recent:
                        self.recent.remove(key)
                    self.recent.append(key)
            return events

    def counts(self) -> tuple[int, int, int, int]:
        """(done, total, running, failed) from the job's own counts."""
        counts = self.job.get("counts") or {}
        done, total = done_of(self.job)
        return done, total, counts.get("running", 0) + counts.get("leased", 0), counts.get("failed", 0)

    def lines(self, max_tasks: int) -> list[tuple[str, str, str]]:
        """(mark, text, style) per task line: running tasks first, then the latest finished."""
        with self._lock:
            now = self._clock()
            active = sorted((k for k, t in self.tasks.items() if t.get("status") in ("running", "leased")),
                            key=_natural)
            finished = [k for k in reversed(self.recent) if k not in active]
            keys = active + finished
            out = []
            for key in keys[:max_tasks]:
                t = self.tasks[key]
                status = str(t.get("status"))
                parts = [f"{key:<16}", f"{status:<10}"]
                if t.get("attempt"):
                    parts.append(f"attempt {t['attempt']}")
                if t.get("node_id"):
                    parts.append(f"on {t['node_id']}")
                if status in ("running", "leased"):
                    parts.append(f"{now - t['since']:.0f}s")
                out.append((_MARKS.get(status, "?"), "  ".join(parts), _STYLES.get(status, "")))
            hidden = len(active) - min(len(active), max_tasks)
            if hidden > 0:
                out.append(("…", f"{hidden} more running", "dim"))
            return out

    def renderable(self, height: int = 24) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        done, total, running, failed = self.counts()
        with self._lock:
            job = dict(self.job)
        elapsed = self._clock() - self.started
        head = Text.assemble((f"{job.get('name') or 'job'} ", "bold"), (f"{self.job_id}  ", "dim"),
                             (str(job.get("status")), _STYLES.get(str(job.get("status")), "bold")),
                             (f"  {elapsed:.0f}s", "dim"))
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=max(total, 1), completed=done, width=40),
                    Text(f"{done}/{total} done"), Text(f"running {running}", style="cyan"),
                    Text(f"failed {failed}", style="red" if failed else "dim"))
        tasks = Table.grid(padding=(0, 1))
        for mark, text, style in self.lines(max(3, min(30, height - 4))):
            tasks.add_row(Text(mark, style=style), Text(text, style=style if style == "dim" else ""))
        return Group(head, bar, tasks)


def _event_line(event: dict[str, Any]) -> str:
    at = event.get("at")
    stamp = time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, int | float) else "--:--:--"
    text = f"{stamp} {event.get('key')} {event.get('status')}"
    if event.get("attempt"):
        text += f" (attempt {event['attempt']}"
        text += f" on {event['node_id']})" if event.get("node_id") else ")"
    return text


def watch_job(client: JobsClient, job_id: str, timeout: float | None, *, live: bool | None = None) -> dict[str, Any]:
    """Follow a job to its end, drawing the live view (a terminal) or printing one line per event."""
    view = WatchView(job_id)
    console = None
    if live is not False:
        try:
            from rich.console import Console

            console = Console(force_terminal=True if live else None)
        except ImportError:  # pragma: no cover - rich is a dependency; degrade anyway
            console = None
    if console is None or not console.is_terminal:
        last_status = None
        for page in client.watch(job_id, timeout=timeout):
            for event in view.update(page):
                click.echo(_event_line(event))
            status = view.job.get("status")
            if status != last_status and status not in TERMINAL_JOB_STATUSES:  # the end is printed by the caller
                last_status = status
                click.echo(f"job {job_id} {last_status}: {progress_line(view.job)}")
        return view.job

    from rich.live import Live

    with Live(console=console, refresh_per_second=4, transient=False,
              get_renderable=lambda: view.renderable(console.size.height)) as live_view:
        for page in client.watch(job_id, timeout=timeout):
            view.update(page)
            live_view.refresh()
    return view.job


# -- the command ---------------------------------------------------------------------------------


@click.command("run")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Override a declared param (repeat). Values are read as the param's type (16, 0.5, true, [1,2]).")
@click.option("--domain", default=None, envvar="POLYFABRIC_DOMAIN",
              help="The domain the job runs in (default: POLYFABRIC_DOMAIN, or the token's only domain).")
@click.option("--wait", is_flag=True, help="Wait for the end: exit 0 succeeded, 1 failed/cancelled, 124 timeout.")
@click.option("--watch", is_flag=True, help="Show progress live until the end (implies --wait).")
@timeout_option
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: the JobOut; with --wait/--watch {\"job\": final JobOut, \"result\": ...}.")
@client_options
@handle_errors
def run(file: str, params: tuple[str, ...], domain: str | None, wait: bool, watch: bool, timeout: str | None,
        as_json: bool, url: str | None, token: str | None) -> None:
    """Submit the workflow in FILE ('-' for stdin) and print the job id.

    An invalid workflow is refused as a whole: every problem is listed, exit 2, nothing is created.
    """
    doc = load_workflow_file(file)
    overrides = parse_params(params)
    limit = parse_timeout(timeout)
    waiting = wait or watch or limit is not None
    with open_jobs(url, token) as client:
        try:
            created = client.submit(doc, overrides, domain)
        except WorkflowRejected as exc:
            click.echo(f"Error: {exc.message}", err=True)
            sys.exit(EXIT_INVALID)
        except DomainNeeded as exc:
            click.echo(f"Error: {exc.message}: pass --domain (or set POLYFABRIC_DOMAIN)", err=True)
            sys.exit(EXIT_INVALID)
        job_id = created["id"]
        if not waiting:
            emit(created, as_json, lambda j: j["id"])
            return
        if not as_json:
            click.echo(job_id if not watch else f"submitted {created.get('name')} as job {job_id}")
        try:
            if watch and not as_json:
                final = watch_job(client, job_id, limit)
            else:
                final = client.wait(job_id, timeout=limit)
        except WaitTimeout as exc:
            emit({"job": exc.job, "result": None}, as_json,
                 lambda o: f"job {job_id} is still {o['job']['status']} after {timeout}: {progress_line(o['job'])}")
            sys.exit(EXIT_TIMEOUT)
        except KeyboardInterrupt:
            click.echo(f"\nstopped watching; job {job_id} goes on (polyfabric job show {job_id})", err=True)
            sys.exit(130)
        result = client.result(job_id)
    if as_json:
        emit({"job": final, "result": result}, True, str)
    else:
        click.echo(f"job {job_id} {final['status']}: {progress_line(final)}"
                   + (f"\nerror: {final['error']}" if final.get("error") else ""))
        click.echo(render_result(result, header=False))
    sys.exit(exit_code_for(final))
