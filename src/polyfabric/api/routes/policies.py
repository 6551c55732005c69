"""Policies: apply (a new version), list, show, remove, and test without submitting (issue 6)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal
from polyfabric.schemas.policies import PolicyApplyIn, PolicyRemoveIn, PolicyTestIn

__all__ = ["router"]

router = APIRouter(prefix="/v1/policies", tags=["policies"])


@router.get("")
def list_policies(request: Request, caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    return request.app.state.services.policies.list(caller)


@router.post("", status_code=201)
def apply_policy(body: PolicyApplyIn, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return request.app.state.services.policies.apply(caller, body.policy)


@router.post("/test")
async def test_policies(body: PolicyTestIn, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return await run_in_threadpool(
        request.app.state.services.policies.test, caller, policies=body.policies, workflow=body.workflow,
        params=body.params, domain=body.domain, nodes=body.nodes, include_current=body.include_current)


@router.get("/{name}")
def show_policy(name: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return request.app.state.services.policies.show(caller, name)


@router.delete("/{name}")
def remove_policy(name: str, request: Request, body: PolicyRemoveIn | None = None,
                  caller: Principal = Depends(principal)) -> dict[str, Any]:
    return request.app.state.services.policies.remove(caller, name, body.reason if body else "")
