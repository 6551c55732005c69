"""The client core with several coordinators (`client/http.py`), against scripted transports, and
the server's rule of which requests only the leader answers (`api/leader.py`)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from polyfabric.api.leader import needs_leader
from polyfabric.client import AgentClient, ApiClient, ApiError, CoordinatorUnreachable
from polyfabric.client.http import LEADER_HEADER, split_urls

A, B, C = "http://a:7340", "http://b:7340", "http://c:7340"

Handler = Callable[[httpx.Request], httpx.Response]


def scripted(client: ApiClient | AgentClient, by_host: dict[str, Handler]) -> list[str]:
    """Answer each request with the handler of its host; returns the list of URLs asked."""
    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(f"{request.method} {request.url.scheme}://{request.url.host}:{request.url.port}{request.url.path}")
        return by_host[request.url.host](request)

    client._http = httpx.Client(transport=httpx.MockTransport(handle))
    client._failover_sleep = lambda _s: None
    return asked


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def broken(request: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError("server disconnected", request=request)


def follower(leader: str) -> Handler:
    return lambda _r: httpx.Response(503, headers={LEADER_HEADER: leader},
                                     json={"error": {"code": "not_leader", "message": "not the leader"}})


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"served_by": request.url.host})


def test_urls_are_split_on_commas_in_order_without_duplicates():
    assert split_urls(f" {A}/, {B} ,{A},") == [A, B]
    with pytest.raises(ValueError):
        split_urls(" , ")


def test_a_connection_error_moves_on_to_the_next_coordinator_and_the_client_stays_there():
    client = ApiClient(f"{A},{B},{C}", "pfa_t")
    asked = scripted(client, {"a": refused, "b": ok, "c": ok})
    assert client.get("/v1/jobs") == {"served_by": "b"}
    assert client.get("/v1/jobs") == {"served_by": "b"}
    assert asked == [f"GET {A}/v1/jobs", f"GET {B}/v1/jobs", f"GET {B}/v1/jobs"]


def test_a_write_follows_the_leader_hint_of_a_follower():
    client = ApiClient(f"{A},{B}", "pfa_t")
    asked = scripted(client, {"a": follower(C), "b": follower(C), "c": ok})
    assert client.post("/v1/jobs", {"x": 1}) == {"served_by": "c"}
    assert asked == [f"POST {A}/v1/jobs", f"POST {C}/v1/jobs"]
    assert client.base_url == C and client.urls == [A, B, C]  # the leader it learned is kept


def test_a_hint_naming_a_dead_leader_is_not_followed_again_and_the_next_coordinator_is_asked():
    client = ApiClient(f"{A},{B}", "pfa_t")
    # A follower still names the old leader C (its lease has not run out), which is dead; B leads.
    asked = scripted(client, {"a": follower(C), "b": ok, "c": refused})
    assert client.post("/v1/jobs", {})["served_by"] == "b"
    assert asked == [f"POST {A}/v1/jobs", f"POST {C}/v1/jobs", f"POST {A}/v1/jobs", f"POST {B}/v1/jobs"]


def test_while_no_leader_is_known_a_call_retries_until_its_failover_time_runs_out():
    client = ApiClient(f"{A},{B}", "pfa_t", failover_s=0.0)
    scripted(client, {"a": follower(""), "b": follower("")})
    with pytest.raises(ApiError) as err:
        client.post("/v1/jobs", {})
    assert err.value.status == 503 and err.value.code == "not_leader" and err.value.is_retryable

    client = ApiClient(f"{A},{B}", "pfa_t", failover_s=60.0)
    answers = iter([follower(""), follower(""), follower(""), ok])
    asked = scripted(client, {"a": lambda r: next(answers)(r), "b": lambda r: next(answers)(r)})
    assert client.post("/v1/jobs", {})["served_by"] in ("a", "b")
    assert len(asked) == 4


def test_a_broken_connection_retries_elsewhere_only_what_is_idempotent():
    client = ApiClient(f"{A},{B}", "pfa_t")
    asked = scripted(client, {"a": broken, "b": ok})
    with pytest.raises(CoordinatorUnreachable, match="any coordinator"):
        client.post("/v1/jobs", {})  # it may have been processed: not sent twice by the client
    assert client.get("/v1/jobs") == {"served_by": "b"}  # the next call goes to the next coordinator
    assert asked == [f"POST {A}/v1/jobs", f"GET {B}/v1/jobs"]
    client = ApiClient(f"{A},{B}", "pfa_t")
    scripted(client, {"a": broken, "b": ok})
    assert client.get("/v1/jobs") == {"served_by": "b"}


def test_a_single_unreachable_coordinator_fails_at_once_as_before():
    client = ApiClient(A, "pfa_t")
    scripted(client, {"a": refused})
    with pytest.raises(CoordinatorUnreachable, match=f"cannot reach the coordinator at {A}"):
        client.get("/v1/jobs")


def test_agent_requests_are_signed_for_the_coordinator_they_are_sent_to():
    signed: list[str] = []

    def sign(method: str, url: str, headers: dict[str, str], body: bytes, now: float) -> dict[str, str]:
        signed.append(url)
        return {"signature": f"for {url}"}

    client = AgentClient(f"{A},{B}", sign)
    seen: list[str] = []

    def leader(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["signature"])
        return httpx.Response(200, json={"leases": []})

    scripted(client, {"a": follower(C), "b": refused, "c": leader})
    assert client.post("/v1/agent/lease", {"wait_s": 0}) == {"leases": []}
    assert signed == [f"{A}/v1/agent/lease", f"{C}/v1/agent/lease"]
    assert seen == [f"for {C}/v1/agent/lease"]


@pytest.mark.parametrize(("method", "path", "leader_only"), [
    ("POST", "/v1/agent/heartbeat", True),
    ("POST", "/v1/agent/lease", True),
    ("POST", "/v1/agent/report", True),
    ("POST", "/v1/agent/register", False),
    ("POST", "/v1/agent/hello", False),
    ("POST", "/v1/jobs", True),
    ("POST", "/v1/jobs/j-1/cancel", True),
    ("POST", "/v1/nodes/n-1/cordon", True),
    ("PUT", "/v1/limits", True),
    ("GET", "/v1/limits", True),
    ("GET", "/v1/semaphores", True),
    ("PUT", "/v1/semaphores/gpu", True),
    ("GET", "/v1/jobs", False),
    ("GET", "/v1/jobs/j-1/events", False),
    ("GET", "/v1/nodes", False),
    ("GET", "/v1/audit", False),
    ("GET", "/healthz", False),
    ("POST", "/v1/tokens/join", False),
    ("DELETE", "/v1/tokens/t-1", False),
    ("POST", "/v1/domains", False),
    ("POST", "/v1/something-new", True),
])
def test_which_requests_only_the_leader_answers(method, path, leader_only):
    assert needs_leader(method, path) is leader_only
