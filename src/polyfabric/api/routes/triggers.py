"""Webhook triggers: /v1/triggers (managed with an API token) and /v1/hooks/{id} (called by the
outside world, authenticated by the HMAC signature of the body instead of a token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal
from polyfabric.schemas.base import Request as RequestModel

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["triggers"])


class TriggerIn(RequestModel):
    workflow: dict[str, Any]
    domain: str = Field(min_length=1, max_length=63)
    kind: str = Field(default="webhook", pattern="^webhook$")
    name: str | None = Field(default=None, max_length=64)


def _svc(request: Request) -> Any:
    return request.app.state.services.triggers


@router.post("/triggers", status_code=201)
def create_trigger(body: TriggerIn, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _svc(request).create(caller, document=body.workflow, domain=body.domain, name=body.name)


@router.get("/triggers")
def list_triggers(request: Request, caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    return _svc(request).list(caller)


@router.get("/triggers/{ref}")
def get_trigger(ref: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _svc(request).get(caller, ref)


@router.delete("/triggers/{ref}")
def delete_trigger(ref: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _svc(request).delete(caller, ref)


@router.post("/hooks/{trigger_id}", status_code=201)
async def hook(trigger_id: str, request: Request) -> dict[str, Any]:
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    source = request.client.host if request.client else "unknown"
    return await run_in_threadpool(_svc(request).deliver, trigger_id, body, headers, source)
