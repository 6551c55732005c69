"""What the coordinator holds in memory about nodes between database writes.

Heartbeats are soft state (like Nomad's heartbeat timers): each one updates this table in
memory, and a flusher writes the dirty rows in one batched transaction every second. Lifecycle
changes (Pending -> Active, Down -> back) are never soft: they are written, with their audit
record, before the heartbeat that caused them is answered. After a coordinator restart every
live node gets a fresh grace period (its last-seen time is the start time), so a restart never
declares the whole fabric Down.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from polyfabric.domain.node_states import NodeState

__all__ = ["LivenessTable", "NodeLiveness"]


@dataclass(slots=True)
class NodeLiveness:
    node_id: str
    domain: str
    public_key: bytes
    state: NodeState
    revoked: bool
    last_seen: float
    telemetry: dict[str, Any] = field(default_factory=dict)
    health: list[dict[str, Any]] = field(default_factory=list)
    health_ok: bool = True
    conditions: list[dict[str, Any]] = field(default_factory=list)
    down_times: list[float] = field(default_factory=list)
    heartbeats: int = 0
    # Topology (services/topology.py): measured network coordinates (a domain.vivaldi.Coordinate),
    # the last round trip to the coordinator, the echo address peers may probe.
    coords: Any = None
    coord_rtt: float | None = None
    echo: str | None = None


class LivenessTable:
    """Thread-safe map node id -> NodeLiveness, plus the set of rows not yet flushed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeLiveness] = {}
        self._dirty: set[str] = set()
        self._coords_dirty: set[str] = set()
        # Bumped whenever a node is added or its state or revocation changes: what the scheduler
        # compares to know whether a task no node could take may find one now (runtime.py).
        self.version = 0

    def get(self, node_id: str) -> NodeLiveness | None:
        return self._nodes.get(node_id)

    def put(self, entry: NodeLiveness) -> None:
        with self._lock:
            self._nodes[entry.node_id] = entry
            self.version += 1

    def set_state(self, node_id: str, state: NodeState, *, revoked: bool | None = None) -> None:
        with self._lock:
            entry = self._nodes.get(node_id)
            if entry is not None:
                if entry.state != state or (revoked is not None and entry.revoked != revoked):
                    self.version += 1
                entry.state = state
                if revoked is not None:
                    entry.revoked = revoked

    def beat(self, node_id: str, now: float, telemetry: dict[str, Any],
             health: list[dict[str, Any]] | None) -> NodeLiveness | None:
        """Record one heartbeat. Returns the entry (None for an unknown node)."""
        with self._lock:
            entry = self._nodes.get(node_id)
            if entry is None:
                return None
            entry.last_seen = now
            entry.telemetry = telemetry
            if health is not None:
                entry.health = health
                entry.health_ok = all(h.get("ok", True) for h in health)
            entry.heartbeats += 1
            self._dirty.add(node_id)
            return entry

    def set_coords(self, node_id: str, coords: Any, rtt: float | None, echo: str | None) -> NodeLiveness | None:
        """Record a node's reported coordinates; written later in a batch (`take_dirty_coords`)."""
        with self._lock:
            entry = self._nodes.get(node_id)
            if entry is None:
                return None
            entry.coords = coords
            if rtt is not None:
                entry.coord_rtt = rtt
            entry.echo = echo
            self._coords_dirty.add(node_id)
            return entry

    def take_dirty_coords(self) -> list[NodeLiveness]:
        with self._lock:
            rows = [self._nodes[n] for n in self._coords_dirty if n in self._nodes]
            self._coords_dirty.clear()
            return rows

    def take_dirty(self) -> list[tuple[str, float, dict[str, Any]]]:
        with self._lock:
            rows = []
            for node_id in self._dirty:
                entry = self._nodes.get(node_id)
                if entry is not None:
                    rows.append((node_id, entry.last_seen, entry.telemetry))
            self._dirty.clear()
            return rows

    def shift(self, seconds: float) -> None:
        """Forgive a stall of the coordinator itself: move every last-seen time forward."""
        with self._lock:
            for entry in self._nodes.values():
                entry.last_seen += seconds

    def entries(self) -> list[NodeLiveness]:
        with self._lock:
            return list(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)
