"""Measured network coordinates per node: upserted in batches, read whole for the topology view."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.store.tables import node_coordinates, nodes

__all__ = ["SqlTopologyRepository"]


class SqlTopologyRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def save_coordinates(self, rows: Iterable[dict[str, Any]]) -> int:
        """Upsert `{"node_id", "coords", "rtt_s", "echo", "updated_at"}` rows (one statement per
        kind: an update for the rows that exist, an insert for new ones). Rows of nodes no longer
        in the store are skipped."""
        rows = list(rows)
        if not rows:
            return 0
        ids = [r["node_id"] for r in rows]
        known = set(self._conn.execute(sa.select(nodes.c.id).where(nodes.c.id.in_(ids))).scalars())
        have = set(self._conn.execute(
            sa.select(node_coordinates.c.node_id).where(node_coordinates.c.node_id.in_(ids))).scalars())
        updates = [{**r, "b_node_id": r["node_id"]} for r in rows if r["node_id"] in have]
        inserts = [r for r in rows if r["node_id"] in known and r["node_id"] not in have]
        if updates:
            self._conn.execute(
                node_coordinates.update().where(node_coordinates.c.node_id == sa.bindparam("b_node_id"))
                .values(coords=sa.bindparam("coords"), rtt_s=sa.bindparam("rtt_s"), echo=sa.bindparam("echo"),
                        updated_at=sa.bindparam("updated_at")),
                [{k: v for k, v in u.items() if k != "node_id"} for u in updates])
        if inserts:
            self._conn.execute(node_coordinates.insert(), inserts)
        return len(updates) + len(inserts)

    def coordinates(self) -> dict[str, dict[str, Any]]:
        """node id -> {"coords", "rtt_s", "echo", "updated_at"}."""
        out: dict[str, dict[str, Any]] = {}
        for row in self._conn.execute(sa.select(node_coordinates)).mappings():
            out[row["node_id"]] = {"coords": row["coords"], "rtt_s": row["rtt_s"], "echo": row["echo"],
                                   "updated_at": row["updated_at"]}
        return out
