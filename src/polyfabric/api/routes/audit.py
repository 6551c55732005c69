"""The audit chain: filtered listing, export (JSON Lines) and server-side verification."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from polyfabric.api.auth import principal
from polyfabric.domain import audit as chain
from polyfabric.domain.access import Principal
from polyfabric.schemas.audit import AuditRecordOut, ChainReportOut
from polyfabric.services.ports import AuditQuery

__all__ = ["router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=list[AuditRecordOut])
def list_audit(request: Request, node: str | None = None, subject: str | None = None,
               kind: str | None = None, since: float | None = None, after: int = 0,
               limit: int = Query(default=100, ge=1, le=10000),
               caller: Principal = Depends(principal)) -> list[AuditRecordOut]:
    if node and not subject:
        subject = f"node:{node}"
    records = request.app.state.services.audit.query(
        caller, AuditQuery(subject=subject, action=kind, since=since, after_seq=after, limit=limit))
    return [AuditRecordOut(**chain.record_to_dict(r)) for r in records]


@router.get("/export", response_class=StreamingResponse)
def export_audit(request: Request, caller: Principal = Depends(principal)) -> StreamingResponse:
    lines = request.app.state.services.audit.export(caller)
    return StreamingResponse(lines, media_type="application/jsonl")


@router.get("/verify", response_model=ChainReportOut)
def verify_audit(request: Request, caller: Principal = Depends(principal)) -> ChainReportOut:
    report = request.app.state.services.audit.verify(caller)
    return ChainReportOut(ok=report.ok, records_checked=report.records_checked,
                          heads_checked=report.heads_checked, first_bad_seq=report.first_bad_seq,
                          problem=report.problem)
