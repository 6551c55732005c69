"""Leader-only: collects expired jobs every period (services/gc.py decides what has expired)."""

from __future__ import annotations

import logging

from polyfabric.services.gc import GcService

__all__ = ["GcController"]

log = logging.getLogger("polyfabric.gc")


class GcController:
    name = "gc"

    def __init__(self, service: GcService, period: float = 300.0) -> None:
        self._service = service
        self.period = period

    def run_once(self) -> int:
        done = self._service.run()
        if done["jobs"]:
            log.info("collected %d expired job(s)", len(done["jobs"]))
        return len(done["jobs"])
