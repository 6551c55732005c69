"""The agent protocol: register, hello, heartbeat. Every call is signed with the node's key
(RFC 9421 HTTP message signatures over method, target URI and content digest)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from polyfabric.schemas.base import Request, Response

__all__ = [
    "AttemptRef",
    "AttemptUsage",
    "CheckpointFetchIn",
    "CheckpointPartIn",
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
    # Topology (issue 7, optional): the node's Vivaldi coordinates, its last measured round trip
    # to the coordinator (seconds), and its echo endpoint (host:port) if it exposes one.
    coords: dict[str, Any] | None = None
    rtt_s: float | None = Field(default=None, gt=0, le=10)
    echo: str | None = Field(default=None, max_length=200)


class HeartbeatOut(Response):
    state: str
    heartbeat_interval_s: float
    # Topology (issue 7): the coordinator's own coordinates and a few peers to probe (echo endpoints).
    coordinator_coords: dict[str, Any] | None = None
    peers: list[dict[str, Any]] | None = None
    handled_s: float | None = None  # time the coordinator spent on this heartbeat (not network)


class AttemptRef(Request):
    task_id: str = Field(max_length=64)
    attempt: int = Field(ge=0)


class LeaseIn(Request):
    wait_s: float = Field(default=10.0, ge=0, le=30)
    free_slots: int | None = Field(default=None, ge=0)
    known: list[AttemptRef] | None = Field(default=None, max_length=10000,
                                           description="attempts the agent already holds: not sent again")


class AttemptUsage(Request):
    """What an attempt used, as the agent measured it (agent/usage.py): the ledger's figures."""

    wall_s: float = Field(ge=0, le=1e9)
    cpu_s: float = Field(ge=0, le=1e12)
    memory_byte_s: float = Field(ge=0, le=1e24)
    max_rss_bytes: int = Field(default=0, ge=0, le=1 << 60)
    gpu_s: float = Field(default=0.0, ge=0, le=1e12)
    method: str = Field(default="", max_length=64)


class ReportEvent(Request):
    type: Literal["started", "finished", "cancelled", "rejected", "declined"]
    task_id: str = Field(max_length=64)
    attempt: int = Field(ge=0)
    at: float | None = None
    status: Literal["succeeded", "failed"] | None = None
    result: Any = None
    error: str | None = Field(default=None, max_length=20000)
    manifest: dict[str, Any] | None = Field(default=None, description="signed result manifest (finished; issue 6)")
    exit_code: int | None = None
    reason: str | None = Field(default=None, max_length=2000)
    # `declined` (issue 6): the owner policy that refused ({"name", "version"}), the answer the
    # node signed ({node_id, task_id, attempt, decision, reason, policy, at}) and its Ed25519
    # signature (base64url) by the node's key, kept in the audit chain.
    policy: dict[str, Any] | None = None
    answer: dict[str, Any] | None = None
    signature: str | None = Field(default=None, max_length=200)
    usage: AttemptUsage | None = None  # on the final event of an attempt that ran (optional)


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


class CheckpointPartIn(Request):
    """One part of a checkpoint upload (services/checkpoints.py); the last one has `final`."""

    task_id: str = Field(max_length=64)
    attempt: int = Field(ge=0)
    upload_id: str = Field(min_length=1, max_length=64, description="chosen by the agent, one per checkpoint")
    format: Literal["json", "bytes", "tar"]
    offset: int = Field(ge=0)
    data: str = Field(default="", max_length=720_000, description="base64, at most 512 KiB of bytes")
    final: bool = False
    size: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, min_length=64, max_length=64)


class ArtifactPartIn(Request):
    """One part of an artifact upload (services/artifacts.py); the last one has `final`. A file
    the agent will not send has `refused` (why) instead of data."""

    task_id: str = Field(max_length=64)
    attempt: int = Field(ge=0)
    upload_id: str = Field(min_length=1, max_length=64, description="chosen by the agent, one per file")
    path: str = Field(min_length=1, max_length=400, description="relative to $POLYFABRIC_ARTIFACTS")
    offset: int = Field(default=0, ge=0)
    data: str = Field(default="", max_length=720_000, description="base64, at most 512 KiB of bytes")
    final: bool = False
    size: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, min_length=64, max_length=64)
    refused: str | None = Field(default=None, max_length=2000)


class CheckpointFetchIn(Request):
    task_id: str = Field(max_length=64)
    attempt: int = Field(ge=0)
    seq: int | None = Field(default=None, ge=1, description="default: the latest")
    offset: int = Field(default=0, ge=0)
    limit: int | None = Field(default=None, ge=1)
