"""Calls due later, all on one thread.

The runtime wakes a running job's watchers at most every so often, and the wakes it holds back
are due a moment later. A `threading.Timer` per job started a thread per job: thousands of
threads for thousands of running jobs, each start a few dozen microseconds of the committer's
time. One thread and a heap cost neither.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["DeferredCalls"]

log = logging.getLogger(__name__)


class DeferredCalls:
    """`call_at(due, fn, *args)` runs `fn(*args)` once `time.monotonic()` reaches `due`, in due
    order, on one daemon thread: started by a call, ended when none is left. A call that raises
    is logged and the others still run."""

    def __init__(self, name: str = "polyfabric-deferred") -> None:
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Callable[..., None], tuple[object, ...]]] = []
        self._seq = itertools.count()  # ties in due time run in the order they were asked
        self._thread: threading.Thread | None = None

    def call_at(self, due: float, fn: Callable[..., None], *args: object) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), fn, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0][0] == due:  # sooner than what the thread waits for
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._heap:  # nothing left: the thread ends (the next call starts one),
                        self._thread = None  # so an idle owner leaves no thread behind
                        return
                    now = time.monotonic()
                    if self._heap[0][0] <= now:
                        _due, _seq, fn, args = heapq.heappop(self._heap)
                        break
                    self._cond.wait(self._heap[0][0] - now)
            try:
                fn(*args)
            except Exception:
                log.exception("a deferred call failed")
            del fn, args  # not kept alive (nor what they hold) while the thread waits for the next
