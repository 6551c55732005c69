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
from polyfabric.domain.policy import answer_bytes
from polyfabric.domain.resources import Resources
from polyfabric.observability.metrics import HEARTBEATS_RECEIVED
from polyfabric.schemas.agent import (
    ArtifactPartIn,
    CheckpointFetchIn,
    CheckpointPartIn,
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
from polyfabric.security.keys import b64d, public_key_from_raw
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
    handling = time.perf_counter()  # the agent subtracts this handler's time from its round trip (topology)
    payload: HeartbeatIn = _parse(HeartbeatIn, call.body)
    coords = services.topology.parse(payload.coords)  # a malformed coordinate is a 400, before anything
    entry = services.nodes.heartbeat(call.node_id, payload.telemetry, payload.health)
    HEARTBEATS_RECEIVED.inc()
    state = entry.state
    if services.nodes.needs_settle(entry):
        state = (await run_in_threadpool(services.nodes.settle, call.node_id)).state
    topo = services.topology.observe(call.node_id, coords, payload.rtt_s, payload.echo) \
        if coords is not None or payload.echo is not None else {}
    if topo:
        topo["handled_s"] = round(time.perf_counter() - handling, 6)
    return HeartbeatOut(state=state.value, heartbeat_interval_s=services.ctx.detector.heartbeat_interval, **topo)


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
        asks = services.runtime.checkpoint_asks_for(call.node_id)  # checkpoint and stop (drains)
        remaining = deadline - time.monotonic()
        if leases and services.secrets is not None and any(lease.get("secret_refs") for lease in leases):
            # Sealed to this node for each attempt (issue 6); only ever in the lease to the node running it.
            leases = await run_in_threadpool(services.secrets.seal_leases, call.node_id, leases)
        if leases or cancels or asks or remaining <= 0 or notifier.closed or await request.is_disconnected():
            return {"leases": leases, "cancel": cancels, **({"checkpoint": asks} if asks else {})}
        await notifier.wait(key, seen, min(remaining, 5.0))


@router.post("/report")
async def report(request: Request, call: SignedCall = Depends(signed_call)) -> dict[str, Any]:
    """What happened on this node: started, finished, cancelled, rejected attempts and log chunks."""
    services = request.app.state.services
    payload: ReportIn = _parse(ReportIn, call.body)
    # The runtime wakes the scheduler itself when a report frees slots (before its commit, so that
    # the placements they allow go into the same commit).
    events = [e.model_dump() for e in payload.events]
    for event in events:
        if event["type"] == "declined":  # the owner's answer to an offer (issue 6): check its own signature
            event["signature_valid"] = _answer_signed(services, call.node_id, event)
    answer = await run_in_threadpool(
        services.runtime.report, call.node_id, events,
        [c.model_dump() for c in payload.logs], [r.model_dump() for r in payload.running])
    # Signed result manifests (issue 6) are checked and stored by the runtime, in the results' own commit.
    return answer


@router.post("/checkpoint")
async def checkpoint_part(request: Request, call: SignedCall = Depends(signed_call)) -> dict[str, Any]:
    """One part of a checkpoint of a running attempt; 409 when the attempt is not current (fenced)."""
    services = request.app.state.services
    payload: CheckpointPartIn = _parse(CheckpointPartIn, call.body)
    return await run_in_threadpool(services.checkpoints.upload, call.node_id, payload.model_dump())


@router.post("/checkpoint/fetch")
async def checkpoint_fetch(request: Request, call: SignedCall = Depends(signed_call)) -> dict[str, Any]:
    """A part of the task's latest checkpoint, for the node holding its current attempt."""
    services = request.app.state.services
    payload: CheckpointFetchIn = _parse(CheckpointFetchIn, call.body)
    return await run_in_threadpool(services.checkpoints.fetch, call.node_id, payload.model_dump())


@router.post("/artifact")
async def artifact_part(request: Request, call: SignedCall = Depends(signed_call)) -> dict[str, Any]:
    """One part of an artifact of an ending attempt (services/artifacts.py); 409 when fenced."""
    services = request.app.state.services
    payload: ArtifactPartIn = _parse(ArtifactPartIn, call.body)
    return await run_in_threadpool(services.artifacts.upload, call.node_id, payload.model_dump())


def _answer_signed(services: Any, node_id: str, event: dict[str, Any]) -> bool:
    """Does the decline carry a valid Ed25519 signature of its answer by this node's key, for this
    attempt? (The report itself is signed too; this one stays checkable from the audit chain.)"""
    answer, signature = event.get("answer"), event.get("signature")
    if not isinstance(answer, dict) or not signature:
        return False
    if (answer.get("node_id"), answer.get("task_id"), answer.get("attempt")) != (
            node_id, event["task_id"], event["attempt"]):
        return False
    try:
        key = public_key_from_raw(services.nodes.resolve_key(node_id))
        key.verify(b64d(signature), answer_bytes(answer))
    except Exception:
        return False
    return True
