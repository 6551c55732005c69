"""Nodes: spec, lifecycle state and the last observed status."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.domain.errors import Conflict
from polyfabric.domain.node_states import NodeState
from polyfabric.domain.nodes import Node
from polyfabric.domain.resources import Resources
from polyfabric.store.tables import nodes

__all__ = ["SqlNodeRepository"]

_STATUS_COLUMNS = [c for c in nodes.c if c.name != "facts"]


def _node(row: sa.RowMapping) -> Node:
    return Node(
        id=row["id"],
        name=row["name"],
        domain=row["domain"],
        public_key=bytes(row["public_key"]),
        labels=dict(row["labels"]),
        capacity=Resources.from_dict(row["capacity"]),
        state=NodeState(row["state"]),
        state_since=row["state_since"],
        registered_at=row["registered_at"],
        resume_state=NodeState(row["resume_state"]) if row["resume_state"] else None,
        revoked=bool(row["revoked"]),
        last_heartbeat_at=row["last_heartbeat_at"],
        telemetry=dict(row["telemetry"]),
        health=list(row["health"]),
        conditions=list(row["conditions"]),
        agent_version=row["agent_version"],
        version=row["version"],
        drain_deadline=row["drain_deadline"],
        quarantine=dict(row["quarantine"]) if row["quarantine"] else None,
    )


def _values(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "domain": node.domain,
        "public_key": node.public_key,
        "labels": node.labels,
        "capacity": node.capacity.to_dict(),
        "state": node.state.value,
        "state_since": node.state_since,
        "resume_state": node.resume_state.value if node.resume_state else None,
        "revoked": node.revoked,
        "registered_at": node.registered_at,
        "last_heartbeat_at": node.last_heartbeat_at,
        "telemetry": node.telemetry,
        "health": node.health,
        "conditions": node.conditions,
        "agent_version": node.agent_version,
        "drain_deadline": node.drain_deadline,
        "quarantine": node.quarantine,
    }


class SqlNodeRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, node_id: str) -> Node | None:
        row = self._conn.execute(sa.select(*_STATUS_COLUMNS).where(nodes.c.id == node_id)).mappings().first()
        return _node(row) if row else None

    def by_name(self, name: str) -> Node | None:
        row = self._conn.execute(sa.select(*_STATUS_COLUMNS).where(nodes.c.name == name)).mappings().first()
        return _node(row) if row else None

    def add(self, node: Node, facts: dict[str, Any], join_token_id: str) -> None:
        self._conn.execute(
            nodes.insert().values(**_values(node), facts=facts, join_token_id=join_token_id,
                                  down_times=[], version=1)
        )

    def update(self, node: Node, *, expected_version: int | None = None) -> None:
        """Write the node; with `expected_version`, refuse if someone else wrote it meanwhile."""
        query = nodes.update().where(nodes.c.id == node.id)
        if expected_version is not None:
            query = query.where(nodes.c.version == expected_version)
        result = self._conn.execute(query.values(**_values(node), version=nodes.c.version + 1))
        if result.rowcount != 1:
            raise Conflict(f"node {node.id} was changed by someone else; try again")

    def list(self, *, state: str | None = None, domain: str | None = None,
             domains: tuple[str, ...] | None = None, after: str | None = None,
             limit: int = 1000, labels: dict[str, str] | None = None) -> list[Node]:
        query = sa.select(*_STATUS_COLUMNS).order_by(nodes.c.name).limit(limit)
        for key, value in (labels or {}).items():  # in SQL (JSON_EXTRACT / ->>): a page never scans the rest
            query = query.where(nodes.c.labels[key].as_string() == value)
        if state:
            query = query.where(nodes.c.state == state)
        if domain:
            query = query.where(nodes.c.domain == domain)
        if domains is not None:
            query = query.where(nodes.c.domain.in_(domains))
        if after:
            query = query.where(nodes.c.name > after)
        return [_node(r) for r in self._conn.execute(query).mappings()]

    def owner_policies(self) -> dict[str, Any]:
        """Node id -> the owner policy its agent advertised (`facts.owner_policy`), for the nodes
        that advertise one; read in SQL (JSON_EXTRACT / ->) so the rest of the facts stay put."""
        value = nodes.c.facts["owner_policy"]
        query = sa.select(nodes.c.id, value).where(value.is_not(None))
        out = {}
        for node_id, doc in self._conn.execute(query):
            if isinstance(doc, str):  # some drivers hand the extracted JSON back as text
                doc = json.loads(doc)
            if isinstance(doc, dict):
                out[node_id] = doc
        return out

    def facts(self, node_id: str) -> dict[str, Any]:
        value = self._conn.execute(sa.select(nodes.c.facts).where(nodes.c.id == node_id)).scalar()
        return dict(value or {})

    def set_facts(self, node_id: str, facts: dict[str, Any]) -> None:
        self._conn.execute(nodes.update().where(nodes.c.id == node_id).values(facts=facts))

    def set_conditions(self, node_id: str, conditions: list[dict[str, Any]], health: list[dict[str, Any]]) -> None:
        """Write observations only: never the lifecycle columns a concurrent transition may have changed."""
        self._conn.execute(nodes.update().where(nodes.c.id == node_id).values(conditions=conditions, health=health))

    def down_times(self, node_id: str) -> list[float]:
        value = self._conn.execute(sa.select(nodes.c.down_times).where(nodes.c.id == node_id)).scalar()
        return list(value or [])

    def set_down_times(self, node_id: str, times: list[float]) -> None:
        self._conn.execute(nodes.update().where(nodes.c.id == node_id).values(down_times=times))

    def record_liveness(self, rows: list[tuple[str, float, dict[str, Any]]]) -> None:
        """Batch-write (node id, last heartbeat time, telemetry) without touching lifecycle state."""
        if not rows:
            return
        stmt = (
            nodes.update()
            .where(nodes.c.id == sa.bindparam("b_id"))
            .values(last_heartbeat_at=sa.bindparam("b_at"), telemetry=sa.bindparam("b_tel"))
        )
        self._conn.execute(stmt, [{"b_id": i, "b_at": at, "b_tel": tel} for i, at, tel in rows])

    def public_keys(self) -> dict[str, tuple[bytes, bool]]:
        rows = self._conn.execute(sa.select(nodes.c.id, nodes.c.public_key, nodes.c.revoked))
        return {r.id: (bytes(r.public_key), bool(r.revoked)) for r in rows}
