"""The agent protocol: register, hello, heartbeat. Every call is signed with the node's key
(RFC 9421 HTTP message signatures over method, target URI and content digest)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from polyfabric.schemas.base import Request, Response

__all__ = ["HeartbeatIn", "HeartbeatOut", "HelloIn", "NodeDeclaration", "RegisterIn", "RegisterOut"]


class NodeDeclaration(Request):
    name: str = Field(min_length=1, max_length=64)
    labels: dict[str, str] = Field(default_factory=dict)
    capacity: dict[str, Any]
    facts: dict[str, Any] = Field(default_factory=dict)
    agent_version: str = Field(default="", max_length=32)


class RegisterIn(Request):
    join_token: str = Field(min_length=1, max_length=200)
    public_key: str = Field(description="the node's Ed25519 public key, base64url, 32 bytes raw")
    node: NodeDeclaration


class HelloIn(Request):
    node: NodeDeclaration


class RegisterOut(Response):
    node_id: str
    name: str
    domain: str
    state: str
    heartbeat_interval_s: float


class HeartbeatIn(Request):
    telemetry: dict[str, Any] = Field(default_factory=dict)
    health: list[dict[str, Any]] | None = None
    seq: int = 0


class HeartbeatOut(Response):
    state: str
    heartbeat_interval_s: float
