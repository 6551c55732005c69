"""Node: what a node declared (spec) and what the coordinator observes of it (status)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from polyfabric.domain.node_states import NodeState
from polyfabric.domain.resources import Resources

__all__ = ["TOPOLOGY_KEYS", "Node", "topology_of"]

TOPOLOGY_KEYS = ("region", "zone", "rack")


def topology_of(labels: dict[str, str]) -> dict[str, str]:
    """The topology a node declares through its `region`, `zone` and `rack` labels."""
    return {key: labels[key] for key in TOPOLOGY_KEYS if key in labels}


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    name: str
    domain: str
    public_key: bytes
    labels: dict[str, str]
    capacity: Resources
    state: NodeState
    state_since: float
    registered_at: float
    resume_state: NodeState | None = None
    revoked: bool = False
    last_heartbeat_at: float | None = None
    telemetry: dict[str, Any] = field(default_factory=dict)
    health: list[dict[str, Any]] = field(default_factory=list)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    agent_version: str = ""
    version: int = 1
    drain_deadline: float | None = None
    quarantine: dict[str, Any] | None = None

    @property
    def topology(self) -> dict[str, str]:
        return topology_of(self.labels)

    def with_changes(self, **changes: Any) -> Node:
        return replace(self, **changes)
