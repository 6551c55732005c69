"""The contribution ledger: what each finished attempt used, who consumed it, who contributed it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from polyfabric.store.tables import usage_ledger

__all__ = ["SqlLedgerRepository"]

_SUMS = ("wall_s", "cpu_s", "memory_byte_s", "gpu_s")


class SqlLedgerRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Insert ledger rows; a row for an attempt already recorded is ignored (reports are
        at-least-once, and a failed insert would fail the whole group commit it rides in)."""
        if not rows:
            return
        if self._conn.dialect.name == "postgresql":
            stmt = postgresql.insert(usage_ledger).on_conflict_do_nothing(index_elements=["task_id", "attempt"])
        else:
            stmt = sqlite.insert(usage_ledger).prefix_with("OR IGNORE")
        self._conn.execute(stmt, rows)

    def rows(self, *, domain: str | None = None, domains: tuple[str, ...] | None = None,
             since: float | None = None, job_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Ledger rows, newest first; `domain`/`domains`: rows consumed or contributed by them."""
        query = sa.select(usage_ledger).order_by(usage_ledger.c.finished_at.desc()).limit(limit)
        if since is not None:
            query = query.where(usage_ledger.c.finished_at >= since)
        if job_id is not None:
            query = query.where(usage_ledger.c.job_id == job_id)
        if domain is not None:
            query = query.where(sa.or_(usage_ledger.c.consumer_domain == domain,
                                       usage_ledger.c.provider_domain == domain))
        if domains is not None:
            query = query.where(sa.or_(usage_ledger.c.consumer_domain.in_(domains),
                                       usage_ledger.c.provider_domain.in_(domains)))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def totals(self, side: str, since: float | None = None) -> dict[str, dict[str, float]]:
        """Per domain sums of wall, CPU, memory and GPU seconds and the attempt count, grouped by
        `side`: "consumer_domain" or "provider_domain"."""
        column = usage_ledger.c[side]
        query = sa.select(column, sa.func.count().label("attempts"),
                          *(sa.func.coalesce(sa.func.sum(usage_ledger.c[name]), 0.0).label(name) for name in _SUMS)
                          ).group_by(column)
        if since is not None:
            query = query.where(usage_ledger.c.finished_at >= since)
        out: dict[str, dict[str, float]] = {}
        for row in self._conn.execute(query).mappings():
            out[row[side]] = {"attempts": int(row["attempts"]), **{name: float(row[name]) for name in _SUMS}}
        return out
