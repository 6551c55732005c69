"""The configuration manager: publish, promote, roll back, status, diff; and the agents' fetch/ack call."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from polyfabric.api.auth import SignedCall, principal, signed_call
from polyfabric.api.routes.agent import _parse
from polyfabric.domain.access import Principal
from polyfabric.schemas.config import AgentConfigIn, ConfigPublishIn, ConfigRollbackIn

__all__ = ["agent_router", "router"]

router = APIRouter(prefix="/v1/config", tags=["config"])
agent_router = APIRouter(prefix="/v1/agent", tags=["agent"])


def _svc(request: Request) -> Any:
    return request.app.state.services.config


@router.post("", status_code=201)
def publish(body: ConfigPublishIn, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _svc(request).publish(caller, body.document, body.scope, canary=body.canary, comment=body.comment)


@router.get("")
def list_versions(request: Request, caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    return _svc(request).list(caller)


@router.get("/status")
def status(request: Request, caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    return _svc(request).status(caller)


@router.get("/diff")
def diff(request: Request, v1: int, v2: int, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _svc(request).diff(caller, v1, v2)


@router.post("/promote")
def promote(request: Request, version: int | None = None, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _svc(request).promote(caller, version)


@router.post("/rollback")
def rollback(body: ConfigRollbackIn, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _svc(request).rollback(caller, body.version, body.reason)


@router.get("/{version}")
def show(version: int, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _svc(request).get(caller, version)


@agent_router.post("/config")
async def agent_config(request: Request, call: SignedCall = Depends(signed_call)) -> dict[str, Any]:
    """The agent acknowledges the version it runs (or reports it could not apply one) and gets the
    configuration it should run."""
    payload: AgentConfigIn = _parse(AgentConfigIn, call.body)
    return await run_in_threadpool(
        _svc(request).agent_sync, call.node_id,
        payload.acked.model_dump() if payload.acked else None,
        payload.failed.model_dump() if payload.failed else None)
