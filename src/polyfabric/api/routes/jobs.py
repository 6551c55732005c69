"""Jobs: submit, list, inspect, follow and intervene; tasks and their logs; semaphores, limits."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal, authorize
from polyfabric.domain.errors import ValidationError
from polyfabric.schemas.base import Request as RequestModel

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["jobs"])


class SubmitIn(RequestModel):
    workflow: dict[str, Any]
    params: dict[str, Any] = Field(default_factory=dict)
    domain: str = Field(min_length=1, max_length=63)


class InterveneIn(RequestModel):
    reason: str = Field(default="", max_length=500)
    from_failed: bool = Field(default=False, description="retry: only the failed tasks and what they held up")


class PriorityIn(RequestModel):
    priority: int
    reason: str = Field(default="", max_length=500)


class SemaphoreIn(RequestModel):
    size: int = Field(ge=0)


class LimitsIn(RequestModel):
    global_max: int | None = Field(default=None, ge=0)
    per_domain: dict[str, int] = Field(default_factory=dict)
    per_node: int | None = Field(default=None, ge=0)


def _services(request: Request) -> Any:
    return request.app.state.services


async def _long_poll(request: Request, key: str, wait_s: float, read: Any, has_news: Any) -> Any:
    """Read; if nothing new, wait for `key` to change (or the deadline) and read again."""
    notifier = request.app.state.notifier
    deadline = time.monotonic() + max(0.0, min(wait_s, 30.0))
    while True:
        seen = notifier.version(key)
        answer = await run_in_threadpool(read)
        remaining = deadline - time.monotonic()
        if has_news(answer) or remaining <= 0 or notifier.closed:
            return answer
        await notifier.wait(key, seen, remaining)


@router.post("/jobs", status_code=201)
def submit(body: SubmitIn, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _services(request).runtime.submit(caller, body.workflow, body.params, body.domain)


@router.get("/jobs")
def list_jobs(request: Request, status: str | None = None, domain: str | None = None, after: str | None = None,
              limit: int = Query(default=100, ge=1, le=1000),
              caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    return _services(request).jobs.list(caller, status=status, domain=domain, before=after, limit=limit)


@router.get("/jobs/{job_id}")
def get_job(job_id: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    services = _services(request)
    out = services.jobs.get(caller, job_id)
    if services.artifacts is not None:  # {"files", "bytes", "refused"}: details in GET /v1/jobs/{id}/artifacts
        out["artifacts"] = services.artifacts.counts(job_id)
    return out


@router.get("/jobs/{job_id}/tasks")
def job_tasks(job_id: str, request: Request, status: str | None = None, after: str | None = None,
              limit: int = Query(default=1000, ge=1, le=10000),
              caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    return _services(request).jobs.tasks(caller, job_id, status=status, after=after, limit=limit)


@router.get("/jobs/{job_id}/result")
def job_result(job_id: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _services(request).jobs.result(caller, job_id)


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request, after: int = 0, wait_s: float = Query(default=0, ge=0, le=30),
                     caller: Principal = Depends(principal)) -> dict[str, Any]:
    jobs = _services(request).jobs
    final = {"succeeded", "failed", "cancelled"}
    return await _long_poll(request, f"job:{job_id}", wait_s, lambda: jobs.events(caller, job_id, after),
                            lambda a: bool(a["events"]) or a["job"]["status"] in final)


@router.post("/jobs/{job_id}/priority")
def set_priority(job_id: str, body: PriorityIn, request: Request,
                 caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _services(request).runtime.intervene(caller, job_id, "priority", body.reason, priority=body.priority)


@router.post("/jobs/{job_id}/{action}")
def intervene(job_id: str, action: str, request: Request, body: InterveneIn | None = None,
              caller: Principal = Depends(principal)) -> dict[str, Any]:
    if action not in ("pause", "resume", "cancel", "retry"):
        raise ValidationError(f"unknown job action {action!r}; actions: pause, resume, cancel, retry, priority")
    if body is not None and body.from_failed and action != "retry":
        raise ValidationError(f"from_failed applies to retry, not to {action}")
    return _services(request).runtime.intervene(caller, job_id, action, body.reason if body else "",
                                                from_failed=bool(body and body.from_failed))


@router.get("/tasks/{task_id}", tags=["tasks"])
def get_task(task_id: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _services(request).jobs.task(caller, task_id)


@router.get("/tasks/{task_id}/logs", tags=["tasks"])
async def task_logs(task_id: str, request: Request, attempt: int | None = None, after: int = 0,
                    wait_s: float = Query(default=0, ge=0, le=30),
                    caller: Principal = Depends(principal)) -> dict[str, Any]:
    jobs = _services(request).jobs
    return await _long_poll(request, f"task:{task_id}", wait_s,
                            lambda: jobs.logs(caller, task_id, attempt=attempt, after=after),
                            lambda a: bool(a["chunks"]) or a["done"])


@router.get("/semaphores", tags=["limits"])
def list_semaphores(request: Request, caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    authorize(caller, "job.read")
    runtime = _services(request).runtime
    use = runtime.semaphore_use()
    return [{"name": n, "size": s, "in_use": use.get(n, 0)} for n, s in sorted(runtime.limits().semaphores.items())]


@router.put("/semaphores/{name}", tags=["limits"])
def set_semaphore(name: str, body: SemaphoreIn, request: Request,
                  caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _services(request).runtime.set_semaphore(caller, name, body.size)


@router.get("/limits", tags=["limits"])
def get_limits(request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    authorize(caller, "job.read")
    limits = _services(request).runtime.limits()
    return {"global_max": limits.global_max, "per_domain": dict(limits.per_domain), "per_node": limits.per_node}


@router.put("/limits", tags=["limits"])
def set_limits(body: LimitsIn, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _services(request).runtime.set_limits(caller, body.global_max, body.per_domain, body.per_node)
