"""Retention: finished jobs whose records may expire, and their removal (services/gc.py decides).

Every delete re-checks, in its own statement, that the job is still finished exactly as it was
when it was judged expired: a job revived meanwhile (`job retry`) is never touched.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.store.tables import job_events, job_retention, jobs, policy_decisions, task_attempts, task_logs, tasks

__all__ = ["SqlRetentionRepository"]

_FINAL = ("succeeded", "failed", "cancelled")


class SqlRetentionRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def finished_jobs(self, *, finished_before: float, after_seq: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        """Finished jobs not collected yet, oldest first (with the document: ttl and keep live there)."""
        query = (sa.select(jobs.c.id, jobs.c.seq, jobs.c.name, jobs.c.domain, jobs.c.status, jobs.c.finished_at,
                           jobs.c.document)
                 .outerjoin(job_retention, job_retention.c.job_id == jobs.c.id)
                 .where(job_retention.c.job_id.is_(None)).where(jobs.c.status.in_(_FINAL))
                 .where(jobs.c.finished_at.is_not(None)).where(jobs.c.finished_at <= finished_before)
                 .where(jobs.c.seq > after_seq).order_by(jobs.c.seq).limit(limit))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def footprint(self, job_id: str) -> dict[str, int]:
        """What a job holds: task rows, attempts, log chunks and their bytes, change events."""
        task_ids = sa.select(tasks.c.id).where(tasks.c.job_id == job_id).scalar_subquery()
        n_tasks = self._conn.execute(sa.select(sa.func.count()).where(tasks.c.job_id == job_id)).scalar_one()
        n_attempts = self._conn.execute(
            sa.select(sa.func.count()).where(task_attempts.c.task_id.in_(task_ids))).scalar_one()
        logs, log_bytes = self._conn.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(task_logs.c.data)), 0))
            .where(task_logs.c.task_id.in_(task_ids))).one()
        events = self._conn.execute(sa.select(sa.func.count()).where(job_events.c.job_id == job_id)).scalar_one()
        return {"tasks": int(n_tasks), "attempts": int(n_attempts), "logs": int(logs), "log_bytes": int(log_bytes),
                "events": int(events)}

    def task_keys(self, job_id: str) -> dict[str, str]:
        """task id -> key (with the task name before any '[index]')."""
        rows = self._conn.execute(sa.select(tasks.c.id, tasks.c.key).where(tasks.c.job_id == job_id))
        return {r[0]: r[1] for r in rows}

    def still_finished(self, job_id: str, finished_at: float) -> bool:
        """FOR UPDATE where the database has it: a concurrent revive waits for this transaction."""
        query = (sa.select(jobs.c.id).where(jobs.c.id == job_id).where(jobs.c.status.in_(_FINAL))
                 .where(jobs.c.finished_at == finished_at))
        if self._conn.dialect.name == "postgresql":
            query = query.with_for_update()
        return self._conn.execute(query).first() is not None

    def delete_tasks(self, task_ids: list[str]) -> None:
        for start in range(0, len(task_ids), 500):
            chunk = task_ids[start:start + 500]
            self._conn.execute(task_logs.delete().where(task_logs.c.task_id.in_(chunk)))
            self._conn.execute(task_attempts.delete().where(task_attempts.c.task_id.in_(chunk)))
            self._conn.execute(tasks.delete().where(tasks.c.id.in_(chunk)))

    def delete_job(self, job_id: str) -> None:
        """The job's row and what hangs on it by job id: events, retention mark, policy decisions
        (its admission and the offers declined; placements went with their attempts)."""
        self._conn.execute(policy_decisions.delete().where(policy_decisions.c.job_id == job_id))
        self._conn.execute(job_events.delete().where(job_events.c.job_id == job_id))
        self._conn.execute(job_retention.delete().where(job_retention.c.job_id == job_id))
        self._conn.execute(jobs.delete().where(jobs.c.id == job_id))

    def delete_events(self, job_id: str) -> None:
        self._conn.execute(job_events.delete().where(job_events.c.job_id == job_id))

    def mark_collected(self, job_id: str, now: float, kept: list[str]) -> None:
        self._conn.execute(job_retention.insert().values(job_id=job_id, collected_at=now, kept=kept))

    def collected(self, job_id: str) -> dict[str, Any] | None:
        row = self._conn.execute(sa.select(job_retention).where(job_retention.c.job_id == job_id)).mappings().first()
        return dict(row) if row else None
