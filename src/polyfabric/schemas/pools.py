"""Wire models of the pools API (issue 7: elastic node pools)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from polyfabric.schemas.base import Request

__all__ = ["PoolCreate", "PoolUpdate", "QuotaSet"]


class PoolCreate(Request):
    name: str = Field(max_length=63)
    domain: str = Field(default="default", max_length=63)
    provider: str = "local"
    min: int = Field(default=0, ge=0, le=10_000)
    max: int = Field(ge=0, le=10_000)
    labels: dict[str, str] = Field(default_factory=dict)
    idle: str | float = "5m"  # a duration: 300, "90s", "5m"
    scale_up_after: str | float = "5s"
    start_timeout: str | float = "2m"
    slots: int = Field(default=4, ge=1, le=1024)
    cpu: str | float = "4"  # per node: cores or millicores ("500m")
    memory: str | int = "8Gi"
    gpus: int = Field(default=0, ge=0, le=64)
    # ssh: hosts ["host", "host:port"], user, key_file, known_hosts, python, base_dir; both: agent_args
    provider_config: dict[str, Any] = Field(default_factory=dict)


class PoolUpdate(Request):
    min: int | None = Field(default=None, ge=0, le=10_000)
    max: int | None = Field(default=None, ge=0, le=10_000)
    idle: str | float | None = None
    paused: bool | None = None


class QuotaSet(Request):
    max_nodes: int | None = Field(default=None, ge=0, le=1_000_000)  # None: no quota
