"""Nodes on the wire."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from polyfabric.domain.nodes import Node
from polyfabric.schemas.base import Request, Response

__all__ = ["NodeAction", "NodeOut", "node_out"]


class NodeOut(Response):
    id: str
    name: str
    domain: str
    state: str
    state_since: float
    resume_state: str | None = None
    revoked: bool
    labels: dict[str, str]
    topology: dict[str, str]
    capacity: dict[str, Any]
    registered_at: float
    last_heartbeat_at: float | None
    heartbeat_age_s: float | None = None
    telemetry: dict[str, Any]
    health: list[dict[str, Any]]
    conditions: list[dict[str, Any]]
    agent_version: str
    facts: dict[str, Any] | None = None
    drain_deadline: float | None = None
    quarantine: dict[str, Any] | None = None


class NodeAction(Request):
    reason: str = Field(default="", max_length=500)
    deadline_s: float | None = Field(default=None, ge=0, le=10 * 365 * 86400)  # drain only


def node_out(node: Node, now: float, facts: dict[str, Any] | None = None) -> NodeOut:
    age = now - node.last_heartbeat_at if node.last_heartbeat_at is not None else None
    return NodeOut(
        id=node.id, name=node.name, domain=node.domain, state=node.state.value,
        state_since=node.state_since, resume_state=node.resume_state.value if node.resume_state else None,
        revoked=node.revoked, labels=node.labels, topology=node.topology,
        capacity=node.capacity.to_dict(), registered_at=node.registered_at,
        last_heartbeat_at=node.last_heartbeat_at, heartbeat_age_s=round(age, 3) if age is not None else None,
        telemetry=node.telemetry, health=node.health, conditions=node.conditions,
        agent_version=node.agent_version, facts=facts, drain_deadline=node.drain_deadline,
        quarantine=node.quarantine,
    )
