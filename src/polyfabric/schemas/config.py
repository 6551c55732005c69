"""Wire models of the configuration manager, secrets and signed results (issue 6)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from polyfabric.schemas.base import Request

__all__ = ["AgentConfigIn", "ConfigAck", "ConfigFailure", "ConfigPublishIn", "ConfigRollbackIn", "SecretSetIn"]


class ConfigPublishIn(Request):
    document: dict[str, Any] = Field(description="the configuration document (docs/config.md)")
    scope: str = Field(min_length=1, max_length=300, description="network | domain:NAME | selector:K=V,... | node:ID")
    canary: int | None = Field(default=None, ge=1, description="send to this many nodes first; `promote` continues")
    comment: str = Field(default="", max_length=2000)


class ConfigRollbackIn(Request):
    version: int | None = Field(default=None, ge=1, description="default: the newest live version")
    reason: str = Field(default="", max_length=2000)


class ConfigAck(Request):
    version: int = Field(ge=0)
    docs: list[int] = Field(default_factory=list, max_length=1000)
    applied: dict[str, Any] = Field(default_factory=dict)


class ConfigFailure(Request):
    version: int = Field(ge=0)
    docs: list[int] = Field(default_factory=list, max_length=1000)
    error: str = Field(max_length=4000)


class AgentConfigIn(Request):
    acked: ConfigAck | None = None
    failed: ConfigFailure | None = None


class SecretSetIn(Request):
    domain: str = Field(min_length=1, max_length=63)
    value_b64: str = Field(min_length=1, max_length=200_000, description="the value, base64 (standard alphabet)")
