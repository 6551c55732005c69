"""Artifact metadata (the bytes are files, see services/artifacts.py)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.store.tables import artifacts

__all__ = ["SqlArtifactRepository"]


class SqlArtifactRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def put(self, row: dict[str, Any]) -> None:
        """Insert, or replace the row of the same (task, attempt, path): an upload repeated after a
        lost answer stores the same file again."""
        self._conn.execute(artifacts.delete().where(artifacts.c.task_id == row["task_id"],
                                                    artifacts.c.attempt == row["attempt"],
                                                    artifacts.c.path == row["path"]))
        self._conn.execute(artifacts.insert().values(**row))

    def attempt_bytes(self, task_id: str, attempt: int, *, excluding: str | None = None) -> tuple[int, int]:
        """(stored bytes, stored files) of one attempt, not counting `excluding` (a path being replaced)."""
        query = sa.select(sa.func.coalesce(sa.func.sum(artifacts.c.size), 0), sa.func.count()).where(
            artifacts.c.task_id == task_id, artifacts.c.attempt == attempt, artifacts.c.sha256.is_not(None))
        if excluding is not None:
            query = query.where(artifacts.c.path != excluding)
        row = self._conn.execute(query).one()
        return int(row[0]), int(row[1])

    def of_job(self, job_id: str) -> list[dict[str, Any]]:
        query = (sa.select(artifacts).where(artifacts.c.job_id == job_id)
                 .order_by(artifacts.c.task_id, artifacts.c.attempt, artifacts.c.path))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def of_task(self, task_id: str) -> list[dict[str, Any]]:
        query = (sa.select(artifacts).where(artifacts.c.task_id == task_id)
                 .order_by(artifacts.c.attempt, artifacts.c.path))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def get(self, task_id: str, path: str, attempt: int | None = None) -> dict[str, Any] | None:
        """The artifact `path` of the attempt, or of the latest attempt that left it."""
        query = sa.select(artifacts).where(artifacts.c.task_id == task_id, artifacts.c.path == path)
        if attempt is not None:
            query = query.where(artifacts.c.attempt == attempt)
        row = self._conn.execute(query.order_by(artifacts.c.attempt.desc()).limit(1)).mappings().first()
        return dict(row) if row is not None else None

    def counts(self, job_id: str) -> dict[str, int]:
        """{"files", "bytes", "refused"} of a job (for `job show`)."""
        query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(artifacts.c.size), 0),
                          sa.func.count(artifacts.c.problem)).where(artifacts.c.job_id == job_id)
        row = self._conn.execute(query).one()
        refused = int(row[2])
        return {"files": int(row[0]) - refused, "refused": refused, "bytes": int(row[1])}

    def delete_of_tasks(self, task_ids: list[str]) -> None:
        if task_ids:
            self._conn.execute(artifacts.delete().where(artifacts.c.task_id.in_(task_ids)))
