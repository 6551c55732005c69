"""Policy versions (each apply adds one; `rm` adds a tombstone) and the decisions that name them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.store.tables import policy_decisions, policy_versions

__all__ = ["SqlPolicyRepository"]


class SqlPolicyRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def latest_version(self, name: str) -> int:
        value = self._conn.execute(
            sa.select(sa.func.max(policy_versions.c.version)).where(policy_versions.c.name == name)).scalar()
        return int(value or 0)

    def add_version(self, row: dict[str, Any]) -> None:
        self._conn.execute(policy_versions.insert().values(**row))

    def versions(self, name: str) -> list[dict[str, Any]]:
        query = (sa.select(policy_versions).where(policy_versions.c.name == name)
                 .order_by(policy_versions.c.version))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def current(self) -> list[dict[str, Any]]:
        """The newest version of every policy that is not removed, by name."""
        newest = (sa.select(policy_versions.c.name, sa.func.max(policy_versions.c.version).label("v"))
                  .group_by(policy_versions.c.name).subquery())
        query = (sa.select(policy_versions)
                 .join(newest, sa.and_(policy_versions.c.name == newest.c.name,
                                       policy_versions.c.version == newest.c.v))
                 .where(policy_versions.c.removed.is_(False))
                 .order_by(policy_versions.c.name))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def add_decisions(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._conn.execute(policy_decisions.insert(), rows)

    def decisions(self, *, job_id: str, task_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        query = sa.select(policy_decisions).where(policy_decisions.c.job_id == job_id)
        if task_id is not None:
            query = query.where(policy_decisions.c.task_id == task_id)
        query = query.order_by(policy_decisions.c.id).limit(limit)
        return [dict(r) for r in self._conn.execute(query).mappings()]
