"""Elastic node pools and per-domain node quotas (issue 7; services/pools.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal
from polyfabric.domain.errors import ValidationError
from polyfabric.domain.jobs import parse_duration
from polyfabric.domain.resources import parse_bytes, parse_cpu
from polyfabric.schemas.pools import PoolCreate, PoolUpdate, QuotaSet
from polyfabric.services.pools import PoolService

__all__ = ["router"]

router = APIRouter(tags=["pools"])

_SSH_KEYS = {"hosts", "user", "key_file", "known_hosts", "python", "base_dir", "agent_args"}


def _pools(request: Request) -> PoolService:
    return request.app.state.services.pools


def _duration(name: str, value: str | float) -> float:
    try:
        return parse_duration(value)
    except (ValueError, ValidationError) as exc:
        raise ValidationError(f"{name}: {exc}") from None


@router.post("/v1/pools", status_code=201)
def create_pool(body: PoolCreate, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    unknown = set(body.provider_config) - _SSH_KEYS
    if unknown:
        raise ValidationError(f"provider_config: unknown field(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(_SSH_KEYS))}")
    agent_args = body.provider_config.get("agent_args", [])
    if not isinstance(agent_args, list) or not all(isinstance(a, str) for a in agent_args):
        raise ValidationError("provider_config.agent_args must be a list of strings")
    return _pools(request).create(
        caller, name=body.name, domain=body.domain, provider=body.provider, min_nodes=body.min, max_nodes=body.max,
        labels=body.labels, idle_s=_duration("idle", body.idle),
        scale_up_after_s=_duration("scale_up_after", body.scale_up_after),
        start_timeout_s=_duration("start_timeout", body.start_timeout), slots=body.slots,
        cpu_millis=parse_cpu(body.cpu), memory_bytes=parse_bytes(body.memory), gpus=body.gpus,
        provider_config=body.provider_config)


@router.get("/v1/pools")
def list_pools(request: Request, caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    return _pools(request).list(caller)


@router.get("/v1/pools/{name}")
def show_pool(name: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _pools(request).show(caller, name)


@router.patch("/v1/pools/{name}")
def update_pool(name: str, body: PoolUpdate, request: Request,
                caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _pools(request).update(caller, name, paused=body.paused, min_nodes=body.min, max_nodes=body.max,
                                  idle_s=_duration("idle", body.idle) if body.idle is not None else None)


@router.delete("/v1/pools/{name}", status_code=204)
def remove_pool(name: str, request: Request, caller: Principal = Depends(principal)) -> None:
    _pools(request).remove(caller, name)


@router.get("/v1/quotas")
def list_quotas(request: Request, caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    return _pools(request).quotas(caller)


@router.put("/v1/quotas/{domain}")
def set_quota(domain: str, body: QuotaSet, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return _pools(request).set_quota(caller, domain, body.max_nodes)
