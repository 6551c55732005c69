"""The agent protocol. Every call is signed by the node's key; registration proves possession of
the key it registers (the signature must verify under the key in the body)."""

from __future__ import annotations

import time
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError
from starlette.concurrency import run_in_threadpool

from polyfabric.api.auth import SignedCall, signed_call, signed_url
from polyfabric.api.errors import describe_errors
from polyfabric.domain.errors import NotAuthenticated, ValidationError
from polyfabric.domain.ids import node_id_from_public_key
from polyfabric.domain.resources import Resources
from polyfabric.schemas.agent import (
    HeartbeatIn,
    HeartbeatOut,
    HelloIn,
    LeaseIn,
    NodeDeclaration,
    RegisterIn,
    RegisterOut,
    ReportIn,
)
from polyfabric.security.http_signatures import key_id_from_headers, verify_request
from polyfabric.security.keys import b64d
from polyfabric.services.nodes import Registration

__all__ = ["router"]

router = APIRouter(prefix="/v1/agent", tags=["agent"])

M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], body: bytes) -> M:
    """Agent routes read the raw body (the signature covers it), so they validate it themselves."""
    try:
        return model.model_validate(orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"malformed JSON: {exc}") from None
    except PydanticError as exc:
        raise ValidationError(describe_errors(list(exc.errors()))) from None


def _registration(decl: NodeDeclaration, public_key: bytes) -> Registration:
    try:
        capacity = Resources.from_dict(decl.capacity)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"node.capacity is malformed: {exc}") from None
    return Registration(public_key=public_key, name=decl.name, labels=decl.labels, capacity=capacity,
                        facts=decl.facts, agent_version=decl.agent_version)


@router.post("/register", status_code=201, response_model=RegisterOut)
async def register(request: Request) -> RegisterOut:
    services = request.app.state.services
    body = await request.body()
    payload: RegisterIn = _parse(RegisterIn, body)
    try:
        public_key = b64d(payload.public_key)
        node_id = node_id_from_public_key(public_key)
    except (ValueError, ValidationError) as exc:
        raise ValidationError(f"public_key is not a base64url Ed25519 key: {exc}") from None
    claimed = key_id_from_headers(dict(request.headers))
    if claimed != node_id:
        raise NotAuthenticated(
            f"the request is signed as {claimed!r}, but the key in the body belongs to {node_id}")
    verify_request(method=request.method, url=signed_url(request), headers=dict(request.headers), body=body,
                   resolve_key=lambda key_id: public_key if key_id == node_id else None,
                   now=services.ctx.clock.now())
    node = await run_in_threadpool(services.nodes.register, _registration(payload.node, public_key),
                                   payload.join_token)
    return RegisterOut(node_id=node.id, name=node.name, domain=node.domain, state=node.state.value,
                       heartbeat_interval_s=services.ctx.detector.heartbeat_interval)


@router.post("/hello", response_model=RegisterOut)
async def hello(request: Request, call: SignedCall = Depends(signed_call)) -> RegisterOut:
    services = request.app.state.services
    payload: HelloIn = _parse(HelloIn, call.body)
    entry = services.nodes.resolve_key(call.node_id)
    node = await run_in_threadpool(services.nodes.hello, call.node_id, _registration(payload.node, entry))
    return RegisterOut(node_id=node.id, name=node.name, domain=node.domain, state=node.state.value,
                       heartbeat_interval_s=services.ctx.detector.heartbeat_interval)


@router.post("/heartbeat", response_model=HeartbeatOut)
async def heartbeat(request: Request, call: SignedCall = Depends(signed_call)) -> HeartbeatOut:
    services = request.app.state.services
    payload: HeartbeatIn = _parse(HeartbeatIn, call.body)
    entry = services.nodes.heartbeat(call.node_id, payload.telemetry, payload.health)
    state = entry.state
    if services.nodes.needs_settle(entry):
        state = (await run_in_threadpool(services.nodes.settle, call.node_id)).state
    return HeartbeatOut(state=state.value, heartbeat_interval_s=services.ctx.detector.heartbeat_interval)


@router.post("/lease")
async def lease(request: Request, call: SignedCall = Depends(signed_call)) -> dict[str, Any]:
    """Long-poll for work: answers at once when this node has leases or cancels, else waits."""
    services = request.app.state.services
    notifier = request.app.state.notifier
    payload: LeaseIn = _parse(LeaseIn, call.body)
    key = f"node:{call.node_id}"
    known = None if payload.known is None else {(k.task_id, k.attempt) for k in payload.known}
    deadline = time.monotonic() + min(payload.wait_s, 30.0)
    while True:
        if not services.ctx.leadership.serving():  # stopped leading during the long-poll
            raise services.ctx.leadership.not_leader()
        seen = notifier.version(key)
        leases, cancels = services.runtime.leases_for(call.node_id, known)
        remaining = deadline - time.monotonic()
        if leases or cancels or remaining <= 0 or notifier.closed or await request.is_disconnected():
            return {"leases": leases, "cancel": cancels}
        await notifier.wait(key, seen, min(remaining, 5.0))


@router.post("/report")
async def report(request: Request, call: SignedCall = Depends(signed_call)) -> dict[str, Any]:
    """What happened on this node: started, finished, cancelled, rejected attempts and log chunks."""
    services = request.app.state.services
    payload: ReportIn = _parse(ReportIn, call.body)
    # The runtime wakes the scheduler itself when a report frees slots (before its commit, so that
    # the placements they allow go into the same commit).
    return await run_in_threadpool(
        services.runtime.report, call.node_id, [e.model_dump() for e in payload.events],
        [c.model_dump() for c in payload.logs], [r.model_dump() for r in payload.running])
