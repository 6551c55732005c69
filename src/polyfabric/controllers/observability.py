"""The leader's observability loop: telemetry history passes and fair share's balance refresh."""

from __future__ import annotations

import time

from polyfabric.services.ledger import LedgerService
from polyfabric.services.runtime import JobRuntime
from polyfabric.services.telemetry_history import TelemetryHistory

__all__ = ["ObservabilityController"]

_BALANCE_REFRESH_S = 10.0


class ObservabilityController:
    """Every `history.interval_s`: one telemetry history pass (one transaction for every node);
    with fair share on, the domains' ledger balances are re-read every 10 s (outside the
    scheduler's lock: the scheduler only reads the cached figures)."""

    name = "observability"

    def __init__(self, history: TelemetryHistory, ledger: LedgerService, runtime: JobRuntime) -> None:
        self._history = history
        self._ledger = ledger
        self._runtime = runtime
        self.period = history.interval_s
        self._refreshed = -1e18

    def run_once(self) -> int:
        if self._runtime.fair_share.enabled and time.monotonic() - self._refreshed >= _BALANCE_REFRESH_S:
            self._ledger.refresh_balances()
            self._refreshed = time.monotonic()
        return self._history.record()
