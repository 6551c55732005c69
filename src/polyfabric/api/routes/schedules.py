"""Cron schedules: /v1/schedules (services/schedules.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal
from polyfabric.schemas.base import Request as RequestModel

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["schedules"])


class ScheduleIn(RequestModel):
    workflow: dict[str, Any]
    params: dict[str, Any] = Field(default_factory=dict)
    domain: str = Field(min_length=1, max_length=63)
    cron: str = Field(min_length=1, max_length=200)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    concurrency: str = Field(default="allow", max_length=16)
    catch_up: int = Field(default=0, ge=0, le=100)
    name: str | None = Field(default=None, max_length=64)


def _svc(request: Request) -> Any:
    return request.app.state.services.schedules


@router.post("/schedules", status_code=201)
def create_schedule(body: ScheduleIn, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _svc(request).create(caller, document=body.workflow, params=body.params, domain=body.domain,
                                cron=body.cron, timezone=body.timezone, concurrency=body.concurrency,
                                catch_up=body.catch_up, name=body.name)


@router.get("/schedules")
def list_schedules(request: Request, caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    return _svc(request).list(caller)


@router.get("/schedules/{ref}")
def get_schedule(ref: str, request: Request, fires: int = Query(default=20, ge=0, le=1000),
                 caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _svc(request).get(caller, ref, fires=fires)


@router.post("/schedules/{ref}/pause")
def pause_schedule(ref: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _svc(request).set_paused(caller, ref, True)


@router.post("/schedules/{ref}/resume")
def resume_schedule(ref: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _svc(request).set_paused(caller, ref, False)


@router.delete("/schedules/{ref}")
def delete_schedule(ref: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _svc(request).delete(caller, ref)
