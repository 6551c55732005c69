"""Tokens and domains on the wire."""

from __future__ import annotations

from pydantic import Field

from polyfabric.schemas.base import Request, Response

__all__ = ["ApiTokenIn", "DomainIn", "DomainOut", "JoinTokenIn", "TokenCreated", "TokenOut"]


class JoinTokenIn(Request):
    domain: str = Field(min_length=1, max_length=63)
    ttl_s: float | None = Field(default=None, gt=0)
    uses: int | None = Field(default=None, ge=1)
    description: str = Field(default="", max_length=500)


class ApiTokenIn(Request):
    name: str = Field(min_length=1, max_length=200)
    role: str
    domains: list[str] = Field(min_length=1, max_length=100)
    ttl_s: float | None = Field(default=None, gt=0)


class TokenOut(Response):
    id: str
    kind: str
    prefix: str
    name: str | None = None
    role: str | None = None
    domain: str | None = None
    domains: list[str] | None = None
    created_at: float
    created_by: str
    expires_at: float | None = None
    uses_allowed: int | None = None
    uses: int | None = None
    revoked_at: float | None = None
    status: str


class TokenCreated(TokenOut):
    token: str = Field(description="the token itself: shown once, stored only as a hash")


class DomainIn(Request):
    name: str = Field(min_length=1, max_length=63)
    description: str = Field(default="", max_length=500)


class DomainOut(Response):
    name: str
    description: str
    created_at: float
    created_by: str
