"""Artifacts of jobs (services/artifacts.py): list them, download one (streamed from its file)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal
from polyfabric.domain.errors import Conflict

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["artifacts"])


def _service(request: Request) -> Any:
    service = request.app.state.services.artifacts
    if service is None:
        raise Conflict("this coordinator keeps no artifacts")
    return service


@router.get("/jobs/{job_id}/artifacts")
async def job_artifacts(job_id: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    """Every artifact of the job by task and attempt, with size and sha256 (or why it was refused)."""
    return await run_in_threadpool(_service(request).of_job, caller, job_id)


@router.get("/tasks/{task_id}/artifacts/{path:path}", response_model=None, tags=["tasks"])
async def task_artifact(task_id: str, path: str, request: Request, attempt: int | None = Query(default=None, ge=0),
                        caller: Principal = Depends(principal)) -> FileResponse:
    """The bytes of one artifact (of `attempt`, default the latest attempt that left it), streamed;
    its sha256 in the `x-polyfabric-sha256` header."""
    meta, file = await run_in_threadpool(_service(request).locate, caller, task_id, path, attempt)
    return FileResponse(file, media_type="application/octet-stream", filename=meta["path"].rsplit("/", 1)[-1],
                        headers={"x-polyfabric-sha256": meta["sha256"], "x-polyfabric-attempt": str(meta["attempt"])})
