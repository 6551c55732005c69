"""Garbage collection on the coordinator: finished jobs expire after their ttl.

A job is a candidate only once it is finished (succeeded, failed or cancelled) and not held live by
the job runtime; it expires at `finished_at + ttl` (the workflow's `ttl:`, else the coordinator's
default; `ttl: never` keeps it). Until then a failed or cancelled job stays retryable with all its
data. When it expires its task rows, attempts, logs and change events go (and with them, by
cascade, its checkpoints and other per-task rows), except the tasks whose outputs the workflow
keeps (`keep: true` on a task, or `keep: [names]`): those keep their row (result), attempts and
logs, and the job row stays as their anchor, marked collected. A job with nothing kept goes whole.

Safety: the delete runs in a fenced transaction that first re-reads the job as still finished at
the same `finished_at` (FOR UPDATE on PostgreSQL), while the runtime refuses to revive it (`job
retry`) until the delete is done; a job revived a moment earlier is live and is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polyfabric.domain.access import Principal, authorize
from polyfabric.services.context import ServiceContext
from polyfabric.services.ports import AuditEntry
from polyfabric.services.runtime import JobRuntime
from polyfabric.workflow.spec import retention_of

__all__ = ["Collector", "GcService", "checkpoint_files"]

log = logging.getLogger("polyfabric.gc")

Collector = Callable[[Any, str, list[str], bool], Callable[[], None] | None]
"""Called inside the collecting transaction with (uow, job id, task ids going, whole job going):
how other parts (artifacts, checkpoint files) drop what they keep for those tasks. It may return
an action to run once the transaction has committed (removing files: never before the rows go)."""


def checkpoint_files(directory: Callable[[], Path | None]) -> Collector:
    """The checkpoint files of the tasks that go (their rows go by cascade with the task rows)."""

    def collect(uow: Any, _job_id: str, task_ids: list[str], _whole: bool) -> Callable[[], None] | None:
        root = directory()
        if root is None or not task_ids:
            return None
        paths = [root / row["path"] for task_id in task_ids for row in uow.checkpoints.of_task(task_id)]

        def remove() -> None:
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

        return remove if paths else None

    return collect

BATCH = 500


class GcService:
    def __init__(self, ctx: ServiceContext, runtime: JobRuntime, *, default_ttl_s: float = 7 * 86400.0,
                 forget: Callable[[], int] | None = None) -> None:
        self._ctx = ctx
        self._runtime = runtime
        self.default_ttl_s = default_ttl_s
        self.collectors: list[Collector] = []
        self._forget = forget  # e.g. old webhook deliveries, once a pass

    def plan(self, principal: Principal, limit: int = 1000) -> dict[str, Any]:
        """What a pass would collect now (`gc --dry-run`): nothing is changed."""
        authorize(principal, "gc.read")
        return {"dry_run": True, "default_ttl_s": self.default_ttl_s,
                "jobs": self._expired(self._ctx.clock.now(), limit, footprint=True)}

    def run(self, principal: Principal | None = None, limit: int = 1000) -> dict[str, Any]:
        """Collect what has expired (an operator's `gc`, or the controller with no principal)."""
        if principal is not None:
            authorize(principal, "gc.run")
        actor = principal.actor if principal is not None else "system:gc"
        now = self._ctx.clock.now()
        done = []
        for item in self._expired(now, limit, footprint=True):
            if self._collect(item, now):
                done.append(item)
        if self._forget is not None:
            try:
                self._forget()
            except Exception:
                log.exception("forgetting old webhook deliveries failed")
        if done:
            with self._ctx.store.unit_of_work() as uow:
                uow.audit.append([AuditEntry(
                    actor=actor, action="gc.collected", subject="gc:jobs", cause="ttl expired",
                    details={"jobs": [{"job": d["job_id"], "name": d["name"], "kept": d["kept"]} for d in done[:200]],
                             "count": len(done),
                             "tasks": sum(d["footprint"]["tasks"] for d in done),
                             "logs": sum(d["footprint"]["logs"] for d in done)})], now)
                uow.commit()
        return {"dry_run": False, "default_ttl_s": self.default_ttl_s, "jobs": done}

    def _expired(self, now: float, limit: int, *, footprint: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            while len(out) < limit:
                rows = uow.retention.finished_jobs(finished_before=now, after_seq=after, limit=BATCH)
                if not rows:
                    break
                after = rows[-1]["seq"]
                for row in rows:
                    ttl, kept_names = retention_of(row["document"])
                    ttl = self.default_ttl_s if ttl is None else ttl
                    if math.isinf(ttl) or row["finished_at"] + ttl > now or self._runtime.holds(row["id"]):
                        continue
                    keys = uow.retention.task_keys(row["id"])
                    kept = sorted(k for k in keys.values() if k.split("[", 1)[0] in kept_names)
                    item = {"job_id": row["id"], "name": row["name"], "domain": row["domain"],
                            "status": row["status"], "finished_at": row["finished_at"], "ttl_s": ttl,
                            "expired_at": row["finished_at"] + ttl, "kept": kept,
                            "action": "trim" if kept else "delete"}
                    if footprint:
                        item["footprint"] = uow.retention.footprint(row["id"])
                    out.append(item)
                    if len(out) >= limit:
                        break
        return out

    def _collect(self, item: dict[str, Any], now: float) -> bool:
        job_id = item["job_id"]
        if not self._runtime.begin_collect(job_id):
            return False
        try:
            with self._ctx.store.unit_of_work() as uow:
                self._ctx.leadership.fence(uow)
                if not uow.retention.still_finished(job_id, item["finished_at"]):
                    return False
                keys = uow.retention.task_keys(job_id)
                kept = set(item["kept"])
                going = [task_id for task_id, key in keys.items() if key not in kept]
                whole = not kept
                after = [collector(uow, job_id, going, whole) for collector in self.collectors]
                uow.retention.delete_tasks(going)
                if whole:
                    uow.retention.delete_job(job_id)
                else:
                    uow.retention.delete_events(job_id)
                    uow.retention.mark_collected(job_id, now, sorted(kept))
                uow.commit()
            for action in after:
                if action is not None:
                    try:
                        action()
                    except Exception:
                        log.exception("removing what job %s kept outside the store failed", job_id)
            return True
        except Exception:
            log.exception("collecting job %s failed; the next pass tries again", job_id)
            return False
        finally:
            self._runtime.end_collect(job_id)
