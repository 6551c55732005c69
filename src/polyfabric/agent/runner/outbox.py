"""What the agent still has to tell the coordinator: events and log chunks, in order, until acknowledged.

Reports are at-least-once (docs/protocol.md): an item stays here until an answer covers it. The
reporter takes a *prefix* of the queue as a batch and removes it only when the coordinator
answered; anything added meanwhile waits behind it. Taking prefixes keeps the order the runner
produced: an attempt's log chunks always travel before (or with) its final event, so a reader
that sees the attempt finished has seen all of its output.

Log chunks may be dropped when too much is pending (the coordinator is away and tasks keep
printing): events are never dropped.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Batch", "Outbox", "TERMINAL_EVENTS"]

log = logging.getLogger("polyfabric.agent.runner")

TERMINAL_EVENTS = frozenset({"finished", "cancelled", "rejected", "declined"})


@dataclass(slots=True)
class Batch:
    events: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0  # items of the queue this batch covers

    def __bool__(self) -> bool:
        return self.count > 0


class Outbox:
    def __init__(self, *, max_pending_log_bytes: int = 256 * 1024 * 1024) -> None:
        self._items: deque[tuple[bool, dict[str, Any]]] = deque()  # (is_event, item)
        self._cond = threading.Condition()
        self._log_bytes = 0
        self._max_log_bytes = max_pending_log_bytes
        self._dropping = False
        self._wakes = 0
        self._final = 0  # final events (finished, cancelled, rejected) pending
        self.dropped_log_bytes = 0

    def add_event(self, event: dict[str, Any]) -> None:
        with self._cond:
            self._items.append((True, event))
            if event.get("type") in TERMINAL_EVENTS:
                self._final += 1
            self._cond.notify_all()

    def add_log(self, chunk: dict[str, Any]) -> None:
        size = len(chunk["data"])
        with self._cond:
            if self._log_bytes + size > self._max_log_bytes:
                if not self._dropping:
                    log.warning("more than %d bytes of task output wait to be sent: dropping output",
                                self._max_log_bytes)
                self._dropping = True
                self.dropped_log_bytes += size
                return
            self._dropping = False
            self._log_bytes += size
            self._items.append((False, chunk))
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def wait(self, timeout: float | None) -> bool:
        """Wait until something is pending (True) or `timeout` passed or `wake` was called (False)."""
        with self._cond:
            wakes = self._wakes
            return self._cond.wait_for(lambda: bool(self._items) or self._wakes != wakes, timeout) \
                and bool(self._items)

    def wait_final(self, timeout: float) -> bool:
        """Wait up to `timeout` until a final event is pending (True at once if one is): what the
        coordinator waits for to go on (a freed slot, the next task of a chain) is not held back to
        gather a batch; `started` events and log chunks are."""
        with self._cond:
            wakes = self._wakes
            return self._cond.wait_for(lambda: self._final > 0 or self._wakes != wakes, timeout) \
                and self._final > 0

    def wait_empty(self, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._items, timeout)

    def wake(self) -> None:
        """Wake waiters without adding anything (to let them notice a stop)."""
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()

    def peek(self, max_items: int = 1000, max_log_bytes: int = 1024 * 1024) -> Batch:
        """The oldest items, in order: at most `max_items`, and log data up to about `max_log_bytes`."""
        batch = Batch()
        size = 0
        with self._cond:
            for is_event, item in self._items:
                if batch.count >= max_items:
                    break
                if is_event:
                    batch.events.append(item)
                else:
                    if batch.count and size + len(item["data"]) > max_log_bytes:
                        break
                    size += len(item["data"])
                    batch.logs.append(item)
                batch.count += 1
        return batch

    def ack(self, batch: Batch) -> None:
        """The coordinator answered for `batch`: forget its items (the oldest `batch.count`)."""
        with self._cond:
            for _ in range(min(batch.count, len(self._items))):
                is_event, item = self._items.popleft()
                if not is_event:
                    self._log_bytes -= len(item["data"])
                elif item.get("type") in TERMINAL_EVENTS:
                    self._final -= 1
            self._cond.notify_all()
