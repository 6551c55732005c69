"""Topology: the region/zone/rack tree, measured network coordinates, estimated round trips.

Agents report their Vivaldi coordinates (domain/vivaldi.py) and their last round trip to the
coordinator with each heartbeat. The coordinator keeps them in the liveness table (memory), runs
Vivaldi for *its own* coordinate from those round trips (so agents can measure against it, as Serf
members do against each other), answers each heartbeat with its coordinate and a small random
sample of peers that expose an echo endpoint, and writes the coordinates in one batched
transaction a second (`flush`, run by the TopologyFlusher controller), never per heartbeat.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from polyfabric.domain.access import Principal, authorize
from polyfabric.domain.errors import NotFound, ValidationError
from polyfabric.domain.ids import NODE_ID_RE
from polyfabric.domain.node_states import NodeState
from polyfabric.domain.nodes import Node
from polyfabric.domain.resources import Resources
from polyfabric.domain.topology import TopologyNode, build_tree
from polyfabric.domain.vivaldi import Coordinate, VivaldiClient
from polyfabric.services.context import ServiceContext

__all__ = ["TopologyService"]

COORDINATOR = "coordinator"


class TopologyService:
    """Coordinates in, estimates and the tree out. `allocated` gives what is held on each node
    (the runtime's assignments) for the tree's free capacity."""

    def __init__(self, ctx: ServiceContext, allocated: Callable[[], Mapping[str, Resources]] | None = None,
                 *, peer_sample: int = 3, rng: random.Random | None = None) -> None:
        self._ctx = ctx
        self._allocated = allocated or (lambda: {})
        self.peer_sample = peer_sample
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._vivaldi = VivaldiClient()
        self._echoes: list[tuple[str, str]] = []  # (node id, echo address) of Active nodes, refreshed 1/s
        self._echoes_at = 0.0

    # -- the agent side (heartbeat fast path: memory only) --------------------------------------

    @staticmethod
    def parse(coords: Mapping[str, Any] | None) -> Coordinate | None:
        return None if coords is None else Coordinate.from_dict(coords)

    def observe(self, node_id: str, coords: Coordinate | None, rtt: float | None, echo: str | None) -> dict[str, Any]:
        """A heartbeat's topology part: keep the node's coordinate, move the coordinator's own by
        the node's measured round trip, and answer with the coordinator's coordinate and peers."""
        if coords is not None:
            self._ctx.liveness.set_coords(node_id, coords, rtt, echo)
            if rtt is not None:
                # an implausible sample moves nothing; the heartbeat still counts
                with self._lock, contextlib.suppress(ValidationError):
                    self._vivaldi.update(node_id, coords, rtt, self._rng)
        elif echo is not None:
            self._ctx.liveness.set_coords(node_id, None, rtt, echo)
        return {"coordinator_coords": self.coordinate().to_dict(), "peers": self.peers_for(node_id)}

    def coordinate(self) -> Coordinate:
        with self._lock:
            return self._vivaldi.coordinate

    def peers_for(self, node_id: str) -> list[dict[str, Any]]:
        """A random few Active peers with an echo endpoint (and their coordinates), not the node."""
        now = time.monotonic()
        if now - self._echoes_at > 1.0:
            self._echoes = [(e.node_id, e.echo) for e in self._ctx.liveness.entries()
                            if e.echo and e.state == NodeState.ACTIVE and not e.revoked]
            self._echoes_at = now
        pool = [p for p in self._echoes if p[0] != node_id]
        if len(pool) > self.peer_sample:
            pool = self._rng.sample(pool, self.peer_sample)
        out = []
        for peer_id, echo in pool:
            entry = self._ctx.liveness.get(peer_id)
            coords = entry.coords if entry is not None else None
            out.append({"node_id": peer_id, "echo": echo, "coords": coords.to_dict() if coords else None})
        return out

    def flush(self) -> int:
        """Write the coordinates reported since the last flush in one transaction."""
        entries = self._ctx.liveness.take_dirty_coords()
        rows = [{"node_id": e.node_id, "coords": e.coords.to_dict(), "rtt_s": e.coord_rtt, "echo": e.echo,
                 "updated_at": e.last_seen} for e in entries if e.coords is not None]
        if not rows:
            return 0
        with self._ctx.store.unit_of_work() as uow:
            uow.topology.save_coordinates(rows)
            uow.commit()
        return len(rows)

    # -- reads ------------------------------------------------------------------------------------

    def _visible(self, principal: Principal, domain: str | None = None) -> list[Node]:
        authorize(principal, "node.read", domain)
        scope = None if "*" in principal.domains else principal.domains
        out: list[Node] = []
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            after = None
            while True:
                batch = uow.nodes.list(domain=domain, domains=scope, after=after, limit=5000)
                out.extend(batch)
                if len(batch) < 5000:
                    break
                after = batch[-1].name
        return out

    def _coords(self) -> dict[str, dict[str, Any]]:
        """node id -> {"coords": Coordinate, "rtt_s", "echo", "updated_at"}: memory over the store."""
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            stored = uow.topology.coordinates()
        out: dict[str, dict[str, Any]] = {}
        for nid, row in stored.items():
            try:
                out[nid] = {**row, "coords": Coordinate.from_dict(row["coords"])}
            except ValidationError:
                continue
        for entry in self._ctx.liveness.entries():
            if entry.coords is not None:
                out[entry.node_id] = {"coords": entry.coords, "rtt_s": entry.coord_rtt, "echo": entry.echo,
                                      "updated_at": entry.last_seen}
        return out

    def tree(self, principal: Principal, *, domain: str | None = None) -> dict[str, Any]:
        """region → zone → rack → nodes with counts by state, capacity and free capacity."""
        nodes = self._visible(principal, domain)
        allocated = self._allocated()
        members = []
        for node in nodes:
            entry = self._ctx.liveness.get(node.id)
            state = entry.state if entry is not None else node.state
            if node.revoked or state == NodeState.RETIRED:
                continue
            free = node.capacity - allocated.get(node.id, Resources())
            members.append(TopologyNode(node.id, node.name, state.value, node.labels, node.capacity, free))
        tree = build_tree(members)
        coords = self._coords()
        tree["coordinates"] = {
            "nodes": sum(1 for n in members if n.id in coords),
            "coordinator": self.coordinate().to_dict(),
        }
        return tree

    def coordinates(self, principal: Principal, *, domain: str | None = None) -> list[dict[str, Any]]:
        """Every visible node's coordinate, its estimated and measured round trip to the coordinator."""
        nodes = self._visible(principal, domain)
        coords = self._coords()
        own = self.coordinate()
        out = []
        for node in sorted(nodes, key=lambda n: n.name):
            row = coords.get(node.id)
            if row is None:
                continue
            c: Coordinate = row["coords"]
            out.append({"node_id": node.id, "name": node.name, "labels": node.topology,
                        "coords": c.to_dict(), "echo": row["echo"], "updated_at": row["updated_at"],
                        "rtt_to_coordinator_s": row["rtt_s"],
                        "estimated_rtt_to_coordinator_s": c.distance(own) if c.compatible(own) else None})
        return out

    def rtt(self, principal: Principal, a: str, b: str) -> dict[str, Any]:
        """The estimated round trip between two nodes (ids or names), from their coordinates."""
        if not a or not b:
            raise ValidationError("give both nodes: from and to (a node id or name)")
        nodes = self._visible(principal)
        by_ref: dict[str, Node] = {}
        for node in nodes:
            by_ref[node.id] = node
            by_ref[node.name] = node
        coords = self._coords()
        ends = []
        for ref in (a, b):
            found = by_ref.get(ref)
            if found is None:
                kind = "id" if NODE_ID_RE.match(ref) else "name"
                raise NotFound(f"no node with {kind} {ref!r} (or it is not in your domains)")
            row = coords.get(found.id)
            if row is None:
                raise NotFound(f"node {found.name} has not reported network coordinates yet "
                               "(agents report them with their heartbeats once they have measured)")
            ends.append((found, row["coords"]))
        (na, ca), (nb, cb) = ends
        if not ca.compatible(cb):
            raise ValidationError(f"nodes {na.name} and {nb.name} report coordinates of different dimensions")
        rtt = 0.0 if na.id == nb.id else ca.distance(cb)
        return {"from": {"node_id": na.id, "name": na.name, "labels": na.topology},
                "to": {"node_id": nb.id, "name": nb.name, "labels": nb.topology},
                "estimated_rtt_s": rtt, "estimated_rtt_ms": round(rtt * 1000.0, 3),
                "error": {"from": ca.error, "to": cb.error}}
