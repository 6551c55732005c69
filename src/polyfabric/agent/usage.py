"""What one attempt used, measured on the node: CPU-, memory- and GPU-seconds for the ledger.

- CPU seconds. Command tasks: the kernel's own account, from `wait4()` on the task's process
  (its user + system time plus that of every descendant it waited for); its process tree is
  also sampled from /proc, and the larger figure wins (descendants it never waited for show up
  only there, as far as they were seen). Function tasks: the worker process's CPU time (its own and its
  waited-for children's) after the call minus before it.
- Memory seconds: the resident set size of the task's process tree (for function tasks, the
  warm worker's, interpreter included), sampled from /proc at 0.05, 0.1, 0.2, 0.4 s and then
  every `interval_s`, integrated over the wall time: average RSS x wall time. An attempt too short
  for two samples is charged its peak RSS (`ru_maxrss` where known) x wall time, an upper bound.
- GPU seconds: GPUs allocated x wall time (the allocation is what the node gave up; NVML's
  per-process figures are not used).

Everything here is best effort and never fails an attempt: without /proc (not Linux) only wall
and GPU seconds are measured, and `method` says what was measured.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import resource
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["UsageMeter", "process_tree", "read_proc"]

log = logging.getLogger("polyfabric.agent.usage")

try:
    _TICK = float(os.sysconf("SC_CLK_TCK"))
    _PAGE = int(os.sysconf("SC_PAGE_SIZE"))
except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
    _TICK, _PAGE = 100.0, 4096
_FIRST_SAMPLES = (0.05, 0.1, 0.2, 0.4)  # seconds after the start: short attempts get a few samples too


def process_tree(root: int) -> list[int]:
    """`root` and its descendants, walked through /proc/PID/task/TID/children (a few small files
    per process: scanning all of /proc costs tens of milliseconds on a busy node). Where the
    kernel has no `children` files, the members of process group `root`, from a /proc scan."""
    if not os.path.exists(f"/proc/{root}/task/{root}/children") and os.path.exists(f"/proc/{root}"):
        from polyfabric.agent.runner.groups import group_members  # here: the runner package imports us

        return group_members(root)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        tree.append(pid)
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                    todo.extend(int(child) for child in handle.read().split())
            except (OSError, ValueError):
                continue
    return tree


class _Sampler:
    """One thread samples every attempt being measured, each on its own schedule (no thread per
    attempt: starting one costs more than a trivial function task)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, UsageMeter]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, meter: UsageMeter, at: float) -> None:
        with self._cond:
            heapq.heappush(self._heap, (at, next(self._seq), meter))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pf-usage-sampler", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _seq, meter = self._heap[0]
                delay = at - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
            try:
                meter._sample()
                after = meter._next_sample(time.monotonic())
            except Exception:  # never let one attempt's figures stop the others'
                log.exception("sampling an attempt's usage failed")
                continue
            if after is not None:
                self.add(meter, after)


_SAMPLER = _Sampler()


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
        self._watching = False
        self._due = 0  # how many of the timed samples are done (see _next_sample)
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
            if self._watching or self._result is not None:
                return
            self._watching = True
            self._pgid = pgid
        self._sample(leader_only=True)  # cheap: one file; the tree is walked from the first timed sample on
        _SAMPLER.add(self, time.monotonic() + _FIRST_SAMPLES[0])

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

    def _next_sample(self, now: float) -> float | None:
        """When the shared sampler should sample this attempt next (None: finished)."""
        with self._lock:
            if self._result is not None:
                return None
            self._due += 1
            if self._due < len(_FIRST_SAMPLES):
                return now + _FIRST_SAMPLES[self._due] - _FIRST_SAMPLES[self._due - 1]
            return now + self.interval_s

    def _sample(self, *, leader_only: bool = False) -> None:
        pgid = self._pgid
        if pgid is None:
            return
        rss = 0
        seen: dict[int, float] = {}
        for pid in [pgid] if leader_only else process_tree(pgid):
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

