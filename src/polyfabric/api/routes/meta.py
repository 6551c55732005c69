"""Liveness of the coordinator itself and who-am-I."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from polyfabric import __version__
from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz", tags=["meta"], summary="Is the coordinator serving? (no authentication)")
async def healthz(request: Request) -> dict[str, Any]:
    """`role`: leader, promoting (elected, rebuilding its state) or follower; `leader`: the
    leader's advertised URL when known; `epoch`: the leadership epoch."""
    return {"ok": True, "version": __version__, **request.app.state.services.ctx.leadership.status()}


@router.get("/v1/whoami", tags=["meta"])
async def whoami(caller: Principal = Depends(principal)) -> dict[str, Any]:
    return {"id": caller.id, "name": caller.name, "role": caller.role.value, "domains": list(caller.domains)}
