"""GET /v1/usage: contributed versus consumed per domain; GET /v1/usage/attempts: the ledger rows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal
from polyfabric.services.telemetry_history import parse_since

__all__ = ["router"]

router = APIRouter(prefix="/v1/usage", tags=["usage"])


def _since(request: Request, since: str | None) -> float | None:
    if since is None or since == "":
        return None
    return parse_since(since, request.app.state.services.ctx.clock.now())


@router.get("")
def usage(request: Request, domain: str | None = None, since: str | None = None,
          caller: Principal = Depends(principal)) -> dict[str, Any]:
    """Per domain: what its jobs consumed and what its nodes contributed (CPU-, memory-, GPU- and
    wall-seconds, attempts), since a time (a duration back like 24h, or unix seconds; default: all)."""
    ledger = request.app.state.services.ledger
    return ledger.report(caller, domain=domain, since=_since(request, since))  # type: ignore[no-any-return]


@router.get("/attempts")
def usage_attempts(request: Request, domain: str | None = None, since: str | None = None,
                   job: str | None = None, limit: int = Query(default=1000, ge=1, le=10_000),
                   caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    """The ledger's rows (one per measured attempt), newest first."""
    ledger = request.app.state.services.ledger
    rows: list[dict[str, Any]] = ledger.attempts(caller, domain=domain, since=_since(request, since), job_id=job,
                                                 limit=limit)
    return rows
