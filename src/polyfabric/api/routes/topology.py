"""Topology: the region/zone/rack tree, measured network coordinates and estimated round trips."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal

__all__ = ["router"]

router = APIRouter(prefix="/v1/topology", tags=["topology"])


@router.get("")
async def topology(request: Request, domain: str | None = None,
                   caller: Principal = Depends(principal)) -> dict[str, Any]:
    """The tree: counts by state, capacity and free capacity at every level (Active nodes only count
    as free)."""
    return await run_in_threadpool(request.app.state.services.topology.tree, caller, domain=domain)


@router.get("/coordinates")
async def coordinates(request: Request, domain: str | None = None,
                      caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    return await run_in_threadpool(request.app.state.services.topology.coordinates, caller, domain=domain)


@router.get("/rtt")
async def rtt(request: Request, from_: str = Query(alias="from", min_length=1, max_length=64),
              to: str = Query(min_length=1, max_length=64),
              caller: Principal = Depends(principal)) -> dict[str, Any]:
    """The round trip the two nodes' coordinates estimate (`?from=A&to=B`, ids or names)."""
    return await run_in_threadpool(request.app.state.services.topology.rtt, caller, from_, to)
