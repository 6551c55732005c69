"""Jobs, their tasks, attempts, logs and change events; semaphores and concurrency limits.

Writes come in batches (executemany) from the job runtime: one transaction per scheduling pass
or per agent report, never one per task.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.store.engine import json_loads
from polyfabric.store.repositories.bulk import insert_many, raw_many
from polyfabric.store.repositories.bulk import quote as _q
from polyfabric.store.tables import job_events, jobs, limits, semaphores, task_attempts, task_logs, tasks

__all__ = ["SqlJobRepository"]

ACTIVE_JOB_STATES = ("pending", "running", "paused")
LOST_ATTEMPT_STATES = ("lost", "evicted")


class _JobRow(dict[str, Any]):
    """A job row whose `document` is decoded when first read (`row["document"]`, `.get`, `in`);
    reading a job for its status, as every events long-poll does, leaves it undecoded."""

    def __init__(self, row: dict[str, Any], document_text: str | None) -> None:
        super().__init__(row)
        self._document_text = document_text

    def __missing__(self, key: str) -> Any:
        if key != "document":
            raise KeyError(key)
        value = json_loads(self._document_text) if self._document_text is not None else None
        self["document"] = value
        return value

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[key] if key == "document" else super().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key == "document" or super().__contains__(key)


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
        # Every events long-poll reads the job row; its document is the whole workflow (100 kB and
        # more for thousands of tasks): read as text, decoded (with orjson) only if it is used.
        columns = [c for c in jobs.c if c.name != "document"]
        query = sa.select(*columns, sa.cast(jobs.c.document, sa.Text).label("document")).where(jobs.c.id == job_id)
        row = self._conn.execute(query).mappings().first()
        if row is None:
            return None
        out = dict(row)
        return _JobRow(out, out.pop("document"))

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

    def step_counts(self, job_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """For drawing a job's DAG without reading its tasks: each task's own record (id, task,
        is_group, status; one per workflow task) and its instances counted by (task, status)."""
        own = self._conn.execute(
            sa.select(tasks.c.id, tasks.c.task, tasks.c.is_group, tasks.c.status)
            .where(tasks.c.job_id == job_id).where(tasks.c.item_index.is_(None)))
        counts = self._conn.execute(
            sa.select(tasks.c.task, tasks.c.status, sa.func.count()).where(tasks.c.job_id == job_id)
            .where(tasks.c.is_group.is_(False)).group_by(tasks.c.task, tasks.c.status))
        return ([dict(r) for r in own.mappings()],
                [{"task": t, "status": s, "count": int(n)} for t, s, n in counts])

    def last_event_seq(self, job_id: str) -> int:
        """The seq of the job's latest event (0 if none): where a reader that has the job's current
        state starts following its events."""
        query = sa.select(sa.func.coalesce(sa.func.max(job_events.c.seq), 0)).where(job_events.c.job_id == job_id)
        return int(self._conn.execute(query).scalar_one())

    # -- tasks ------------------------------------------------------------------------------

    def insert_tasks(self, rows: list[dict[str, Any]]) -> None:
        insert_many(self._conn, tasks, rows)

    def update_tasks(self, rows: list[dict[str, Any]]) -> None:
        """Batch update by task id; every row must carry the same columns."""
        if rows:
            columns = [k for k in rows[0] if k != "id"]
            raw_many(self._conn, lambda p: f"UPDATE tasks SET {', '.join(f'{_q(c)} = {p(c)}' for c in columns)} "
                     f"WHERE id = {p('id')}", tasks, rows)

    def delete_tasks(self, task_ids: list[str]) -> None:
        if task_ids:
            self._conn.execute(tasks.delete().where(tasks.c.id.in_(task_ids)))

    def tasks_of(self, job_id: str, *, status: str | None = None, after_key: str | None = None,
                 limit: int | None = None) -> list[dict[str, Any]]:
        """Tasks in a stable order — by task name, the task's own record first, then its items by
        index — so that paging with `after_key` (the last key of the previous page) never skips."""
        index = sa.func.coalesce(tasks.c.item_index, -1)
        query = sa.select(tasks).where(tasks.c.job_id == job_id).order_by(tasks.c.task, index)
        if status:
            query = query.where(tasks.c.status == status)
        if after_key:
            name, _, rest = after_key.partition("[")
            after_index = int(rest.rstrip("]")) if rest.rstrip("]").isdigit() else -1
            query = query.where(sa.or_(tasks.c.task > name, sa.and_(tasks.c.task == name, index > after_index)))
        if limit:
            query = query.limit(limit)
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        row = self._conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).mappings().first()
        return dict(row) if row else None

    # -- attempts ---------------------------------------------------------------------------

    def add_attempts(self, rows: list[dict[str, Any]], findings_sets: dict[int, int] | None = None) -> None:
        """New attempts. A row's `findings_set` may be the findings list itself (what allowed the
        placement), stored as the id `findings_sets` maps it to (by `id()`: the policy
        repository's `finding_set_ids`)."""
        if findings_sets:
            rows = [{**r, "findings_set": findings_sets[id(r["findings_set"])]} if r.get("findings_set") else r
                    for r in rows]
        insert_many(self._conn, task_attempts, rows, skip_existing=True)

    def update_attempts(self, rows: list[dict[str, Any]]) -> None:
        """Batch update by (task_id, attempt); rows may carry different columns."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(row), []).append(row)
        for keys, group in groups.items():
            columns = [k for k in keys if k not in ("task_id", "attempt")]
            raw_many(self._conn, lambda p, cols=columns: f"UPDATE task_attempts SET "
                      f"{', '.join(f'{c} = {p(c)}' for c in cols)} "
                      f"WHERE task_id = {p('task_id')} AND attempt = {p('attempt')}", task_attempts, group)

    def attempts_of(self, task_id: str) -> list[dict[str, Any]]:
        query = sa.select(task_attempts).where(task_attempts.c.task_id == task_id).order_by(task_attempts.c.attempt)
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def lost_counts(self, task_ids: list[str]) -> dict[str, int]:
        """Per task, the attempts it lost with their node (Down: "lost"; quarantined or drained past
        its deadline: "evicted"); tasks with none are left out. Read by the primary key's prefix."""
        out: dict[str, int] = {}
        for start in range(0, len(task_ids), 1000):
            chunk = task_ids[start:start + 1000]
            query = (sa.select(task_attempts.c.task_id, sa.func.count())
                     .where(task_attempts.c.task_id.in_(chunk))
                     .where(task_attempts.c.status.in_(LOST_ATTEMPT_STATES))
                     .group_by(task_attempts.c.task_id))
            out.update((task_id, int(n)) for task_id, n in self._conn.execute(query))
        return out

    def lost_total(self, job_id: str) -> int:
        """Every attempt of the job's tasks lost with its node."""
        joined = task_attempts.join(tasks, tasks.c.id == task_attempts.c.task_id)
        query = (sa.select(sa.func.count()).select_from(joined)
                 .where(tasks.c.job_id == job_id).where(task_attempts.c.status.in_(LOST_ATTEMPT_STATES)))
        return int(self._conn.execute(query).scalar_one())

    # -- logs and events --------------------------------------------------------------------

    def add_logs(self, rows: list[dict[str, Any]]) -> None:
        insert_many(self._conn, task_logs, rows, skip_existing=True)

    def logs(self, task_id: str, *, attempt: int | None, after_seq: int, limit: int) -> list[dict[str, Any]]:
        query = (sa.select(task_logs).where(task_logs.c.task_id == task_id).where(task_logs.c.seq > after_seq)
                 .order_by(task_logs.c.seq).limit(limit))
        if attempt is not None:
            query = query.where(task_logs.c.attempt == attempt)
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def add_events(self, rows: list[dict[str, Any]]) -> None:
        insert_many(self._conn, job_events, rows)

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
