"""Why a running attempt must stop before it ends by itself, and who to wake when it must.

An attempt stops early for one of three reasons: the coordinator cancelled it ("cancel"), the
agent is shutting down ("shutdown"), or the coordinator refused its reports because it is no
longer the task's current attempt ("abandon"). Only the first reason counts; executors
subscribe a wake-up callback while they wait on a process, so a stop is acted on at once
instead of at the next poll.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

__all__ = ["Interrupt", "StopKind"]

StopKind = Literal["cancel", "shutdown", "abandon"]


class Interrupt:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.kind: StopKind | None = None
        self.reason = ""
        self._callbacks: list[Callable[[], None]] = []

    @property
    def fired(self) -> bool:
        return self.kind is not None

    def fire(self, kind: StopKind, reason: str) -> bool:
        """Ask the attempt to stop; False if it was asked already (the first reason stays)."""
        with self._lock:
            if self.kind is not None:
                return False
            self.kind, self.reason = kind, reason
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()
        return True

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the interrupt fires (at once if it already has)."""
        with self._lock:
            self._callbacks.append(callback)
            fired = self.kind is not None
        if fired:
            callback()

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
