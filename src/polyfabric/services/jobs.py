"""Reading jobs and tasks: lists, details, results, change events and logs.

Writes (submit, interventions, reports, scheduling) live in the job runtime; these are the reads
clients make, each checked against the caller's role and domains.
"""

from __future__ import annotations

import builtins
from typing import Any

from polyfabric.domain.access import Principal, authorize
from polyfabric.domain.errors import NotFound, ValidationError
from polyfabric.domain.jobs import WorkflowState
from polyfabric.domain.task_states import TERMINAL
from polyfabric.services.context import ServiceContext
from polyfabric.services.runtime import JobRuntime, job_out

__all__ = ["JobService"]

_TERMINAL = {s.value for s in TERMINAL}
_LOST = ("lost", "evicted")  # attempt statuses of attempts lost with their node
_JOB_STATES = {s.value for s in WorkflowState} | {"paused"}


class JobService:
    def __init__(self, ctx: ServiceContext, runtime: JobRuntime) -> None:
        self._ctx = ctx
        self.runtime = runtime

    def _job(self, uow: Any, principal: Principal, job_id: str) -> dict[str, Any]:
        row = uow.jobs.get_job(job_id)
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        authorize(principal, "job.read", row["domain"])
        return row

    def list(self, principal: Principal, *, status: str | None, domain: str | None, before: str | None,
             limit: int) -> list[dict[str, Any]]:
        authorize(principal, "job.read", domain)
        if status is not None and status not in _JOB_STATES:
            raise ValidationError(f"unknown job status {status!r}; statuses: {', '.join(sorted(_JOB_STATES))}")
        scope = None if "*" in principal.domains else principal.domains
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            before_seq = None
            if before:
                anchor = uow.jobs.get_job(before)
                if anchor is None:
                    raise NotFound(f"no job {before!r} to page from")
                before_seq = anchor["seq"]
            rows = uow.jobs.list_jobs(status=status, domain=domain, domains=scope, before_seq=before_seq,
                                      limit=limit)
            return [job_out(r, uow.jobs.counts(r["id"])) for r in rows]

    def get(self, principal: Principal, job_id: str, task_limit: int = 1000) -> dict[str, Any]:
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            row = self._job(uow, principal, job_id)
            out = job_out(row, uow.jobs.counts(job_id))
            out["tasks"] = self._task_outs(uow, uow.jobs.tasks_of(job_id, limit=task_limit))
            out["lost"] = uow.jobs.lost_total(job_id)
            out["result"] = row["result"]
            out["document"] = row["document"]
            out["policy"] = _policy_summary(uow.policies.decisions(job_id=job_id, limit=10_000))
        return out

    def tasks(self, principal: Principal, job_id: str, *, status: str | None, after: str | None,
              limit: int) -> builtins.list[dict[str, Any]]:  # `list` here is the method above
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            self._job(uow, principal, job_id)
            return self._task_outs(uow, uow.jobs.tasks_of(job_id, status=status, after_key=after, limit=limit))

    def result(self, principal: Principal, job_id: str) -> dict[str, Any]:
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            row = self._job(uow, principal, job_id)
            results: dict[str, Any] = {}
            items: dict[str, dict[int, Any]] = {}
            for t in uow.jobs.tasks_of(job_id):
                if t["item_index"] is not None:
                    items.setdefault(t["task"], {})[t["item_index"]] = t["result"]
                elif not t["is_group"]:
                    results[t["task"]] = t["result"]
            for name, by_index in items.items():
                results[name] = [by_index[i] for i in sorted(by_index)]
        return {"job_id": job_id, "status": row["status"], "result": row["result"], "tasks": results}

    def events(self, principal: Principal, job_id: str, after: int, limit: int = 1000) -> dict[str, Any]:
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            row = self._job(uow, principal, job_id)
            events = uow.jobs.events(job_id, after_seq=after, limit=limit)
            counts = uow.jobs.counts(job_id)
        return {"events": [{k: e[k] for k in ("seq", "at", "task_id", "key", "status", "attempt", "node_id")}
                           for e in events],
                "next": events[-1]["seq"] if events else after, "job": job_out(row, counts)}

    def task(self, principal: Principal, task_id: str) -> dict[str, Any]:
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            t = uow.jobs.get_task(task_id)
            if t is None:
                raise NotFound(f"no task {task_id!r}")
            self._job(uow, principal, t["job_id"])
            attempts = uow.jobs.attempts_of(task_id)
            out = self.task_out(t, lost=sum(1 for a in attempts if a["status"] in _LOST))
            out["attempts"] = attempts
            out["payload"] = t["payload"]
            out["policy"] = _policy_summary(uow.policies.decisions(job_id=t["job_id"], task_id=task_id))
        return out

    def logs(self, principal: Principal, task_id: str, *, attempt: int | None, after: int,
             limit: int = 1000) -> dict[str, Any]:
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            t = uow.jobs.get_task(task_id)
            if t is None:
                raise NotFound(f"no task {task_id!r}")
            self._job(uow, principal, t["job_id"])
            chunks = uow.jobs.logs(task_id, attempt=attempt, after_seq=after, limit=limit)
        wanted = attempt if attempt is not None else t["attempt"]
        finished = t["status"] in _TERMINAL or (wanted < t["attempt"])
        return {"chunks": [{k: c[k] for k in ("seq", "attempt", "stream", "offset", "data")} for c in chunks],
                "next": chunks[-1]["seq"] if chunks else after,
                "done": finished and len(chunks) < limit, "status": t["status"], "attempt": t["attempt"]}

    def _task_outs(self, uow: Any, rows: builtins.list[dict[str, Any]]) -> builtins.list[dict[str, Any]]:
        lost = uow.jobs.lost_counts([t["id"] for t in rows if not t["is_group"]])
        return [self.task_out(t, lost=lost.get(t["id"], 0)) for t in rows]

    def task_out(self, t: dict[str, Any], lost: int = 0) -> dict[str, Any]:
        """`lost`: attempts the task lost with their node (Down, quarantined, drained past a
        deadline), counted apart from `failures`: they use up no retry."""
        return {"id": t["id"], "job_id": t["job_id"], "key": t["key"], "task": t["task"], "index": t["item_index"],
                "is_group": t["is_group"], "status": t["status"], "attempt": t["attempt"], "failures": t["failures"],
                "preemptions": t["preemptions"], "lost": lost, "node_id": t["node_id"], "priority": t["priority"],
                "not_before": t["not_before"], "started_at": t["started_at"], "finished_at": t["finished_at"],
                "result": t["result"], "error": t["error"], "exit_code": t["exit_code"],
                "pending_reason": self.runtime.pending_reasons.get(t["id"])}


