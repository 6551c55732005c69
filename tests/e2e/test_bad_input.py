"""Bad input at the HTTP API of a real coordinator: every refusal is a 4xx JSON problem
{"error": {"code", "message"}} whose message names the problem, and nothing is half-written.
Agent requests with a bad signature, the wrong key or an old `created` are 401.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from polyfabric.security import http_signatures

pytestmark = pytest.mark.e2e

LIMIT = 1 << 20


def _problem(response: httpx.Response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    if code is not None:
        assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    return body["error"]["message"]


def _post_raw(fabric, path: str, content: bytes, **kwargs) -> httpx.Response:
    return fabric.http("POST", path, content=content, headers={"content-type": "application/json"}, **kwargs)


@pytest.fixture(scope="module")
def node(fabric, tmp_path_factory, signed) -> dict:
    """A registered node whose key the test holds, to send agent requests by hand."""
    key = signed.identity(tmp_path_factory.mktemp("bad-input-key"))
    token = fabric.join_token()
    response = signed.post(fabric.url, "/v1/agent/register", {
        "join_token": token["token"], "public_key": key.public_key_b64, "node": signed.declaration("bad-input"),
    }, key=key)
    assert response.status_code == 201, response.text
    return {"key": key, "id": key.node_id}


def test_malformed_json_is_refused_naming_it(fabric):
    message = _problem(_post_raw(fabric, "/v1/tokens/join", b'{"domain": "test",'), 422, "invalid")
    assert message.startswith("malformed JSON")
    message = _problem(_post_raw(fabric, "/v1/agent/register", b"{oops"), 400, "invalid")
    assert message.startswith("malformed JSON")
    message = _problem(_post_raw(fabric, "/v1/tokens/join", b'["domain", "test"]'), 422, "invalid")
    assert "valid dictionary" in message


def test_unknown_fields_are_refused_naming_the_field(fabric, signed, tmp_path):
    response = fabric.http("POST", "/v1/tokens/join", json={"domain": "test", "colour": "red"})
    assert _problem(response, 422, "invalid") == "unknown field 'colour'"
    response = fabric.http("POST", "/v1/tokens/api", json={"name": "x", "role": "viewer", "domains": ["test"],
                                                           "superuser": True})
    assert _problem(response, 422) == "unknown field 'superuser'"
    key = signed.identity(tmp_path / "k")
    response = signed.post(fabric.url, "/v1/agent/register", {
        "join_token": "pfj_x", "public_key": key.public_key_b64,
        "node": {**signed.declaration("bad-fields"), "owner": "mallory"},
    }, key=key)
    assert _problem(response, 400, "invalid") == "unknown field 'node.owner'"


def test_wrongly_typed_and_missing_fields_are_refused_naming_the_field(fabric):
    message = _problem(fabric.http("POST", "/v1/tokens/join", json={"domain": "test", "uses": "many"}), 422)
    assert message.startswith("uses: ") and "integer" in message
    message = _problem(fabric.http("POST", "/v1/tokens/join", json={"domain": "test", "uses": 0}), 422)
    assert message.startswith("uses: ")
    message = _problem(fabric.http("POST", "/v1/tokens/join", json={"domain": ["test"]}), 422)
    assert message.startswith("domain: ")
    assert _problem(fabric.http("POST", "/v1/tokens/join", json={}), 422) == "missing field 'domain'"
    message = _problem(fabric.http("POST", "/v1/tokens/api", json={"name": "x", "role": "root", "domains": ["a"]}),
                       400)
    assert "unknown role 'root'" in message
    message = _problem(fabric.http("POST", "/v1/tokens/join", json={"domain": "Not A Domain"}), 400)
    assert "'Not A Domain' is not a valid domain name" in message
    message = _problem(fabric.http("GET", "/v1/nodes", params={"state": "sleeping"}), 400)
    assert "unknown node state 'sleeping'" in message
    message = _problem(fabric.http("GET", "/v1/nodes", params={"limit": "lots"}), 422)
    assert message.startswith("query.limit: ")


def test_oversized_bodies_are_413(fabric):
    before = len(fabric.admin.get("/v1/tokens", kind="join"))
    big = json.dumps({"domain": "test", "description": "x" * (LIMIT + 1)}).encode()
    message = _problem(_post_raw(fabric, "/v1/tokens/join", big), 413, "too_large")
    assert message == f"request body over {LIMIT} bytes"

    # The same without a Content-Length (chunked): still a 413, not a parse error.
    def chunks():
        for start in range(0, len(big), 64 * 1024):
            yield big[start:start + 64 * 1024]

    response = fabric.http("POST", "/v1/tokens/join", content=chunks(), headers={"content-type": "application/json"})
    assert _problem(response, 413, "too_large") == message
    response = fabric.http("POST", "/v1/agent/heartbeat", token=None, content=chunks())
    assert _problem(response, 413, "too_large") == message
    assert len(fabric.admin.get("/v1/tokens", kind="join")) == before

    # A chunked body under the limit is served as usual.
    small = json.dumps({"domain": "test", "description": "chunked"}).encode()
    response = fabric.http("POST", "/v1/tokens/join", content=iter([small[:10], small[10:]]),
                           headers={"content-type": "application/json"})
    assert response.status_code == 201, response.text


def test_unknown_nodes_and_endpoints_are_404_naming_them(fabric):
    message = _problem(fabric.http("GET", "/v1/nodes/n-aaaaaaaaaaaaaaaaaaaa"), 404, "not_found")
    assert message == "no node with id or name 'n-aaaaaaaaaaaaaaaaaaaa'"
    message = _problem(fabric.http("POST", "/v1/nodes/ghost/cordon", json={}), 404, "not_found")
    assert "'ghost'" in message
    assert "'ghost'" in _problem(fabric.http("POST", "/v1/nodes/ghost/revoke", json={}), 404)
    message = _problem(fabric.http("DELETE", "/v1/tokens/jt-0000000000000000"), 404, "not_found")
    assert "jt-0000000000000000" in message

    message = _problem(fabric.http("GET", "/v1/bogus"), 404, "not_found")
    assert message == "no such endpoint: GET /v1/bogus"
    assert _problem(fabric.http("GET", "/nowhere", token=None), 404) == "no such endpoint: GET /nowhere"
    _problem(fabric.http("DELETE", "/v1/nodes"), 405, "method_not_allowed")
    message = _problem(fabric.http("POST", "/v1/nodes/ghost/explode", json={}), 400, "invalid")
    assert "unknown node action 'explode'" in message


def test_a_failed_registration_leaves_no_node_and_no_token_use(fabric, signed, tmp_path: Path):
    token = fabric.join_token(uses=1)
    tip = fabric.audit_tip()
    cases = [
        (signed.declaration("bad name!"), "'bad name!' is not a valid node name"),
        (signed.declaration("bad-labels", {"zone": "a b"}), "label zone='a b'"),
        (signed.declaration("bad-labels", {"": "x"}), "label key '' is invalid"),
        (signed.declaration("bad-capacity", capacity={"cpu_millis": "lots"}), "node.capacity is malformed"),
        ({"name": "no-capacity", "labels": {}}, "missing field 'node.capacity'"),
    ]
    for index, (decl, expected) in enumerate(cases):
        key = signed.identity(tmp_path / f"key-{index}")
        response = signed.post(fabric.url, "/v1/agent/register", {
            "join_token": token["token"], "public_key": key.public_key_b64, "node": decl}, key=key)
        assert expected in _problem(response, 400, "invalid"), decl

    names = {n["name"] for n in fabric.nodes()}
    assert not names & {"bad-labels", "bad-capacity", "no-capacity", "bad name!"}
    assert fabric.token_row(token["id"])["uses"] == 0
    written = [r for r in fabric.audit(after=tip) if r["action"] in ("node.registered", "token.used")]
    assert written == []

    # The single use is still there: a correct registration now succeeds.
    key = signed.identity(tmp_path / "good")
    response = signed.post(fabric.url, "/v1/agent/register", {
        "join_token": token["token"], "public_key": key.public_key_b64,
        "node": signed.declaration("bad-input-good")}, key=key)
    assert response.status_code == 201, response.text
    assert fabric.token_row(token["id"])["uses"] == 1


def _heartbeat_parts(fabric, node: dict, now: float | None = None) -> tuple[str, bytes, dict[str, str]]:
    url = fabric.url + "/v1/agent/heartbeat"
    body = json.dumps({"telemetry": {}, "seq": 1}).encode()
    headers = {"content-type": "application/json"}
    headers.update(http_signatures.sign_request(method="POST", url=url, headers=headers, body=body,
                                                private_key=node["key"].private_key, key_id=node["id"],
                                                now=time.time() if now is None else now))
    return url, body, headers


def test_agent_requests_with_bad_signatures_are_401(fabric, node, signed, tmp_path: Path):
    url, body, headers = _heartbeat_parts(fabric, node)
    good = httpx.post(url, content=body, headers=headers)
    assert good.status_code == 200, good.text

    # No signature at all.
    message = _problem(httpx.post(url, content=body, headers={"content-type": "application/json"}), 401,
                       "unauthenticated")
    assert "must be signed" in message

    # The signature bytes altered.
    url, body, headers = _heartbeat_parts(fabric, node)
    sig = headers["Signature"]
    position = sig.index(":") + 5
    flipped = sig[:position] + ("A" if sig[position] != "A" else "B") + sig[position + 1:]
    response = httpx.post(url, content=body, headers={**headers, "Signature": flipped})
    assert "bad signature" in _problem(response, 401, "unauthenticated")

    # The body changed after signing.
    url, body, headers = _heartbeat_parts(fabric, node)
    response = httpx.post(url, content=body.replace(b'"seq": 1', b'"seq": 2'), headers=headers)
    assert "Content-Digest does not match the request body" in _problem(response, 401)

    # Signed by another key in this node's name.
    other = signed.identity(tmp_path / "impostor")
    response = signed.post(fabric.url, "/v1/agent/heartbeat", {"telemetry": {}}, key=other, key_id=node["id"])
    message = _problem(response, 401, "unauthenticated")
    assert message.startswith(f"bad signature for key id '{node['id']}'")

    # A replayed request: a valid signature whose `created` is ten minutes old.
    url, body, headers = _heartbeat_parts(fabric, node, now=time.time() - 600)
    message = _problem(httpx.post(url, content=body, headers=headers), 401, "unauthenticated")
    assert "outside the allowed clock skew" in message

    # Registration signed by a key other than the one in its body.
    response = signed.post(fabric.url, "/v1/agent/register", {
        "join_token": fabric.join_token()["token"], "public_key": node["key"].public_key_b64,
        "node": signed.declaration("bad-input-stolen-key")}, key=other)
    message = _problem(response, 401, "unauthenticated")
    assert f"the key in the body belongs to {node['id']}" in message

    # A key the coordinator has never seen: 404 (the agent's cue to register again).
    response = signed.post(fabric.url, "/v1/agent/heartbeat", {"telemetry": {}}, key=other)
    assert f"node {other.node_id} is not registered" in _problem(response, 404, "not_found")

    # None of that touched the node; a good request still works.
    url, body, headers = _heartbeat_parts(fabric, node)
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    assert not [n for n in fabric.nodes() if n["name"] == "bad-input-stolen-key"]
