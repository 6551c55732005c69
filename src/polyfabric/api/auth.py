"""Who is calling: a bearer API token (people, tools) or a node's RFC 9421 signature (agents)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from polyfabric.domain.access import Principal
from polyfabric.domain.errors import NotAuthenticated, NotFound
from polyfabric.security.http_signatures import key_id_from_headers, verify_request

__all__ = ["SignedCall", "principal", "signed_call"]


def _services(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.services


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller of a user endpoint, from `Authorization: Bearer ...`."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("this endpoint needs an API token: send 'Authorization: Bearer pfa_...'")
    return await run_in_threadpool(_services(request).tokens.authenticate, token.strip())


@dataclass(frozen=True, slots=True)
class SignedCall:
    node_id: str
    body: bytes


async def signed_call(request: Request) -> SignedCall:
    """FastAPI dependency: a request signed by a registered, unrevoked node."""
    services = _services(request)
    body = await request.body()
    headers = dict(request.headers)
    claimed = key_id_from_headers(headers)
    if claimed is None:
        raise NotAuthenticated("agent requests must be signed (RFC 9421 Signature and Signature-Input)")
    if services.nodes.resolve_key(claimed) is None:
        raise NotFound(f"node {claimed} is not registered with this coordinator")
    node_id = verify_request(
        method=request.method, url=str(request.url), headers=headers, body=body,
        resolve_key=services.nodes.resolve_key, now=services.ctx.clock.now(),
    )
    return SignedCall(node_id, body)
