"""Checkpoint metadata (the bytes are files, see services/checkpoints.py), and the fence a new
checkpoint passes: the task row must still name the attempt and node that sent it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.store.tables import checkpoints, tasks

__all__ = ["SqlCheckpointRepository"]

_IN_FLIGHT = ("leased", "running")


class SqlCheckpointRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def current_attempt(self, task_id: str) -> tuple[int, str | None, str] | None:
        """(attempt, node_id, status) of the task, row-locked (FOR UPDATE on PostgreSQL) so that a
        runtime commit that moves the task on is ordered before or after this transaction."""
        query = sa.select(tasks.c.attempt, tasks.c.node_id, tasks.c.status).where(tasks.c.id == task_id)
        row = self._conn.execute(query.with_for_update()).first()
        return None if row is None else (int(row[0]), row[1], str(row[2]))

    def is_current(self, task_id: str, attempt: int, node_id: str) -> bool:
        found = self.current_attempt(task_id)
        return found is not None and found[0] == attempt and found[1] == node_id and found[2] in _IN_FLIGHT

    def next_seq(self, task_id: str) -> int:
        query = sa.select(sa.func.coalesce(sa.func.max(checkpoints.c.seq), 0)).where(checkpoints.c.task_id == task_id)
        return int(self._conn.execute(query).scalar_one()) + 1

    def add(self, row: dict[str, Any]) -> None:
        self._conn.execute(checkpoints.insert().values(**row))

    def latest(self, task_id: str) -> dict[str, Any] | None:
        query = (sa.select(checkpoints).where(checkpoints.c.task_id == task_id)
                 .order_by(checkpoints.c.seq.desc()).limit(1))
        row = self._conn.execute(query).mappings().first()
        return dict(row) if row is not None else None

    def get(self, task_id: str, seq: int) -> dict[str, Any] | None:
        query = sa.select(checkpoints).where(checkpoints.c.task_id == task_id, checkpoints.c.seq == seq)
        row = self._conn.execute(query).mappings().first()
        return dict(row) if row is not None else None

    def of_task(self, task_id: str) -> list[dict[str, Any]]:
        query = sa.select(checkpoints).where(checkpoints.c.task_id == task_id).order_by(checkpoints.c.seq)
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def older_than(self, task_id: str, keep_from_seq: int) -> list[dict[str, Any]]:
        query = sa.select(checkpoints).where(checkpoints.c.task_id == task_id, checkpoints.c.seq < keep_from_seq)
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def delete(self, ids: list[str]) -> None:
        if ids:
            self._conn.execute(checkpoints.delete().where(checkpoints.c.id.in_(ids)))