def _policy_summary(rows: builtins.list[dict[str, Any]]) -> dict[str, Any]:
    """Which policy versions admitted the job and allowed each placement, and every offer a node
    declined (issue 6): what `job show` and `task show` print."""
    admission = next((r for r in rows if r["kind"] == "admission"), None)
    placements, declines, dry = [], [], []
    for r in rows:
        findings = r["findings"] or []
        if r["kind"] == "placement":
            placements.append({"task_id": r["task_id"], "attempt": r["attempt"], "node_id": r["node_id"],
                               "allowed_by": [f"{f['policy']} v{f['version']}" for f in findings if f["allowed"]]})
        elif r["kind"] == "offer" and not r["allowed"]:
            declines.append({"task_id": r["task_id"], "attempt": r["attempt"], "node_id": r["node_id"],
                             "reason": "; ".join(f["reason"] for f in findings) or "declined",
                             "policy": next((f"{f['policy']} v{f['version']}" for f in findings), None)})
        dry.extend({"task_id": r["task_id"], "node_id": r["node_id"], "policy": f"{f['policy']} v{f['version']}",
                    "scope": f["scope"], "reason": f.get("reason", "")}
                   for f in findings if f.get("dry_run") and not f["allowed"])
    return {"admitted_by": [f"{f['policy']} v{f['version']}" for f in (admission or {}).get("findings", [])
                            if f["allowed"]],
            "placements": placements, "declines": declines, "dry_run": dry}
