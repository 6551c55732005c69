"""The agent protocol: register, hello, heartbeat. Every call is signed with the node's key
(RFC 9421 HTTP message signatures over method, target URI and content digest)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from polyfabric.schemas.base import Request, Response

__all__ = [
    "AttemptRef",
    "HeartbeatIn",
    "HeartbeatOut",
    "HelloIn",
    "LeaseIn",
    "LogChunk",
    "NodeDeclaration",
    "RegisterIn",
    "RegisterOut",
    "ReportEvent",
    "ReportIn",
]


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


class AttemptRef(Request):
    task_id: str = Field(max_length=64)
    attempt: int = Field(ge=0)


class LeaseIn(Request):
    wait_s: float = Field(default=10.0, ge=0, le=30)
    free_slots: int | None = Field(default=None, ge=0)
    known: list[AttemptRef] | None = Field(default=None, max_length=10000,
                                           description="attempts the agent already holds: not sent again")


class ReportEvent(Request):
    type: Literal["started", "finished", "cancelled", "rejected"]
    task_id: str = Field(max_length=64)
    attempt: int = Field(ge=0)
    at: float | None = None
    status: Literal["succeeded", "failed"] | None = None
    result: Any = None
    error: str | None = Field(default=None, max_length=20000)
    exit_code: int | None = None
    reason: str | None = Field(default=None, max_length=2000)


class LogChunk(Request):
    task_id: str = Field(max_length=64)
    attempt: int = Field(ge=0)
    stream: Literal["stdout", "stderr"]
    offset: int = Field(ge=0)
    data: str


class ReportIn(Request):
    events: list[ReportEvent] = Field(default_factory=list, max_length=5000)
    logs: list[LogChunk] = Field(default_factory=list, max_length=5000)
    running: list[AttemptRef] = Field(default_factory=list, max_length=5000)
