"""Jobs, their tasks, attempts, logs and change events; semaphores and concurrency limits.

Writes come in batches (executemany) from the job runtime: one transaction per scheduling pass
or per agent report, never one per task.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from polyfabric.store.tables import job_events, jobs, limits, semaphores, task_attempts, task_logs, tasks

__all__ = ["SqlJobRepository"]

ACTIVE_JOB_STATES = ("pending", "running", "paused")


def _insert_ignore(conn: Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


class SqlJobRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # -- jobs -------------------------------------------------------------------------------

    def next_job_seq(self) -> int:
        return int(self._conn.execute(sa.select(sa.func.coalesce(sa.func.max(jobs.c.seq), 0))).scalar_one()) + 1

    def add_job(self, row: dict[str, Any]) -> None:
        self._conn.execute(jobs.insert().values(**row))

    def update_job(self, job_id: str, **fields: Any) -> None:
        self._conn.execute(jobs.update().where(jobs.c.id == job_id).values(**fields))

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        row = self._conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return dict(row) if row else None

    def list_jobs(self, *, status: str | None = None, domains: tuple[str, ...] | None = None,
                  domain: str | None = None, before_seq: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = sa.select(jobs).order_by(jobs.c.seq.desc()).limit(limit)
        if status:
            query = query.where(jobs.c.status == status)
        if domain:
            query = query.where(jobs.c.domain == domain)
        if domains is not None:
            query = query.where(jobs.c.domain.in_(domains))
        if before_seq is not None:
            query = query.where(jobs.c.seq < before_seq)
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def active_jobs(self) -> list[dict[str, Any]]:
        query = sa.select(jobs).where(jobs.c.status.in_(ACTIVE_JOB_STATES)).order_by(jobs.c.seq)
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def counts(self, job_id: str) -> dict[str, int]:
        rows = self._conn.execute(
            sa.select(tasks.c.status, sa.func.count()).where(tasks.c.job_id == job_id)
            .where(tasks.c.is_group.is_(False)).group_by(tasks.c.status)
        )
        return {status: int(n) for status, n in rows}

    # -- tasks ------------------------------------------------------------------------------

    def insert_tasks(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._conn.execute(tasks.insert(), rows)

    def update_tasks(self, rows: list[dict[str, Any]]) -> None:
        """Batch update by task id; every row must carry the same columns."""
        if not rows:
            return
        columns = [k for k in rows[0] if k != "id"]
        stmt = tasks.update().where(tasks.c.id == sa.bindparam("b_id")).values(
            **{c: sa.bindparam(f"b_{c}") for c in columns})
        self._conn.execute(stmt, [{f"b_{k}": v for k, v in row.items()} for row in rows])

    def delete_tasks(self, task_ids: list[str]) -> None:
        if task_ids:
            self._conn.execute(tasks.delete().where(tasks.c.id.in_(task_ids)))

    def tasks_of(self, job_id: str, *, status: str | None = None, after_key: str | None = None,
                 limit: int | None = None) -> list[dict[str, Any]]:
        query = sa.select(tasks).where(tasks.c.job_id == job_id).order_by(tasks.c.queue_seq, tasks.c.key)
        if status:
            query = query.where(tasks.c.status == status)
        if after_key:
            query = query.where(tasks.c.key > after_key).order_by(None).order_by(tasks.c.key)
        if limit:
            query = query.limit(limit)
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        row = self._conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).mappings().first()
        return dict(row) if row else None

    # -- attempts ---------------------------------------------------------------------------

    def add_attempts(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._conn.execute(_insert_ignore(self._conn, task_attempts), rows)

    def update_attempts(self, rows: list[dict[str, Any]]) -> None:
        """Batch update by (task_id, attempt); every row must carry the same columns."""
        if not rows:
            return
        columns = [k for k in rows[0] if k not in ("task_id", "attempt")]
        stmt = (task_attempts.update()
                .where(task_attempts.c.task_id == sa.bindparam("b_task_id"))
                .where(task_attempts.c.attempt == sa.bindparam("b_attempt"))
                .values(**{c: sa.bindparam(f"b_{c}") for c in columns}))
        self._conn.execute(stmt, [{f"b_{k}": v for k, v in row.items()} for row in rows])

    def attempts_of(self, task_id: str) -> list[dict[str, Any]]:
        query = sa.select(task_attempts).where(task_attempts.c.task_id == task_id).order_by(task_attempts.c.attempt)
        return [dict(r) for r in self._conn.execute(query).mappings()]

    # -- logs and events --------------------------------------------------------------------

    def add_logs(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._conn.execute(_insert_ignore(self._conn, task_logs), rows)

    def logs(self, task_id: str, *, attempt: int | None, after_seq: int, limit: int) -> list[dict[str, Any]]:
        query = (sa.select(task_logs).where(task_logs.c.task_id == task_id).where(task_logs.c.seq > after_seq)
                 .order_by(task_logs.c.seq).limit(limit))
        if attempt is not None:
            query = query.where(task_logs.c.attempt == attempt)
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def add_events(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._conn.execute(job_events.insert(), rows)

    def events(self, job_id: str, *, after_seq: int, limit: int) -> list[dict[str, Any]]:
        query = (sa.select(job_events).where(job_events.c.job_id == job_id).where(job_events.c.seq > after_seq)
                 .order_by(job_events.c.seq).limit(limit))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    # -- semaphores and limits --------------------------------------------------------------

    def semaphores(self) -> dict[str, int]:
        return {r.name: int(r.size) for r in self._conn.execute(sa.select(semaphores.c.name, semaphores.c.size))}

    def set_semaphore(self, name: str, size: int, actor: str, now: float) -> None:
        exists = self._conn.execute(sa.select(semaphores.c.name).where(semaphores.c.name == name)).first()
        values = {"size": size, "updated_by": actor, "updated_at": now}
        if exists:
            self._conn.execute(semaphores.update().where(semaphores.c.name == name).values(**values))
        else:
            self._conn.execute(semaphores.insert().values(name=name, **values))

    def limits(self) -> dict[str, Any]:
        row = self._conn.execute(sa.select(limits).where(limits.c.id == 1)).mappings().first()
        if row is None:
            return {"global_max": None, "per_domain": {}, "per_node": None}
        return {"global_max": row["global_max"], "per_domain": dict(row["per_domain"]), "per_node": row["per_node"]}

    def set_limits(self, global_max: int | None, per_domain: dict[str, int], per_node: int | None,
                   actor: str, now: float) -> None:
        values = {"global_max": global_max, "per_domain": per_domain, "per_node": per_node,
                  "updated_by": actor, "updated_at": now}
        if self._conn.execute(sa.select(limits.c.id).where(limits.c.id == 1)).first():
            self._conn.execute(limits.update().where(limits.c.id == 1).values(**values))
        else:
            self._conn.execute(limits.insert().values(id=1, **values))
