"""Configuration documents (one row per published version) and what each node acknowledged."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.store.tables import config_docs, config_nodes

__all__ = ["SqlConfigRepository"]


class SqlConfigRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def docs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn.execute(sa.select(config_docs).order_by(config_docs.c.version)).mappings()]

    def doc(self, version: int) -> dict[str, Any] | None:
        row = self._conn.execute(sa.select(config_docs).where(config_docs.c.version == version)).mappings().first()
        return dict(row) if row else None

    def last_version(self) -> int:
        return int(self._conn.execute(sa.select(sa.func.max(config_docs.c.version))).scalar() or 0)

    def lock_versions(self) -> None:
        """Serialize publishers (PostgreSQL): the version numbers come from max + 1."""
        if self._conn.dialect.name == "postgresql":
            self._conn.execute(sa.text("LOCK TABLE config_docs IN SHARE ROW EXCLUSIVE MODE"))

    def add_doc(self, row: dict[str, Any]) -> None:
        self._conn.execute(config_docs.insert().values(**row))

    def update_doc(self, version: int, **fields: Any) -> None:
        self._conn.execute(config_docs.update().where(config_docs.c.version == version).values(**fields))

    def node_states(self) -> dict[str, dict[str, Any]]:
        return {r["node_id"]: dict(r) for r in self._conn.execute(sa.select(config_nodes)).mappings()}

    def node_state(self, node_id: str) -> dict[str, Any] | None:
        row = self._conn.execute(sa.select(config_nodes).where(config_nodes.c.node_id == node_id)).mappings().first()
        return dict(row) if row else None

    def put_node_state(self, row: dict[str, Any]) -> None:
        updated = self._conn.execute(config_nodes.update().where(config_nodes.c.node_id == row["node_id"])
                                     .values(**{k: v for k, v in row.items() if k != "node_id"}))
        if not updated.rowcount:
            self._conn.execute(config_nodes.insert().values(**row))
