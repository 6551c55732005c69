"""Function tasks, run in warm worker processes: no interpreter start per task.

A `WorkerPool` keeps up to `size` (the node's slots) long-lived Python processes, started on
first need and reused; each serves one call at a time (see polyfabric/agent/worker.py for the
worker's side). A call asks an idle worker to import `module:attr` (imports are cached in the
worker) and call it with `**args`; the answer is the JSON result or the exception's message,
the traceback arriving as stderr output. Output the function prints (to Python's streams or
straight to fd 1/2, children included) is attributed to the call that is running and sent as
log chunks while it runs.

A call over its timeout, or interrupted (cancel, shutdown), kills its worker's whole process
group (SIGTERM, SIGKILL after the grace period); a worker that dies (os._exit, a crash) fails
its call. Either way a fresh worker is started in the background to take its place.

Where functions are imported from, first match wins:
  1. the lease's `workdir`, for that call only (an absolute directory on the node, or one
     created in the workspace; it is also the call's working directory), then
  2. the agent's `--pythonpath DIR` directories, in the order given, then the agent's own
     PYTHONPATH (both through the worker's PYTHONPATH, so they also reach processes the
     function starts), then
  3. whatever the agent's interpreter (sys.executable) has installed.
A workflow that ships its own module therefore either installs it on the node, or asks the
node owner to put its directory on `--pythonpath`, or names an absolute `workdir` holding it.
Modules are cached per worker by name: a changed module is picked up by new workers only
(restart the agent), and two workdirs offering the same module name share the first import.

Per call the worker sets the task's `env` (plus POLYFABRIC_TASK_ID, _JOB_ID, _ATTEMPT,
_WORKSPACE and TMPDIR) in os.environ, changes into the working directory and restores all of it
afterwards. Workers start from the same minimal environment as command tasks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from polyfabric.agent.runner.groups import terminate_group
from polyfabric.agent.runner.interrupt import Interrupt
from polyfabric.agent.runner.lease import Lease, Outcome, format_seconds
from polyfabric.agent.runner.process import MAX_RESULT_BYTES, attempt_env, base_env, resolve_cwd
from polyfabric.agent.runner.streams import LogWriter, Pump
from polyfabric.agent.runner.workspace import Workspace

__all__ = ["Worker", "WorkerDied", "WorkerPool", "WORKER_SCRIPT"]

log = logging.getLogger("polyfabric.agent.runner")

WORKER_SCRIPT = str(Path(__file__).resolve().parent.parent / "worker.py")
_TIMEOUT = object()
_WOKEN = object()


class WorkerDied(Exception):
    pass


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Worker:
    """One warm Python process, driven over two pipes."""

    def __init__(self, *, env: dict[str, str], cwd: Path, kill_grace_s: float = 5.0, start_timeout_s: float = 30.0,
                 max_result: int = MAX_RESULT_BYTES, flush_interval_s: float = 0.1) -> None:
        self.kill_grace_s = kill_grace_s
        self.max_reply = max_result + 4096
        self.dead = False
        self.calls = 0
        self._rbuf = bytearray()
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self._wake_r, self._wake_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-P", WORKER_SCRIPT, str(req_r), str(rep_w), str(max_result)],
                pass_fds=(req_r, rep_w), stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, cwd=cwd, env=env,
                start_new_session=True)
        except OSError:
            for fd in (self._req_w, self._rep_r, out_r, err_r, self._wake_r, self._wake_w):
                os.close(fd)
            raise
        finally:
            for fd in (req_r, rep_w, out_w, err_w):
                os.close(fd)
        self.pid = self._proc.pid
        for fd in (self._rep_r, self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._poller = select.poll()
        self._poller.register(self._rep_r, select.POLLIN | select.POLLHUP | select.POLLERR)
        self._poller.register(self._wake_r, select.POLLIN)
        startup_errors = LogWriter(lambda *_: None, "stderr")  # kept only to explain a failed start
        self._out = Pump(out_r, f"worker{self.pid}-out", flush_interval_s=flush_interval_s).start()
        self._err = Pump(err_r, f"worker{self.pid}-err", startup_errors, flush_interval_s=flush_interval_s).start()
        try:
            line = self._read_line(time.monotonic() + start_timeout_s, None)
            if line is _TIMEOUT:
                raise WorkerDied(f"it did not start within {format_seconds(start_timeout_s)}")
            ready = orjson.loads(line)  # type: ignore[arg-type]
            if ready.get("ready") != self.pid:
                raise WorkerDied(f"it said {ready!r} instead of ready")
        except (WorkerDied, orjson.JSONDecodeError) as exc:
            self.kill()
            self._err.finish(eof_timeout_s=0.5)
            last = startup_errors.last_line()
            raise WorkerDied(f"the Python worker did not start ({exc}; {_describe_exit(self._proc.returncode)})"
                             + (f": {last}" if last else "")) from None
        self._err.retarget(None)

    # -- one call --------------------------------------------------------------------------

    def call(self, request: dict[str, Any], *, timeout_s: float | None, interrupt: Interrupt,
             stdout: LogWriter, stderr: LogWriter) -> Outcome:
        if interrupt.fired:  # stopped before it began: the worker stays warm
            return Outcome("stopped", error=interrupt.reason)
        self.calls += 1
        self._drain_wake()
        self._out.retarget(stdout)
        self._err.retarget(stderr)
        interrupt.subscribe(self._poke)
        try:
            try:
                _write_all(self._req_w, orjson.dumps(request) + b"\n")
                deadline = None if timeout_s is None else time.monotonic() + timeout_s
                line = self._read_line(deadline, interrupt)
            except (WorkerDied, BrokenPipeError):
                self.kill()
                how = _describe_exit(self._proc.returncode)
                return Outcome.failed(f"the worker process running the function died ({how})")
            if line is _TIMEOUT:
                self.kill()
                return Outcome.failed(f"timed out after {format_seconds(timeout_s or 0.0)}")
            if line is _WOKEN:
                self.kill()
                return Outcome("stopped", error=interrupt.reason)
            try:
                reply = orjson.loads(line)  # type: ignore[arg-type]
            except orjson.JSONDecodeError as exc:
                self.kill()
                return Outcome.failed(f"the worker answered something unreadable: {exc}")
            if reply.get("ok"):
                return Outcome("succeeded", result=reply.get("result"))
            return Outcome.failed(str(reply.get("error") or "the function failed"))
        finally:
            interrupt.unsubscribe(self._poke)
            if self.dead:
                self._out.finish(eof_timeout_s=0.5)
                self._err.finish(eof_timeout_s=0.1)
            else:
                self._out.retarget(None)
                self._err.retarget(None)

    def _poke(self) -> None:
        fd = self._wake_w
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.write(fd, b"x")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass

    def _read_line(self, deadline: float | None, interrupt: Interrupt | None) -> object:
        """The next reply line (bytes), or _TIMEOUT / _WOKEN; WorkerDied at end of file."""
        while True:
            end = self._rbuf.find(b"\n")
            if end >= 0:
                line = bytes(self._rbuf[:end])
                del self._rbuf[: end + 1]
                return line
            if interrupt is not None and interrupt.fired:
                return _WOKEN
            if deadline is None:
                wait_ms = None
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return _TIMEOUT
                wait_ms = int(remaining * 1000) + 1
            for fd, _events in self._poller.poll(wait_ms):
                if fd == self._wake_r:
                    self._drain_wake()
                    continue
                while True:
                    try:
                        data = os.read(self._rep_r, 1 << 20)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        raise WorkerDied(str(exc)) from None
                    if not data:
                        raise WorkerDied("end of its output")
                    self._rbuf += data
                    if len(self._rbuf) > self.max_reply:
                        raise WorkerDied("its answer is too large")

    # -- ending ----------------------------------------------------------------------------

    def kill(self) -> None:
        """Kill the worker's whole process group (SIGTERM, then SIGKILL after the grace) and reap it."""
        if self.dead:
            return
        self.dead = True
        terminate_group(self.pid, self.kill_grace_s)
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()  # in case it left its own group
        self._proc.wait()
        self._close_fds()

    def close(self, timeout_s: float = 1.0) -> None:
        """Let the worker exit by itself (end of input), killing it if it does not."""
        if self.dead:
            return
        fd, self._req_w = self._req_w, -1
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout_s)
        self.kill()
        self._out.finish(eof_timeout_s=0.1)
        self._err.finish(eof_timeout_s=0.1)

    def _close_fds(self) -> None:
        # Forget the numbers first: a late _poke must not write into a reused descriptor.
        fds = (self._req_w, self._rep_r, self._wake_r, self._wake_w)
        self._req_w = self._rep_r = self._wake_r = self._wake_w = -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class WorkerPool:
    """Up to `size` warm workers; `call` runs one function call on one of them."""

    def __init__(self, size: int, *, cwd: Path, pythonpath: Sequence[Path | str] = (), kill_grace_s: float = 5.0,
                 start_timeout_s: float = 30.0, env_base: dict[str, str] | None = None,
                 flush_interval_s: float = 0.1) -> None:
        self.size = max(1, size)
        self.cwd = Path(cwd)
        self.kill_grace_s = kill_grace_s
        self.start_timeout_s = start_timeout_s
        self.flush_interval_s = flush_interval_s
        env = dict(env_base if env_base is not None else base_env())
        paths = [str(Path(p).resolve()) for p in pythonpath]
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths)
        self.env = env
        self._idle: list[Worker] = []
        self._live = 0  # workers running or being started
        self._cond = threading.Condition()
        self._closed = False

    def pids(self) -> list[int]:
        with self._cond:
            return [w.pid for w in self._idle]

    def _spawn(self) -> Worker:
        return Worker(env=self.env, cwd=self.cwd, kill_grace_s=self.kill_grace_s,
                      start_timeout_s=self.start_timeout_s, flush_interval_s=self.flush_interval_s)

    def _acquire(self, interrupt: Interrupt) -> Worker | None:
        with self._cond:
            while True:
                if self._closed or interrupt.fired:
                    return None
                if self._idle:
                    return self._idle.pop()
                if self._live < self.size:
                    self._live += 1
                    break
                self._cond.wait(0.1)
        try:
            return self._spawn()
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify_all()
            raise

    def _release(self, worker: Worker) -> None:
        with self._cond:
            if not worker.dead and not self._closed:
                self._idle.append(worker)
                self._cond.notify_all()
                return
            self._live -= 1
            self._cond.notify_all()
            replace = not self._closed
        if not worker.dead:
            worker.close()
        if replace:
            thread = threading.Thread(target=self._replace, name="pf-worker-start", daemon=True)
            thread.start()

    def _replace(self) -> None:
        with self._cond:
            if self._closed or self._live >= self.size:
                return
            self._live += 1
        try:
            worker = self._spawn()
        except Exception as exc:
            log.warning("cannot start a replacement Python worker: %s", exc)
            with self._cond:
                self._live -= 1
                self._cond.notify_all()
            return
        self._release(worker)

    def prestart(self, count: int = 1) -> None:
        """Start up to `count` workers now (in the background), so the first calls find them warm."""
        for _ in range(min(count, self.size)):
            threading.Thread(target=self._replace, name="pf-worker-start", daemon=True).start()

    def call(self, lease: Lease, workspace: Workspace, *, stdout: LogWriter, stderr: LogWriter,
             interrupt: Interrupt, meter: Any = None) -> Outcome:
        """Run the lease's function on a warm worker and say how it ended (`meter`, an
        agent.usage.UsageMeter, measures the worker during the call)."""
        assert lease.function is not None
        cwd = resolve_cwd(lease, workspace)
        request = {
            "function": lease.function,
            "args": lease.args,
            "env": attempt_env(lease, workspace, {}, result_file=False),
            "cwd": str(cwd),
            "tmpdir": str(workspace.tmp),
            "workdir": str(cwd) if lease.workdir is not None else None,
        }
        try:
            worker = self._acquire(interrupt)
        except WorkerDied as exc:
            return Outcome.failed(str(exc))
        except OSError as exc:
            return Outcome.failed(f"cannot start a Python worker: {exc.strerror or exc}")
        if worker is None:
            return Outcome("stopped", error=interrupt.reason or "the agent is shutting down")
        if meter is not None:
            meter.begin_worker(worker.pid)
        try:
            return worker.call(request, timeout_s=lease.timeout_s, interrupt=interrupt, stdout=stdout,
                               stderr=stderr)
        finally:
            if meter is not None and not worker.dead:
                meter.end_worker(worker.pid)
            self._release(worker)

    def close(self) -> None:
        """Stop every idle worker (busy ones are stopped by their calls' interrupts)."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            worker.close()
