"""The autoscaler: sizes every node pool once a second (leader only; services/pools.py)."""

from __future__ import annotations

from polyfabric.services.pools import PoolService

__all__ = ["AutoscalerController"]


class AutoscalerController:
    name = "autoscaler"

    def __init__(self, pools: PoolService, period: float = 1.0) -> None:
        self._pools = pools
        self.period = period

    def run_once(self) -> int:
        return len(self._pools.autoscale_once())
