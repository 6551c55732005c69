"""The scheduler loop: whenever work or capacity changes (or every half second, for retries whose
backoff ends), run one scheduling pass of the job runtime.

The pass itself plans on an in-memory view (`scheduling.pipeline.schedule`, pure) and commits
every placement of the pass in one transaction; being the only writer of placements, it needs no
separate plan applier while one coordinator leads.
"""

from __future__ import annotations

from polyfabric.services.runtime import JobRuntime

__all__ = ["SchedulerController"]


class SchedulerController:
    name = "scheduler"
    period = 0.0

    def __init__(self, runtime: JobRuntime, idle: float = 0.5) -> None:
        self._runtime = runtime
        self._idle = idle
        # While this loop runs, a group commit also makes the placements its changes enabled (one
        # commit per report instead of two); this loop still runs every pass that is left.
        runtime.plan_on_commit = True

    def run_once(self) -> int:
        self._runtime.wake.wait(self._idle)
        return self._runtime.schedule_once()
