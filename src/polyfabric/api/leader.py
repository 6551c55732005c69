"""Which requests only the leading coordinator answers, and the answer the others give.

Every coordinator serves reads from the store and the writes that are plain store writes (tokens,
domains, an agent's registration and hello). What needs the leader's memory (the job runtime:
submissions, interventions, limits and semaphores, the agent's heartbeat, lease and report; and
the node lifecycle the failure detector keeps in memory: node actions) is answered elsewhere with
503, `X-Polyfabric-Leader: URL` (empty while a leader is being elected), `Location: URL` and
`Retry-After: 1`; the client core (`client/http.py`) follows the hint. Anything new that is not
a GET needs the leader unless it is listed here as safe: a forgotten endpoint is slower, never
inconsistent.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from polyfabric.services.leadership import Leadership

__all__ = ["LEADER_HEADER", "LeaderGateMiddleware", "leader_headers", "needs_leader"]

LEADER_HEADER = "x-polyfabric-leader"

_AGENT_ANYWHERE = ("/v1/agent/register", "/v1/agent/hello")
_WRITES_ANYWHERE = ("/v1/tokens", "/v1/domains")
_LEADER_READS = ("/v1/semaphores", "/v1/limits")  # answered from the runtime's memory


def needs_leader(method: str, path: str) -> bool:
    if path.startswith("/v1/agent/"):
        return path not in _AGENT_ANYWHERE
    if path in _LEADER_READS or path.startswith("/v1/semaphores/"):
        return True
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    return not path.startswith(_WRITES_ANYWHERE)


def leader_headers(leader: str | None) -> dict[str, str]:
    headers = {LEADER_HEADER: leader or "", "Retry-After": "1"}
    if leader:
        headers["Location"] = leader
    return headers


class LeaderGateMiddleware:
    """Answers leader-only requests with 503 and the leader's URL unless this coordinator is
    the leader and done becoming it."""

    def __init__(self, app: ASGIApp, leadership: Callable[[], Leadership]) -> None:
        self.app = app
        self._leadership = leadership

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not needs_leader(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        leadership = self._leadership()
        if leadership.serving():
            await self.app(scope, receive, send)
            return
        error = leadership.not_leader()
        request_id = (scope.get("state") or {}).get("request_id")
        body = orjson.dumps({"error": {"code": error.code, "message": error.message, "request_id": request_id}})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in leader_headers(error.leader_url).items()]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
