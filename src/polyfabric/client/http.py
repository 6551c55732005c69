"""The HTTP core: keep-alive connections, JSON in and out, problems mapped to ApiError.

ApiClient authenticates with a bearer token (people, tools); AgentClient signs every request
with the node's key (RFC 9421), so the coordinator knows which node speaks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson

from polyfabric.client.errors import ApiError, CoordinatorUnreachable

__all__ = ["AgentClient", "ApiClient", "Signer"]

Signer = Callable[[str, str, dict[str, str], bytes, float], dict[str, str]]


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
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout,
                                  limits=httpx.Limits(max_keepalive_connections=4))

    def close(self) -> None:
        self._http.close()

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, *, body: bytes | None, headers: dict[str, str],
              params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self._http.request(method, path, content=body, headers=headers, params=params)
        except httpx.TransportError as exc:
            raise CoordinatorUnreachable(f"cannot reach the coordinator at {self.base_url}: {exc}") from None


class ApiClient(_Base):
    """A person's or tool's client: `Authorization: Bearer <token>`."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        super().__init__(base_url, timeout)
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
        try:
            with self._http.stream("GET", path, headers=self._auth) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise CoordinatorUnreachable(f"cannot reach the coordinator at {self.base_url}: {exc}") from None


class AgentClient(_Base):
    """A node's client: every request signed with the node's key."""

    def __init__(self, base_url: str, sign: Signer, timeout: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(base_url, timeout)
        self._sign = sign
        self._clock = clock

    def post(self, path: str, payload: dict[str, Any]) -> Any:
        body = orjson.dumps(payload)
        url = self.base_url + path
        headers = {"content-type": "application/json"}
        headers.update(self._sign("POST", url, headers, body, self._clock()))
        response = self._send("POST", path, body=body, headers=headers)
        _raise_for(response)
        return response.json() if response.content else None
