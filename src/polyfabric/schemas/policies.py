"""Wire models of /v1/policies (issue 6)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from polyfabric.schemas.base import Request

__all__ = ["PolicyApplyIn", "PolicyRemoveIn", "PolicyTestIn"]


class PolicyApplyIn(Request):
    policy: dict[str, Any] = Field(description="the policy document (name, kind, scope, mode, when, allow, ...)")


class PolicyRemoveIn(Request):
    reason: str = Field(default="", max_length=2000)


class PolicyTestIn(Request):
    policies: list[dict[str, Any]] = Field(default_factory=list, max_length=100,
                                           description="policy documents to test (they shadow current ones by name)")
    workflow: dict[str, Any]
    params: dict[str, Any] = Field(default_factory=dict)
    domain: str = Field(min_length=1, max_length=63)
    nodes: list[str] | None = Field(default=None, max_length=1000, description="node ids or names; all when absent")
    include_current: bool = True
