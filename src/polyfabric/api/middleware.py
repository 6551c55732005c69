"""ASGI middleware, composed once in app.py: request ids and the body size limit."""

from __future__ import annotations

import time
import uuid

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polyfabric.observability.metrics import API_REQUEST_SECONDS

__all__ = ["BodyLimitMiddleware", "MetricsMiddleware", "RequestIdMiddleware"]


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request_id = uuid.uuid4().hex[:12]
            scope.setdefault("state", {})["request_id"] = request_id

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
                await send(message)

            await self.app(scope, receive, send_with_id)
        else:
            await self.app(scope, receive, send)


class MetricsMiddleware:
    """API latency by method, route *template* (bounded label values: `/v1/nodes/{ref}`, never the
    id itself; unmatched paths are one value) and status code."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            API_REQUEST_SECONDS.labels(scope.get("method", ""), route, str(status)).observe(
                time.perf_counter() - started)


class BodyLimitMiddleware:
    """Refuse bodies over `limit` bytes with 413, by header or while streaming."""

    def __init__(self, app: ASGIApp, limit: int = 1 << 20) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((value for name, value in scope.get("headers", []) if name == b"content-length"), None)
        if length is not None:  # the server holds the body to its declared length
            if length.isdigit() and int(length) > self.limit:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        # No length (chunked): read the body up to the limit before the app sees any of it, so an
        # oversized one is a 413 here rather than a failure somewhere inside the app's body parsing.
        messages: list[Message] = []
        received = 0
        while not messages or (messages[-1]["type"] == "http.request" and messages[-1].get("more_body")):
            messages.append(await receive())
            received += len(messages[-1].get("body", b""))
            if received > self.limit:
                await self._refuse(send)
                return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps({"error": {"code": "too_large",
                                       "message": f"request body over {self.limit} bytes"}})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
