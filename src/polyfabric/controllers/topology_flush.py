"""Writes the network coordinates gathered in memory in one batched transaction (services/topology.py)."""

from __future__ import annotations

from polyfabric.services.topology import TopologyService

__all__ = ["TopologyFlusher"]


class TopologyFlusher:
    """One transaction a second at most (by default), and a last one at shutdown."""

    name = "topology-flush"

    def __init__(self, topology: TopologyService, period: float = 1.0) -> None:
        self._topology = topology
        self.period = period

    def run_once(self) -> int:
        return self._topology.flush()

    def final_pass(self) -> int:
        return self._topology.flush()
