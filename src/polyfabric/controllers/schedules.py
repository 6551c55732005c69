"""Leader-only: fires the cron schedules' due times (services/schedules.py does the work).

Its first pass of each term as leader submits fires that a predecessor (or this coordinator
before a crash) recorded and may not have submitted; a failed submission is retried the same way.
"""

from __future__ import annotations

import logging

from polyfabric.services.schedules import ScheduleService

__all__ = ["ScheduleController"]

log = logging.getLogger("polyfabric.schedules")


class ScheduleController:
    name = "schedules"

    def __init__(self, service: ScheduleService, period: float = 1.0) -> None:
        self._service = service
        self.period = period
        self._recovered = False

    def run_once(self) -> int:
        if not self._recovered:
            recovered = self._service.recover()
            if recovered:
                log.info("completed %d schedule fire(s) recorded before a restart or leader change", recovered)
            self._recovered = True
        try:
            return self._service.tick()
        except Exception:
            self._recovered = False  # something recorded may not be submitted: look again next pass
            raise
