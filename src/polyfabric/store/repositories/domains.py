"""Governance domains."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.store.tables import domains

__all__ = ["SqlDomainRepository"]


class SqlDomainRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, name: str) -> dict[str, Any] | None:
        row = self._conn.execute(sa.select(domains).where(domains.c.name == name)).mappings().first()
        return dict(row) if row else None

    def add(self, name: str, description: str, now: float, actor: str) -> None:
        self._conn.execute(
            domains.insert().values(name=name, description=description, created_at=now, created_by=actor)
        )

    def list(self) -> list[dict[str, Any]]:
        rows = self._conn.execute(sa.select(domains).order_by(domains.c.name)).mappings()
        return [dict(r) for r in rows]
