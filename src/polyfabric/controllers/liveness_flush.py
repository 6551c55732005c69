"""Writes the heartbeat times and telemetry gathered in memory in one batched transaction."""

from __future__ import annotations

from polyfabric.services.nodes import NodeService

__all__ = ["LivenessFlusher"]


class LivenessFlusher:
    """One transaction a second (by default), and a last one at shutdown."""

    name = "liveness-flush"

    def __init__(self, nodes: NodeService, period: float = 1.0) -> None:
        self._nodes = nodes
        self.period = period

    def run_once(self) -> int:
        return self._nodes.flush_liveness()

    def final_pass(self) -> int:
        return self._nodes.flush_liveness()
