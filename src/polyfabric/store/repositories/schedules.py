"""Cron schedules and the record of every due time they reached (fired, skipped or missed).

A fire row is keyed by (schedule, scheduled time): inserting it is what makes a due time happen
at most once, whoever leads and however often the coordinator restarts.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.store.tables import jobs, schedule_fires, schedules

__all__ = ["SqlScheduleRepository"]

_FINAL = ("succeeded", "failed", "cancelled")


class SqlScheduleRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, row: dict[str, Any]) -> None:
        self._conn.execute(schedules.insert().values(**row))

    def get(self, ref: str) -> dict[str, Any] | None:
        """By id or by name."""
        row = self._conn.execute(
            sa.select(schedules).where(sa.or_(schedules.c.id == ref, schedules.c.name == ref))
        ).mappings().first()
        return dict(row) if row else None

    def list(self, domains: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        query = sa.select(schedules).order_by(schedules.c.name)
        if domains is not None:
            query = query.where(schedules.c.domain.in_(domains))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def due(self, now: float) -> list[dict[str, Any]]:
        query = (sa.select(schedules).where(schedules.c.paused.is_(False)).where(schedules.c.next_at <= now)
                 .order_by(schedules.c.next_at))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def update(self, schedule_id: str, **fields: Any) -> None:
        self._conn.execute(schedules.update().where(schedules.c.id == schedule_id).values(**fields))

    def advance(self, schedule_id: str, seen_next_at: float, next_at: float) -> bool:
        """Move the cursor on, only from where the caller saw it (compare-and-set)."""
        result = self._conn.execute(
            schedules.update().where(schedules.c.id == schedule_id).where(schedules.c.next_at == seen_next_at)
            .values(next_at=next_at))
        return result.rowcount == 1

    def delete(self, schedule_id: str) -> None:
        self._conn.execute(schedule_fires.delete().where(schedule_fires.c.schedule_id == schedule_id))
        self._conn.execute(schedules.delete().where(schedules.c.id == schedule_id))

    # -- fires ------------------------------------------------------------------------------

    def add_fires(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._conn.execute(schedule_fires.insert(), rows)

    def set_fire(self, schedule_id: str, scheduled_at: float, **fields: Any) -> None:
        self._conn.execute(schedule_fires.update().where(schedule_fires.c.schedule_id == schedule_id)
                           .where(schedule_fires.c.scheduled_at == scheduled_at).values(**fields))

    def fires(self, schedule_id: str, limit: int = 100) -> list[dict[str, Any]]:
        query = (sa.select(schedule_fires).where(schedule_fires.c.schedule_id == schedule_id)
                 .order_by(schedule_fires.c.scheduled_at.desc()).limit(limit))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def pending_fires(self) -> list[dict[str, Any]]:
        query = sa.select(schedule_fires).where(schedule_fires.c.outcome == "pending").order_by(
            schedule_fires.c.scheduled_at)
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def unfinished_jobs(self, schedule_id: str) -> list[str]:
        """Jobs this schedule started that have not finished (for concurrency forbid/replace)."""
        query = (sa.select(schedule_fires.c.job_id).join(jobs, jobs.c.id == schedule_fires.c.job_id)
                 .where(schedule_fires.c.schedule_id == schedule_id)
                 .where(jobs.c.status.not_in(_FINAL)).order_by(schedule_fires.c.scheduled_at))
        return [r[0] for r in self._conn.execute(query)]

    def job_exists(self, job_id: str) -> bool:
        return self._conn.execute(sa.select(jobs.c.id).where(jobs.c.id == job_id)).first() is not None

    def fire_counts(self) -> dict[str, dict[str, int]]:
        rows = self._conn.execute(sa.select(schedule_fires.c.schedule_id, schedule_fires.c.outcome,
                                            sa.func.count()).group_by(schedule_fires.c.schedule_id,
                                                                      schedule_fires.c.outcome))
        counts: dict[str, dict[str, int]] = {}
        for schedule_id, outcome, n in rows:
            counts.setdefault(schedule_id, {})[outcome] = int(n)
        return counts
