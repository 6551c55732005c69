"""Join tokens, API tokens and domains."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal
from polyfabric.schemas.tokens import ApiTokenIn, DomainIn, DomainOut, JoinTokenIn, TokenCreated, TokenOut
from polyfabric.services.ports import ApiTokenRow, JoinTokenRow

__all__ = ["router", "token_out"]

router = APIRouter(prefix="/v1", tags=["tokens"])


def _status(row: JoinTokenRow | ApiTokenRow, now: float) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    if isinstance(row, JoinTokenRow) and row.uses_allowed is not None and row.uses >= row.uses_allowed:
        return "used-up"
    return "valid"


def token_out(row: JoinTokenRow | ApiTokenRow, now: float) -> TokenOut:
    common = {"id": row.id, "prefix": row.prefix, "created_at": row.created_at, "created_by": row.created_by,
              "expires_at": row.expires_at, "revoked_at": row.revoked_at, "status": _status(row, now)}
    if isinstance(row, JoinTokenRow):
        return TokenOut(kind="join", domain=row.domain, uses_allowed=row.uses_allowed, uses=row.uses,
                        name=row.description or None, **common)
    return TokenOut(kind="api", name=row.name, role=row.role, domains=list(row.domains), **common)


@router.post("/tokens/join", status_code=201, response_model=TokenCreated)
def create_join_token(body: JoinTokenIn, request: Request,
                      caller: Principal = Depends(principal)) -> TokenCreated:
    services = request.app.state.services
    issued = services.tokens.create_join(caller, domain=body.domain, ttl_s=body.ttl_s, uses=body.uses,
                                         description=body.description)
    out = token_out(issued.row, services.ctx.clock.now())
    return TokenCreated(token=issued.token, **out.model_dump())


@router.post("/tokens/api", status_code=201, response_model=TokenCreated)
def create_api_token(body: ApiTokenIn, request: Request,
                     caller: Principal = Depends(principal)) -> TokenCreated:
    services = request.app.state.services
    issued = services.tokens.create_api(caller, name=body.name, role=body.role, domains=body.domains,
                                        ttl_s=body.ttl_s)
    out = token_out(issued.row, services.ctx.clock.now())
    return TokenCreated(token=issued.token, **out.model_dump())


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(request: Request, kind: str | None = None,
                caller: Principal = Depends(principal)) -> list[TokenOut]:
    services = request.app.state.services
    if kind not in (None, "join", "api"):
        from polyfabric.domain.errors import ValidationError

        raise ValidationError(f"kind must be 'join' or 'api', not {kind!r}")
    now = services.ctx.clock.now()
    return [token_out(row, now) for row in services.tokens.list(caller, kind)]


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, str]:
    kind = request.app.state.services.tokens.revoke(caller, token_id)
    return {"id": token_id, "kind": kind, "status": "revoked"}


@router.post("/domains", status_code=201, response_model=DomainOut, tags=["domains"])
def create_domain(body: DomainIn, request: Request, caller: Principal = Depends(principal)) -> DomainOut:
    return DomainOut(**request.app.state.services.domains.create(caller, body.name, body.description))


@router.get("/domains", response_model=list[DomainOut], tags=["domains"])
def list_domains(request: Request, caller: Principal = Depends(principal)) -> list[DomainOut]:
    return [DomainOut(**d) for d in request.app.state.services.domains.list(caller)]
