"""Garbage collection: GET /v1/gc (what would go now), POST /v1/gc (collect now)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["gc"])


@router.get("/gc")
def gc_plan(request: Request, limit: int = Query(default=1000, ge=1, le=10000),
            caller: Principal = Depends(principal)) -> dict[str, Any]:
    return request.app.state.services.gc.plan(caller, limit=limit)


@router.post("/gc")
def gc_run(request: Request, limit: int = Query(default=1000, ge=1, le=10000),
           caller: Principal = Depends(principal)) -> dict[str, Any]:
    return request.app.state.services.gc.run(caller, limit=limit)
