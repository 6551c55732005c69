"""Who is calling: a bearer API token (people, tools) or a node's RFC 9421 signature (agents)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from polyfabric.domain.access import Principal
from polyfabric.domain.errors import NotAuthenticated, NotFound
from polyfabric.security.http_signatures import key_id_from_headers, verify_request

__all__ = ["SignedCall", "principal", "signed_call", "signed_url"]


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


def signed_url(request: Request) -> str:
    """The URL as the client sent it: scheme, Host header, the raw (still percent-encoded) path
    and the query. `request.url` decodes the path, which would break the signature."""
    scope = request.scope
    host = request.headers.get("host") or f"{scope['server'][0]}:{scope['server'][1]}"
    raw_path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string") or b""
    url = f"{scope.get('scheme', 'http')}://{host}{raw_path.decode('latin-1')}"
    return url + ("?" + query.decode("latin-1") if query else "")


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
        method=request.method, url=signed_url(request), headers=headers, body=body,
        resolve_key=services.nodes.resolve_key, now=services.ctx.clock.now(),
    )
    return SignedCall(node_id, body)
