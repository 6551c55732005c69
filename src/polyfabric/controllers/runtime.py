"""The loop every controller runs in: call `run_once()` every period, log and back off on errors.

Loops run in worker threads (the store is synchronous); the asyncio side only starts and stops
them. A failing pass is retried with exponential backoff up to the period times eight.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

__all__ = ["Controller", "LoopRunner"]

log = logging.getLogger("polyfabric.controllers")


class Controller(Protocol):
    name: str
    period: float

    def run_once(self) -> object: ...


class LoopRunner:
    """Runs controllers, each in its own daemon thread, until `stop()`."""

    def __init__(self, controllers: list[Controller]) -> None:
        self._controllers = controllers
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for controller in self._controllers:
            thread = threading.Thread(target=self._loop, args=(controller, self._stop),
                                      name=f"pf-{controller.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self, controller: Controller, stop: threading.Event) -> None:
        delay = controller.period
        while not stop.wait(delay):
            try:
                controller.run_once()
                delay = controller.period
            except Exception:
                log.exception("controller %s failed; retrying", controller.name)
                delay = min(delay * 2, controller.period * 8)

    def stop(self, timeout: float = 5.0, *, final: bool = True) -> None:
        """Stop every loop (waiting up to `timeout` for each), then make each controller's final
        pass unless `final` is False (a coordinator that lost the leadership writes nothing more)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        if not final:
            return
        # A last pass of each, so that what was in memory reaches the store on a clean shutdown.
        for controller in self._controllers:
            last = getattr(controller, "final_pass", None)
            if last is not None:
                try:
                    last()
                except Exception:
                    log.exception("final pass of %s failed", controller.name)
