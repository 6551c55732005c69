"""Per-node telemetry history: one row per (node, resolution, bucket), written in batches."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from polyfabric.store.tables import node_metrics

__all__ = ["METRIC_COLUMNS", "SqlTelemetryRepository"]

METRIC_COLUMNS = ("cpu_percent", "memory_percent", "memory_used_bytes", "disk_percent", "load1", "gpu_percent",
                  "gpu_memory_used_bytes")


class SqlTelemetryRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add_points(self, rows: list[dict[str, Any]]) -> None:
        """Insert points; a point already stored for the same bucket is replaced (a bucket written
        again after a restart of the leader)."""
        if not rows:
            return
        if self._conn.dialect.name == "postgresql":
            stmt = postgresql.insert(node_metrics)
            stmt = stmt.on_conflict_do_update(
                index_elements=["node_id", "resolution", "at"],
                set_={c: stmt.excluded[c] for c in ("samples", *METRIC_COLUMNS)})
        else:
            stmt = sqlite.insert(node_metrics).prefix_with("OR REPLACE")
        self._conn.execute(stmt, rows)

    def points(self, node_id: str, resolution: int, since: float, limit: int = 10_000) -> list[dict[str, Any]]:
        query = (sa.select(node_metrics)
                 .where(node_metrics.c.node_id == node_id, node_metrics.c.resolution == resolution,
                        node_metrics.c.at >= int(since))
                 .order_by(node_metrics.c.at).limit(limit))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def prune(self, resolution: int, before: float) -> int:
        """Delete the points of one tier older than `before`; how many went."""
        result = self._conn.execute(node_metrics.delete().where(node_metrics.c.resolution == resolution,
                                                                node_metrics.c.at < int(before)))
        return int(result.rowcount or 0)
