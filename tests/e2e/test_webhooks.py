"""Webhook triggers on a real coordinator (SQLite and PostgreSQL): `trigger create --webhook`
prints a URL and a secret; an HMAC-signed POST starts a run with the body's fields as params; a
bad, missing, stale or replayed signature is refused and audited; the secret is never listed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from polyfabric.services.triggers import sign_webhook
from polyfabric.testing import CoordinatorProcess

from .conftest import DOWN, HEARTBEAT, UNREACHABLE, Fabric


@pytest.fixture(scope="module")
def fab(module_backend: str, module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    root = tmp_path_factory.mktemp(f"webhooks-{module_backend}")
    coordinator = CoordinatorProcess(root / "coordinator", module_db_url, heartbeat_interval=HEARTBEAT,
                                     unreachable_after=UNREACHABLE, down_after=DOWN).start()
    fabric = Fabric(coordinator, root, module_backend)
    fabric.admin.post("/v1/domains", {"name": "test"})
    (root / "deploy.yaml").write_text(
        "name: deploy\nparams: {ref: main, replicas: 1}\ntasks:\n  go: {command: [\"true\"]}\n")
    try:
        yield fabric
    finally:
        fabric.close()
        coordinator.stop()


def _post(fab: Fabric, url: str, body: bytes, secret: str | None, *, at: float | None = None,
          signature: str | None = None) -> tuple[int, dict]:
    stamp = str(int(time.time() if at is None else at))
    headers = {"content-type": "application/json", "x-polyfabric-timestamp": stamp}
    if secret is not None or signature is not None:
        headers["x-polyfabric-signature"] = signature or sign_webhook(secret or "", stamp, body)
    reply = fab.http("POST", url, token=None, content=body, headers=headers)
    return reply.status_code, reply.json()


def test_signed_webhook_starts_a_run_and_bad_ones_are_refused_and_audited(fab: Fabric):
    made = fab.cli_json("trigger", "create", str(fab.root / "deploy.yaml"), "--webhook", "--domain", "test")
    secret, url = made["secret"], made["url"]
    assert url.startswith(fab.url) and url.endswith(f"/v1/hooks/{made['id']}")
    path = url[len(fab.url):]
    human = fab.cli("trigger", "create", str(fab.root / "deploy.yaml"), "--webhook", "--domain", "test",
                    "--name", "deploy-2")
    assert human.returncode == 0 and "secret: pfw_" in human.stdout and "/v1/hooks/" in human.stdout

    body = json.dumps({"ref": "v1.2", "replicas": 3}).encode()
    status, job = _post(fab, path, body, secret)
    assert status == 201, job
    assert job["params"] == {"ref": "v1.2", "replicas": 3} and job["submitted_by"] == "trigger:deploy"
    assert fab.admin.get(f"/v1/jobs/{job['id']}")["status"] in ("running", "succeeded")

    body = json.dumps({"ref": "v1.3"}).encode()  # the same body in the same second would be a replay
    stamp = str(int(time.time()))
    signature = sign_webhook(secret, stamp, body)
    first = fab.http("POST", path, token=None, content=body,
                     headers={"x-polyfabric-timestamp": stamp, "x-polyfabric-signature": signature})
    assert first.status_code == 201
    replay = fab.http("POST", path, token=None, content=body,
                      headers={"x-polyfabric-timestamp": stamp, "x-polyfabric-signature": signature})
    assert replay.status_code == 409 and first.json()["id"] in replay.text

    status, reply = _post(fab, path, body, "pfw_not-the-secret")
    assert status == 401 and "bad signature" in reply["error"]["message"]
    status, reply = _post(fab, path, body, None)
    assert status == 401 and "missing signature" in reply["error"]["message"]
    status, reply = _post(fab, path, body, secret, at=time.time() - 3600)  # an old capture
    assert status == 401 and "away from" in reply["error"]["message"]
    tampered = json.dumps({"ref": "evil", "replicas": 3}).encode()
    status, reply = _post(fab, path, tampered, None, signature=sign_webhook(secret, str(int(time.time())), body))
    assert status == 401

    status, reply = _post(fab, path, json.dumps({"branch": "x"}).encode(), secret)
    assert status == 400 and "'branch'" in reply["error"]["message"]
    status, reply = _post(fab, "/v1/hooks/wh-nope", body, secret)
    assert status == 404

    listed = fab.cli_json("trigger", "ls")
    assert {t["name"] for t in listed} >= {"deploy", "deploy-2"}
    assert secret not in json.dumps(listed) and secret not in fab.cli("trigger", "show", "deploy").stdout
    shown = fab.cli_json("trigger", "show", "deploy")
    assert shown["fired"] == 2 and shown["params"] == ["ref", "replicas"]
    records = fab.audit()
    assert secret not in json.dumps(records)
    refused = [r for r in records if r["action"] == "trigger.refused"]
    assert len(refused) == 5, [r["cause"] for r in refused]
    assert any("replayed" in r["cause"] for r in refused) and any("bad signature" in r["cause"] for r in refused)
    with fab.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT secret_sealed FROM triggers WHERE name = 'deploy'")).scalar_one()
    assert secret not in stored and stored.startswith("v1:")

    assert fab.cli("trigger", "rm", "deploy").returncode == 0
    status, _ = _post(fab, path, body, secret)
    assert status == 404
