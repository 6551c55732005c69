"""The only mapping from errors to HTTP: every failure is a JSON problem with a readable message.

Body: {"error": {"code": "...", "message": "...", "request_id": "..."}}. No traceback ever
reaches a client; internal faults are logged with the request id the client was given.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from polyfabric.api.leader import leader_headers
from polyfabric.domain.errors import (
    Conflict,
    DomainError,
    InternalFault,
    NotAuthenticated,
    NotFound,
    NotLeader,
    NotPermitted,
    Unavailable,
    ValidationError,
)

__all__ = ["describe_errors", "install_error_handlers", "problem"]

log = logging.getLogger("polyfabric.api")

_STATUS: list[tuple[type[DomainError], int]] = [
    (ValidationError, 400),
    (NotAuthenticated, 401),
    (NotPermitted, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Unavailable, 503),
    (InternalFault, 500),
]


def problem(status: int, code: str, message: str, request: Request | None = None,
            problems: list[str] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    error: dict[str, object] = {"code": code, "message": message, "request_id": request_id}
    if problems:
        error["problems"] = problems
    body = {"error": error}
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(body, status_code=status, headers=headers)


def _status_of(exc: DomainError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def describe_errors(errors: list[Any]) -> str:
    """pydantic's error list as one sentence naming each field and its problem."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        where = ".".join(loc) or "body"
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            parts.append(f"unknown field '{where}'")
        elif kind == "missing":
            parts.append(f"missing field '{where}'")
        elif kind == "json_invalid":
            parts.append(f"malformed JSON: {err.get('ctx', {}).get('error', err.get('msg'))}")
        else:
            parts.append(f"{where}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        problems = getattr(exc, "problems", None)
        headers = None
        if isinstance(exc, Unavailable):
            # A leader-only write that reached a coordinator which does not (or no longer) lead:
            # say where the leader is, so that the client goes there.
            leadership = request.app.state.services.ctx.leadership
            if isinstance(exc, NotLeader) or not leadership.serving():
                headers = leader_headers(exc.leader_url if isinstance(exc, NotLeader) else leadership.hint())
        return problem(_status_of(exc), exc.code, exc.message, request, list(problems) if problems else None,
                       headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, "invalid", describe_errors(list(exc.errors())), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "error")
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return problem(exc.status_code, code, message, request)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex[:12]
        log.exception("internal error handling %s %s (request %s)", request.method, request.url.path,
                      request_id)
        return problem(500, "internal", f"internal error; the coordinator's log has request id {request_id}",
                       request)
