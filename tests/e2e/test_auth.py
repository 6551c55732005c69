"""Authentication and authorization at the API of a real coordinator (one per backend).

Every /v1 endpoint needs credentials; roles and domains bound what a token may do, and every
refusal names what failed (the role or the domain). Tokens are stored only as hashes.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from polyfabric.store.tables import metadata
from polyfabric.testing import wait_until

from .conftest import sha256_hex

pytestmark = pytest.mark.e2e

DOMAIN_A, DOMAIN_B = "dom-a", "dom-b"


@pytest.fixture(scope="module")
def nodes(fabric) -> dict[str, str]:
    """An Active node in each of two domains."""
    out = {}
    for domain in (DOMAIN_A, DOMAIN_B):
        agent = fabric.agent(f"auth-{domain}", join_token=fabric.join_token(domain)["token"])
        out[domain] = fabric.wait_state(agent, "active")["id"]
    return out


@pytest.fixture(scope="module")
def tokens(fabric) -> dict[str, str]:
    return {
        "viewer": fabric.api_token("viewer", [DOMAIN_A, DOMAIN_B], name="auth-viewer")["token"],
        "submitter": fabric.api_token("submitter", [DOMAIN_A], name="auth-submitter")["token"],
        "operator_a": fabric.api_token("operator", [DOMAIN_A], name="auth-operator-a")["token"],
    }


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, f"{response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] and error["message"]
    return error["message"]


def _endpoints(fabric) -> list[tuple[str, str]]:
    """Every /v1 operation the coordinator publishes in its OpenAPI document."""
    spec = fabric.http("GET", "/openapi.json", token=None).json()
    ops = [(method.upper(), path) for path, item in spec["paths"].items() if path.startswith("/v1/")
           for method in item if method in ("get", "post", "put", "patch", "delete")]
    assert len(ops) >= 15, ops
    return ops


def test_every_v1_endpoint_without_credentials_is_401(fabric, nodes, signed, tmp_path):
    node_id = nodes[DOMAIN_A]
    checked = []
    for method, path in _endpoints(fabric):
        if path.startswith("/v1/hooks/"):
            continue  # webhooks authenticate by an HMAC signature per trigger: tests/e2e/test_webhooks.py
        url = re.sub(r"\{ref\}", node_id, path)
        url = url.replace("{verb}", "cordon").replace("{token_id}", "jt-0123456789abcdef")
        url = re.sub(r"\{[^}]+\}", "x", url)
        body: dict | None = {} if method in ("POST", "PUT", "PATCH") else None
        if path == "/v1/agent/register":  # a complete registration, just not signed
            key = signed.identity(tmp_path / "unsigned")
            body = {"join_token": fabric.join_token(DOMAIN_A)["token"], "public_key": key.public_key_b64,
                    "node": signed.declaration("auth-unsigned")}
        for headers in ({}, {"authorization": "Bearer pfa_" + "x" * 43}, {"authorization": "Basic Zm9vOmJhcg=="}):
            if path.startswith("/v1/agent/") and headers:
                continue  # agents authenticate by signature, not by bearer token
            response = fabric.http(method, url, token=None, json=body, headers=headers)
            message = _error(response, 401)
            assert response.headers.get("www-authenticate") == "Bearer"
            checked.append((method, path, message))
    assert any(path == "/v1/agent/heartbeat" for _, path, _ in checked)
    # Nothing about the node changed, and the unsigned registration created nothing.
    assert fabric.node(node_id)["state"] == "active"
    assert not [n for n in fabric.nodes() if n["name"] == "auth-unsigned"]


def test_viewer_can_read_but_not_act(fabric, nodes, tokens):
    viewer = tokens["viewer"]
    listed = fabric.http("GET", "/v1/nodes", token=viewer)
    assert listed.status_code == 200
    assert set(nodes.values()) <= {n["id"] for n in listed.json()}
    assert fabric.http("GET", f"/v1/nodes/{nodes[DOMAIN_A]}", token=viewer).status_code == 200
    assert fabric.http("GET", "/v1/audit", token=viewer).status_code == 200

    message = _error(fabric.http("POST", f"/v1/nodes/{nodes[DOMAIN_A]}/cordon", token=viewer, json={}), 403)
    assert message == "node.manage needs role operator or higher; this token has role viewer"
    message = _error(fabric.http("POST", f"/v1/nodes/{nodes[DOMAIN_A]}/revoke", token=viewer, json={}), 403)
    assert "this token has role viewer" in message
    assert fabric.node(nodes[DOMAIN_A])["state"] == "active"


def test_operator_of_one_domain_cannot_touch_another_domains_nodes(fabric, nodes, tokens):
    op = tokens["operator_a"]
    node_a, node_b = nodes[DOMAIN_A], nodes[DOMAIN_B]

    listed = fabric.http("GET", "/v1/nodes", token=op).json()
    assert {n["domain"] for n in listed} == {DOMAIN_A} and node_a in {n["id"] for n in listed}

    message = _error(fabric.http("POST", f"/v1/nodes/{node_b}/cordon", token=op, json={"reason": "x"}), 403)
    assert message == f"node.manage in domain '{DOMAIN_B}' is not allowed for this token (its domains: {DOMAIN_A})"
    message = _error(fabric.http("GET", f"/v1/nodes/{node_b}", token=op), 403)
    assert f"domain '{DOMAIN_B}'" in message
    message = _error(fabric.http("POST", f"/v1/nodes/{node_b}/revoke", token=op, json={}), 403)
    assert f"domain '{DOMAIN_B}'" in message
    assert fabric.node(node_b)["state"] == "active" and not fabric.node(node_b)["revoked"]

    # In its own domain the same token works, and the audit chain names it.
    ok = fabric.http("POST", f"/v1/nodes/{node_a}/cordon", token=op, json={"reason": "auth test"})
    assert ok.status_code == 200 and ok.json()["state"] == "cordoned"
    assert fabric.transitions(node_a)[-1]["actor"] == "token:auth-operator-a"
    fabric.http("POST", f"/v1/nodes/{node_a}/uncordon", token=op, json={}).raise_for_status()


def test_submitter_cannot_create_tokens(fabric, tokens):
    sub = tokens["submitter"]
    message = _error(fabric.http("POST", "/v1/tokens/api", token=sub,
                                 json={"name": "x", "role": "viewer", "domains": [DOMAIN_A]}), 403)
    assert message == "token.api.create needs role operator or higher; this token has role submitter"
    message = _error(fabric.http("POST", "/v1/tokens/join", token=sub, json={"domain": DOMAIN_A}), 403)
    assert "needs role operator" in message and "role submitter" in message
    assert "role submitter" in _error(fabric.http("GET", "/v1/tokens", token=sub), 403)


def test_tokens_cannot_mint_higher_roles_or_other_domains(fabric, tokens):
    op = tokens["operator_a"]
    before = {t["id"] for t in fabric.admin.get("/v1/tokens")}

    def create(role: str, domains: list[str]) -> httpx.Response:
        return fabric.http("POST", "/v1/tokens/api", token=op, json={"name": "minted", "role": role,
                                                                     "domains": domains})

    assert _error(create("admin", [DOMAIN_A]), 403) == "a operator token cannot create a admin token"
    message = _error(create("viewer", [DOMAIN_B]), 403)
    assert message == f"cannot grant domains {DOMAIN_B}: this token holds only {DOMAIN_A}"
    assert "cannot grant domains *" in _error(create("viewer", ["*"]), 403)
    assert "cannot grant domains" in _error(create("operator", [DOMAIN_A, DOMAIN_B]), 403)
    message = _error(fabric.http("POST", "/v1/tokens/join", token=op, json={"domain": DOMAIN_B}), 403)
    assert f"domain '{DOMAIN_B}'" in message
    assert {t["id"] for t in fabric.admin.get("/v1/tokens")} == before  # nothing was minted

    # Equal or lower role, own domain: allowed; and the minted token is bounded the same way.
    minted = create("viewer", [DOMAIN_A])
    assert minted.status_code == 201, minted.text
    viewer_a = minted.json()["token"]
    assert {n["domain"] for n in fabric.http("GET", "/v1/nodes", token=viewer_a).json()} == {DOMAIN_A}
    assert create("operator", [DOMAIN_A]).status_code == 201


def test_revoked_and_expired_api_tokens_are_401(fabric):
    created = fabric.api_token("viewer", [DOMAIN_A])
    token = created["token"]
    assert fabric.http("GET", "/v1/whoami", token=token).status_code == 200
    fabric.admin.delete(f"/v1/tokens/{created['id']}")
    assert _error(fabric.http("GET", "/v1/nodes", token=token), 401) == f"API token {created['id']} was revoked"

    short = fabric.api_token("viewer", [DOMAIN_A], ttl_s=1.0)
    expired = f"API token {short['id']} expired"

    def has_expired() -> bool:
        response = fabric.http("GET", "/v1/nodes", token=short["token"])
        if response.status_code == 200:
            return False
        return _error(response, 401) == expired

    wait_until(has_expired, timeout=10, message="the API token to expire")
    assert fabric.token_row(short["id"])["status"] == "expired"


def test_admin_token_file_is_private_and_only_hashes_are_stored(fabric, tokens):
    path = fabric.coordinator.data_dir / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    admin = fabric.admin_token
    secrets = [admin, *tokens.values()]

    # Every row of every table, as text: no token appears, their hashes do.
    dump = []
    with fabric.engine.connect() as conn:
        for table in metadata.sorted_tables:
            dump.extend(str(tuple(row)) for row in conn.execute(sa.select(table)))
    text = "\n".join(dump)
    for secret in secrets:
        assert secret not in text
        assert secret[4:] not in text  # not even without its prefix
        assert sha256_hex(secret) in text

    if fabric.backend == "sqlite":
        # The database file's bytes (and its WAL), not only what SQL shows.
        db = Path(fabric.coordinator.db_url.removeprefix("sqlite:///"))
        files = [p for p in (db, db.with_name(db.name + "-wal")) if p.exists()]
        raw = b"".join(p.read_bytes() for p in files)
        assert sha256_hex(admin).encode() in raw
        for secret in secrets:
            assert secret.encode() not in raw and secret[4:].encode() not in raw

    # Nor does the coordinator's log show any of them.
    log = fabric.coordinator.log()
    assert all(secret not in log for secret in secrets)
