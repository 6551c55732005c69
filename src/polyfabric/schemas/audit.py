"""Audit records and chain reports on the wire."""

from __future__ import annotations

from typing import Any

from polyfabric.schemas.base import Response

__all__ = ["AuditRecordOut", "ChainReportOut"]


class AuditRecordOut(Response):
    seq: int
    at: float
    actor: str
    action: str
    subject: str
    domain: str | None
    cause: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class ChainReportOut(Response):
    ok: bool
    records_checked: int
    heads_checked: int
    first_bad_seq: int | None
    problem: str | None
