"""Signed result manifests, one per attempt that reported a result."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.store.tables import result_manifests

__all__ = ["SqlManifestRepository"]


class SqlManifestRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Insert the manifests not stored yet (a report sent again repeats its manifests)."""
        if not rows:
            return
        task_ids = sorted({row["task_id"] for row in rows})
        stored = {(r.task_id, r.attempt) for r in self._conn.execute(
            sa.select(result_manifests.c.task_id, result_manifests.c.attempt)
            .where(result_manifests.c.task_id.in_(task_ids)))}
        fresh: dict[tuple[str, int], dict[str, Any]] = {}
        for row in rows:
            key = (row["task_id"], row["attempt"])
            if key not in stored:
                fresh.setdefault(key, row)
        if fresh:
            self._conn.execute(result_manifests.insert(), list(fresh.values()))

    def of_job(self, job_id: str) -> dict[tuple[str, int], dict[str, Any]]:
        query = sa.select(result_manifests).where(result_manifests.c.job_id == job_id)
        return {(r["task_id"], r["attempt"]): dict(r) for r in self._conn.execute(query).mappings()}
