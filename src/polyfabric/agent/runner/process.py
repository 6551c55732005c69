"""Command tasks: one subprocess per attempt, in its own process group, without a shell.

The environment is deliberately small: PATH, HOME and LANG of the agent, TMPDIR inside the
workspace, then the task's `env`, then the POLYFABRIC_* variables (which the task cannot
override): POLYFABRIC_RESULT (write the result JSON there), POLYFABRIC_TASK_ID, _JOB_ID, _ATTEMPT
and _WORKSPACE. Nothing else of the agent's environment (its join token, say) leaks into tasks.
The working directory is the workspace; a lease's `workdir` replaces it: an absolute path must
exist on the node, a relative one is created inside the workspace.

Outcomes: exit 0 -> succeeded with the result file's JSON (absent or empty -> null; invalid or
over MAX_RESULT_BYTES -> failed naming the problem); exit N -> failed "exit code N: <last stderr
line>"; killed by signal N -> failed "killed by signal SIGNAME", exit code -N (Python's
convention); over its timeout -> the whole group gets SIGTERM, SIGKILL after the grace period,
failed "timed out after 30s"; interrupted (cancel, shutdown) -> the same kill, status "stopped".
When the command exits but something it started keeps running, that leftover is killed when the
workspace is removed (after the final report is acknowledged); its output after the command's
exit is not collected.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from polyfabric.agent.runner.groups import terminate_group
from polyfabric.agent.runner.interrupt import Interrupt
from polyfabric.agent.runner.lease import Lease, Outcome, format_seconds
from polyfabric.agent.runner.streams import LogWriter, Pump
from polyfabric.agent.runner.workspace import Workspace

__all__ = ["MAX_RESULT_BYTES", "SetupError", "attempt_env", "base_env", "read_result", "resolve_cwd",
           "run_command"]

log = logging.getLogger("polyfabric.agent.runner")

MAX_RESULT_BYTES = 16 * 1024 * 1024
_EOF_WAIT_S = 0.5  # after the command exits, how long its output pipes may stay open (held by leftovers)


class SetupError(Exception):
    """The attempt cannot be started (bad workdir, missing executable): it fails with this message."""


def base_env() -> dict[str, str]:
    """The minimal environment every task starts from."""
    return {
        "PATH": os.environ.get("PATH") or os.defpath,
        "HOME": os.environ.get("HOME") or str(Path.home()),
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }


def attempt_env(lease: Lease, workspace: Workspace, base: dict[str, str] | None = None, *,
                result_file: bool = True) -> dict[str, str]:
    env = dict(base if base is not None else base_env())
    env["TMPDIR"] = str(workspace.tmp)
    env.update(lease.env)
    env.update({
        "POLYFABRIC_TASK_ID": lease.task_id,
        "POLYFABRIC_JOB_ID": lease.job_id,
        "POLYFABRIC_ATTEMPT": str(lease.attempt),
        "POLYFABRIC_WORKSPACE": str(workspace.path),
    })
    if result_file:
        env["POLYFABRIC_RESULT"] = str(workspace.result_file)
    return env


def resolve_cwd(lease: Lease, workspace: Workspace) -> Path:
    if lease.workdir is None:
        return workspace.path
    path = Path(lease.workdir)
    if not path.is_absolute():
        path = workspace.path / path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SetupError(f"cannot create workdir {lease.workdir}: {exc.strerror or exc}") from None
    elif not path.is_dir():
        raise SetupError(f"workdir {lease.workdir} does not exist on this node")
    return path


def read_result(path: Path) -> tuple[Any, str | None]:
    """(result, None) or (None, why it is unusable)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read the result file: {exc.strerror or exc}"
    if size > MAX_RESULT_BYTES:
        return None, f"the result file is too large ({size} bytes; at most {MAX_RESULT_BYTES})"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read the result file: {exc.strerror or exc}"
    if not data.strip():
        return None, None
    try:
        return orjson.loads(data), None
    except orjson.JSONDecodeError as exc:
        return None, f"the result file is not valid JSON: {exc}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_command(lease: Lease, workspace: Workspace, *, stdout: LogWriter, stderr: LogWriter, interrupt: Interrupt,
                kill_grace_s: float = 5.0, env_base: dict[str, str] | None = None,
                on_spawn: Callable[[int], None] | None = None, flush_interval_s: float = 0.1,
                meter: Any = None) -> Outcome:
    """Run the lease's command to its end (or its timeout, or an interrupt) and say how it ended.
    `meter` (agent.usage.UsageMeter) reaps the process with wait4() to keep what it used."""
    assert lease.command is not None
    cwd = resolve_cwd(lease, workspace)
    env = attempt_env(lease, workspace, env_base)
    if interrupt.fired:
        return Outcome("stopped", error=interrupt.reason)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        proc = subprocess.Popen(list(lease.command), stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w,
                                cwd=cwd, env=env, start_new_session=True, close_fds=True)
    except OSError as exc:
        for fd in (out_r, err_r):
            os.close(fd)
        raise SetupError(f"cannot start {lease.command[0]!r}: {exc.strerror or exc}") from None
    finally:
        os.close(out_w)
        os.close(err_w)
    started = time.monotonic()
    pgid = proc.pid
    if on_spawn is not None:
        on_spawn(pgid)
    pumps = [Pump(out_r, f"{lease.task_id}-out", stdout, flush_interval_s=flush_interval_s).start(),
             Pump(err_r, f"{lease.task_id}-err", stderr, flush_interval_s=flush_interval_s).start()]

    wake = threading.Event()
    exited = threading.Event()

    def wait_for_exit() -> None:
        if meter is not None:
            meter.reap(proc)
        else:
            proc.wait()
        exited.set()
        wake.set()

    threading.Thread(target=wait_for_exit, name=f"pf-wait-{proc.pid}", daemon=True).start()
    interrupt.subscribe(wake.set)
    timed_out = False
    try:
        deadline = started + lease.timeout_s if lease.timeout_s is not None else None
        while not exited.is_set() and not interrupt.fired:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                timed_out = True
                break
            wake.wait(remaining)
            wake.clear()
        if not exited.is_set():
            terminate_group(pgid, kill_grace_s)
            exited.wait()
    finally:
        interrupt.unsubscribe(wake.set)
        eof_deadline = time.monotonic() + _EOF_WAIT_S
        for pump in pumps:
            pump.finish(eof_timeout_s=max(0.0, eof_deadline - time.monotonic()))

    code = proc.returncode
    if timed_out:
        return Outcome.failed(f"timed out after {format_seconds(lease.timeout_s or 0.0)}")
    if interrupt.fired and code != 0:
        return Outcome("stopped", error=interrupt.reason)
    if code == 0:
        result, problem = read_result(workspace.result_file)
        if problem:
            return Outcome.failed(problem, exit_code=0)
        return Outcome("succeeded", result=result, exit_code=0)
    last = stderr.last_line()
    if code < 0:
        error = f"killed by signal {_signal_name(-code)}"
    else:
        error = f"exit code {code}"
    return Outcome.failed(f"{error}: {last}" if last else error, exit_code=code)
