"""Nodes: listing, detail and lifecycle actions by operators."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal
from polyfabric.domain.errors import ValidationError
from polyfabric.schemas.nodes import NodeAction, NodeOut, node_out

__all__ = ["router"]

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])

_VERBS = ("cordon", "uncordon", "suspend", "resume", "drain", "retire", "quarantine")


def _labels(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationError(f"label filter {item!r} must look like key=value")
        out[key] = value
    return out


@router.get("", response_model=list[NodeOut])
def list_nodes(request: Request, state: str | None = None, domain: str | None = None,
               label: list[str] = Query(default=[]), after: str | None = None,
               limit: int = Query(default=500, ge=1, le=5000),
               caller: Principal = Depends(principal)) -> list[NodeOut]:
    services = request.app.state.services
    nodes = services.nodes.list(caller, state=state, domain=domain, label=_labels(label), after=after,
                                limit=limit)
    now = services.ctx.clock.now()
    return [node_out(n, now) for n in nodes]


@router.get("/{ref}", response_model=NodeOut)
def get_node(ref: str, request: Request, caller: Principal = Depends(principal)) -> NodeOut:
    services = request.app.state.services
    node, facts = services.nodes.get(caller, ref)
    return node_out(node, services.ctx.clock.now(), facts)


@router.post("/{ref}/revoke", response_model=NodeOut)
def revoke_node(ref: str, request: Request, body: NodeAction | None = None,
                caller: Principal = Depends(principal)) -> NodeOut:
    services = request.app.state.services
    node = services.nodes.revoke(caller, ref, body.reason if body else "")
    return node_out(node, services.ctx.clock.now())


@router.post("/{ref}/{verb}", response_model=NodeOut)
def node_action(ref: str, verb: str, request: Request, body: NodeAction | None = None,
                caller: Principal = Depends(principal)) -> NodeOut:
    if verb not in _VERBS:
        raise ValidationError(f"unknown node action {verb!r}; actions: {', '.join(_VERBS)}, revoke")
    services = request.app.state.services
    node = services.nodes.act(caller, ref, verb, body.reason if body else "",
                              deadline_s=body.deadline_s if body else None)
    return node_out(node, services.ctx.clock.now())
