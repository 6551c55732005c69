"""The HTTP core: keep-alive connections, JSON in and out, problems mapped to ApiError.

ApiClient authenticates with a bearer token (people, tools); AgentClient signs every request
with the node's key (RFC 9421), so the coordinator knows which node speaks.

Several coordinators (one PostgreSQL, one leader): the base URL may name several, comma-separated
(`http://a:7340,http://b:7340`). A call goes to the current one. On a connection error it moves on
to the next one (a request that may have been processed, because the connection broke after it
was sent, is sent again elsewhere only if it is idempotent). A coordinator that does not lead
answers leader-only calls with 503 and `X-Polyfabric-Leader: URL`; the call follows it there. The
client then stays with whichever coordinator answered last. While no leader is known (an election
is under way), a call keeps trying for `failover_s` seconds: 15 s for ApiClient (a leader's lease
lasts 5 s), 0 for AgentClient, whose loops retry by themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson

from polyfabric.client.errors import ApiError, CoordinatorUnreachable

__all__ = ["LEADER_HEADER", "AgentClient", "ApiClient", "Signer", "split_urls"]

Signer = Callable[[str, str, dict[str, str], bytes, float], dict[str, str]]

LEADER_HEADER = "x-polyfabric-leader"
"""On a 503 from a coordinator that does not lead: the leader's URL (empty: none known yet)."""

_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
_BROKEN = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_PAUSE_S = 0.25  # between rounds over every coordinator while none leads or answers


def split_urls(value: str) -> list[str]:
    """`URL1,URL2` -> the coordinator URLs, in order, without duplicates or trailing slashes."""
    urls: list[str] = []
    for part in value.split(","):
        url = part.strip().rstrip("/")
        if url and url not in urls:
            urls.append(url)
    if not urls:
        raise ValueError(f"no coordinator URL in {value!r}")
    return urls


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json().get("error", {})
        code, message = error.get("code", "error"), error.get("message", response.text)
    except ValueError:
        code, message = "error", response.text.strip() or response.reason_phrase
    raise ApiError(response.status_code, code, message)


class _Base:
    def __init__(self, base_url: str, timeout: float = 30.0, *, failover_s: float = 0.0) -> None:
        self.urls = split_urls(base_url)
        self._current = 0
        self.failover_s = failover_s
        self._failover_sleep: Callable[[float], None] = time.sleep
        self._http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=4))

    @property
    def base_url(self) -> str:
        """The coordinator calls go to now."""
        return self.urls[self._current]

    def close(self) -> None:
        self._http.close()

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _use(self, url: str) -> None:
        if url not in self.urls:
            self.urls.append(url)
        self._current = self.urls.index(url)

    def _advance(self) -> None:
        self._current = (self._current + 1) % len(self.urls)

    def _unreachable(self, exc: Exception) -> CoordinatorUnreachable:
        if len(self.urls) == 1:
            return CoordinatorUnreachable(f"cannot reach the coordinator at {self.base_url}: {exc}")
        return CoordinatorUnreachable(f"cannot reach any coordinator ({', '.join(self.urls)}): {exc}")

    def _send(self, method: str, path: str, *, body: bytes | None, headers: dict[str, str],
              params: dict[str, Any] | None = None, idempotent: bool | None = None,
              sign: Callable[[str, dict[str, str]], dict[str, str]] | None = None) -> httpx.Response:
        """One call, failing over between the coordinators and following the leader (see above).
        `sign(url, headers)` returns the headers that sign the request for `url` (agents)."""
        idempotent = method in _IDEMPOTENT if idempotent is None else idempotent
        deadline = time.monotonic() + self.failover_s
        failed: set[str] = set()  # coordinators that could not be reached in this round
        hops = 0
        while True:
            base = self.base_url
            sent = dict(headers)
            if sign is not None:
                sent.update(sign(base + path, sent))
            try:
                response = self._http.request(method, base + path, content=body, headers=sent, params=params)
            except httpx.TransportError as exc:
                failed.add(base)
                if len(self.urls) == 1:
                    raise self._unreachable(exc) from None
                self._advance()  # this retry, or the caller's next call, goes to the next coordinator
                if not (isinstance(exc, _NEVER_SENT) or (idempotent and isinstance(exc, _BROKEN))):
                    raise self._unreachable(exc) from None
                if len(failed) < len(self.urls):
                    continue
                if time.monotonic() < deadline:
                    self._failover_sleep(_PAUSE_S)
                    failed.clear()
                    hops = 0
                    continue
                raise self._unreachable(exc) from None
            if response.status_code != 503 or LEADER_HEADER not in response.headers:
                return response
            # This coordinator does not lead: go to the leader it names, if that is somewhere new.
            leader = response.headers[LEADER_HEADER].strip().rstrip("/")
            if leader and leader != base and leader not in failed and hops < len(self.urls) + 2:
                hops += 1
                self._use(leader)
                continue
            if time.monotonic() >= deadline:
                return response
            if not leader or leader in failed:
                self._advance()  # no leader known here (yet): ask the next coordinator
            self._failover_sleep(_PAUSE_S)
            failed.clear()
            hops = 0


class ApiClient(_Base):
    """A person's or tool's client: `Authorization: Bearer <token>`."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0, *, failover_s: float = 15.0) -> None:
        super().__init__(base_url, timeout, failover_s=failover_s)
        self._auth = {"authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, json: Any = None,
                params: dict[str, Any] | None = None) -> Any:
        headers = dict(self._auth)
        body = None
        if json is not None:
            body = orjson.dumps(json)
            headers["content-type"] = "application/json"
        if params:
            params = {k: v for k, v in params.items() if v is not None and v != []}
        response = self._send(method, path, body=body, headers=headers, params=params)
        _raise_for(response)
        if not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None) -> Any:
        return self.request("POST", path, json=json if json is not None else {})

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def stream_lines(self, path: str) -> Iterator[str]:
        for tries_left in range(len(self.urls) - 1, -1, -1):
            try:
                with self._http.stream("GET", self.base_url + path, headers=self._auth) as response:
                    if response.status_code >= 400:
                        response.read()
                        _raise_for(response)
                    yield from response.iter_lines()
                return
            except httpx.TransportError as exc:
                if tries_left and isinstance(exc, _NEVER_SENT):
                    self._advance()
                    continue
                raise self._unreachable(exc) from None


class AgentClient(_Base):
    """A node's client: every request signed with the node's key. The agent protocol's calls are
    idempotent (reports are at-least-once, leases are sent again until started), so they fail
    over even when a connection broke mid-call; registration is not (`idempotent=False`)."""

    def __init__(self, base_url: str, sign: Signer, timeout: float = 10.0,
                 clock: Callable[[], float] = time.time, *, failover_s: float = 0.0) -> None:
        super().__init__(base_url, timeout, failover_s=failover_s)
        self._sign = sign
        self._clock = clock
        self.last_elapsed: float | None = None

    def post(self, path: str, payload: dict[str, Any], *, idempotent: bool = True) -> Any:
        body = orjson.dumps(payload)

        def sign(url: str, headers: dict[str, str]) -> dict[str, str]:
            return self._sign("POST", url, headers, body, self._clock())

        response = self._send("POST", path, body=body, headers={"content-type": "application/json"},
                              idempotent=idempotent, sign=sign)
        try:  # on the wire: the topology probe (issue 7); unset for responses not read from a socket
            self.last_elapsed = response.elapsed.total_seconds()
        except RuntimeError:
            self.last_elapsed = None
        _raise_for(response)
        return response.json() if response.content else None
