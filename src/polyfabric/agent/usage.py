"""What one attempt used, measured on the node: CPU-, memory- and GPU-seconds for the ledger.

- CPU seconds. Command tasks: the kernel's own account, from `wait4()` on the task's process
  (its user + system time plus that of every descendant it waited for); the group is also
  sampled from /proc, and the larger figure wins (descendants that were orphaned and never
  waited for show up only there). Function tasks: the worker process's CPU time (its own and its
  waited-for children's) after the call minus before it.
- Memory seconds: the resident set size of the task's process group (for function tasks, the
  warm worker's group, interpreter included), sampled from /proc at 0.05, 0.1, 0.2, 0.4 s and then
  every `interval_s`, integrated over the wall time: average RSS x wall time. An attempt too short
  for two samples is charged its peak RSS (`ru_maxrss` where known) x wall time, an upper bound.
- GPU seconds: GPUs allocated x wall time (the allocation is what the node gave up; NVML's
  per-process figures are not used).

Everything here is best effort and never fails an attempt: without /proc (not Linux) only wall
and GPU seconds are measured, and `method` says what was measured.
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["UsageMeter", "read_proc"]

log = logging.getLogger("polyfabric.agent.usage")

try:
    _TICK = float(os.sysconf("SC_CLK_TCK"))
    _PAGE = int(os.sysconf("SC_PAGE_SIZE"))
except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
    _TICK, _PAGE = 100.0, 4096
_FIRST_SAMPLES = (0.05, 0.1, 0.2, 0.4)  # seconds after the start: short attempts get a few samples too


def read_proc(pid: int) -> tuple[float, float, int] | None:
    """(own CPU seconds, CPU seconds of waited-for children, RSS bytes) of a process, from
    /proc/PID/stat; None when it is gone (or there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # from field 3 (state) on
    try:
        own = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        children = (int(fields[13]) + int(fields[14])) / _TICK  # cutime, cstime
        rss = int(fields[21]) * _PAGE
    except (IndexError, ValueError):
        return None
    return own, children, rss


class UsageMeter:
    """Measures one attempt from `start` (creation) to `finish()`; thread-safe."""

    def __init__(self, *, gpus: int = 0, interval_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gpus = max(0, int(gpus))
        self.interval_s = interval_s
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pgid: int | None = None
        self._own: dict[int, float] = {}  # pid -> the largest own CPU seen (sampled members of the group)
        self._rss_area = 0.0  # byte-seconds integrated so far
        self._last_rss = 0
        self._last_at: float | None = None
        self._samples = 0
        self._max_rss = 0
        self._exact_cpu: float | None = None
        self._worker_base: tuple[int, float] | None = None  # (pid, CPU before the call)
        self._result: dict[str, Any] | None = None
        self.method = "wall"

    # -- command tasks -----------------------------------------------------------------------

    def watch_group(self, pgid: int) -> None:
        """Start sampling process group `pgid` (a command task's, or a warm worker's)."""
        with self._lock:
            if self._thread is not None or self._result is not None:
                return
            self._pgid = pgid
            self._thread = threading.Thread(target=self._sample_loop, name=f"pf-usage-{pgid}", daemon=True)
        self._sample()
        self._thread.start()

    def reap(self, proc: subprocess.Popen[Any]) -> None:
        """Wait for `proc` to exit with wait4(), keeping the kernel's account of what it used.
        Sets `proc.returncode` as Popen.wait() would."""
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        except ChildProcessError:  # somebody else reaped it: Popen knows its code
            proc.wait()
            return
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.reaped(usage)

    def reaped(self, usage: resource.struct_rusage) -> None:
        with self._lock:
            self._exact_cpu = float(usage.ru_utime + usage.ru_stime)
            self._max_rss = max(self._max_rss, int(usage.ru_maxrss) * 1024)  # Linux: kilobytes
            self.method = "wait4"

    # -- function tasks ----------------------------------------------------------------------

    def begin_worker(self, pid: int) -> None:
        """A call starts on warm worker `pid`: remember its CPU time so far, sample its group."""
        now = read_proc(pid)
        if now is not None:
            with self._lock:
                self._worker_base = (pid, now[0] + now[1])
        self.watch_group(pid)

    def end_worker(self, pid: int) -> None:
        """The call ended (the worker still alive): its CPU time since `begin_worker`."""
        now = read_proc(pid)
        with self._lock:
            base = self._worker_base
            if now is not None and base is not None and base[0] == pid:
                self._exact_cpu = max(0.0, now[0] + now[1] - base[1])
                self.method = "worker-cpu-delta"

    # -- sampling ----------------------------------------------------------------------------

    def _sample_loop(self) -> None:
        started = self._clock()
        for offset in _FIRST_SAMPLES:
            if self._stop.wait(max(0.0, started + offset - self._clock())):
                return
            self._sample()
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        pgid = self._pgid
        if pgid is None:
            return
        from polyfabric.agent.runner.groups import group_members  # here: the runner package imports this module

        rss = 0
        seen: dict[int, float] = {}
        for pid in group_members(pgid):
            figures = read_proc(pid)
            if figures is not None:
                seen[pid] = figures[0]
                rss += figures[2]
        at = self._clock()
        with self._lock:
            if self._result is not None:
                return
            for pid, cpu in seen.items():
                if cpu > self._own.get(pid, -1.0):
                    self._own[pid] = cpu
            if self._last_at is not None:
                self._rss_area += self._last_rss * (at - self._last_at)
            self._last_at, self._last_rss = at, rss
            self._max_rss = max(self._max_rss, rss)
            self._samples += 1

    # -- the figures -------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Stop measuring; the attempt's usage (the same dict on every later call)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        end = self._clock()
        with self._lock:
            if self._result is not None:
                return self._result
            wall = max(0.0, end - self._started)
            sampled = sum(self._own.values())
            if self._worker_base is not None:
                sampled = 0.0  # a warm worker's own total spans every call it served
            cpu = max(self._exact_cpu or 0.0, sampled)
            method = self.method
            if self._pgid is not None:
                method = f"{method}+proc" if method != "wall" else "proc"
            if self._samples >= 2 and self._last_at is not None:
                area = self._rss_area + self._last_rss * max(0.0, end - self._last_at)
            else:
                area = self._max_rss * wall
            self._result = {
                "wall_s": round(wall, 6),
                "cpu_s": round(cpu, 6),
                "memory_byte_s": round(area, 3),
                "max_rss_bytes": int(self._max_rss),
                "gpu_s": round(self.gpus * wall, 6),
                "method": method,
            }
            return self._result

