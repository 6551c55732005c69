"""Secrets end to end: set with the CLI, used by a task on one of two real agents, and absent
everywhere else.

A task asks for a secret as an env variable and another as a file. The value reaches only the node
that ran the attempt (sealed to its key: the audit chain records one delivery, to that node), the
task sees it, and its captured output and error show `[REDACTED]`. Then the secret's bytes are
searched for (raw and base64) in the database file (SQLite, with its WAL) or a `pg_dump`, the
coordinator's and both agents' logs, both agents' data dirs once the workspaces are cleaned up,
and every API listing: `secret ls`, `job show`, task logs, the job's manifests, `audit export`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets as random
import subprocess
from pathlib import Path

import pytest

from polyfabric.testing import wait_until

pytestmark = pytest.mark.e2e

VALUE = "pf-" + random.token_hex(12) + "-s3cret"
FILE_VALUE = "-----FILE " + random.token_hex(10) + "-----\n"
NEEDLES = [VALUE.encode(), FILE_VALUE.strip().encode(), base64.b64encode(VALUE.encode()),
           base64.b64encode(FILE_VALUE.encode())]

USE = [
    "python3", "-c",
    "import hashlib, json, os\n"
    "v = os.environ['API_KEY']\n"
    "f = open(os.path.join(os.environ['POLYFABRIC_SECRETS_DIR'], 'cert.pem')).read()\n"
    "print('the key is', v, flush=True)\n"
    "print('the file is', f, flush=True)\n"
    "json.dump({'sha': hashlib.sha256(v.encode()).hexdigest(), 'file_sha': hashlib.sha256(f.encode()).hexdigest(),"
    " 'dir': os.environ['POLYFABRIC_SECRETS_DIR']}, open(os.environ['POLYFABRIC_RESULT'], 'w'))\n",
]
LEAK = ["python3", "-c", "import os, sys\nsys.stderr.write('oops ' + os.environ['API_KEY'] + '\\n')\nsys.exit(3)"]


@pytest.fixture(scope="module")
def setup(fabric, workflows):
    agents = workflows.start_agents(2, slots=2, prefix="sec")
    for name, value in (("api-key", VALUE), ("cert", FILE_VALUE)):
        done = subprocess.run(
            [*_cli_base(fabric), "secret", "set", name, "--domain", workflows.domain, "--from-stdin"],
            input=value, capture_output=True, text=True, env=_cli_env(fabric), cwd=fabric.root, timeout=60)
        assert done.returncode == 0, done.stderr
    used = workflows.submit({"name": "use-secret", "tasks": {"use": {
        "command": USE, "secrets": {"API_KEY": "api-key", "cert.pem": {"file": "cert"}}}}})
    leaked = workflows.submit({"name": "leak-secret", "tasks": {"leak": {
        "command": LEAK, "secrets": {"API_KEY": "api-key"}}}})
    return {"agents": agents, "used": used, "leaked": leaked, "final": workflows.wait(used, timeout=120),
            "leak_final": workflows.wait(leaked, timeout=120)}


def _cli_base(fabric) -> list[str]:
    import sys

    return [sys.executable, "-m", "polyfabric"]


def _cli_env(fabric) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYFABRIC_")}
    env.update(POLYFABRIC_CONFIG=str(fabric.root / "none.json"), POLYFABRIC_URL=fabric.url,
               POLYFABRIC_TOKEN=fabric.admin_token)
    return env


def _assert_absent(blob: bytes, where: str) -> None:
    for needle in NEEDLES:
        assert needle not in blob, f"a secret's bytes ({needle[:6]!r}...) appear in {where}"


def test_the_task_gets_its_secrets_and_the_logs_are_redacted(fabric, workflows, setup):
    assert setup["final"]["status"] == "succeeded", workflows.logs()
    task = workflows.task(setup["used"], "use")
    assert task["result"]["sha"] == hashlib.sha256(VALUE.encode()).hexdigest()
    assert task["result"]["file_sha"] == hashlib.sha256(FILE_VALUE.encode()).hexdigest()
    logs = workflows.cli("task", "logs", task["id"])
    assert logs.returncode == 0, logs.stderr
    assert "the key is [REDACTED]" in logs.stdout and "the file is [REDACTED]" in logs.stdout
    leak = workflows.task(setup["leaked"], "leak")
    assert leak["status"] == "failed" and "[REDACTED]" in (leak["error"] or "") and VALUE not in leak["error"]


def test_only_the_node_that_ran_the_attempt_received_it(fabric, workflows, setup):
    task = workflows.task(setup["used"], "use")
    delivered = [r for r in fabric.audit(kind="secret.delivered") if r["subject"] == f"task:{task['id']}"]
    assert [r["details"]["node"] for r in delivered] == [task["node_id"]]
    assert delivered[0]["details"]["secrets"] == ["api-key", "cert"]
    ran, other = sorted(setup["agents"], key=lambda a: a.node_id != task["node_id"])
    assert ran.node_id == task["node_id"] and other.node_id != task["node_id"]
    # The workspaces (with the secrets dir) are gone once the final reports were acknowledged.
    for agent in setup["agents"]:
        work = agent.data_dir / "work"
        wait_until(lambda w=work: not any(w.iterdir()), timeout=30, message=f"{work} to be cleaned up")
        assert not Path(task["result"]["dir"]).exists()
        for path in agent.data_dir.rglob("*"):
            if path.is_file():
                _assert_absent(path.read_bytes(), f"{path} on {agent.name}")
        _assert_absent(agent.log().encode(), f"the log of {agent.name}")


def test_the_secret_is_in_no_database_log_listing_or_export(fabric, workflows, setup):
    _assert_absent(fabric.coordinator.log().encode(), "the coordinator's log")
    if fabric.backend == "sqlite":
        db = Path(fabric.coordinator.db_url.split(":///", 1)[1])
        for path in db.parent.glob(db.name + "*"):
            _assert_absent(path.read_bytes(), str(path))
    else:
        url = fabric.coordinator.db_url.replace("postgresql+psycopg://", "postgresql://")
        dump = subprocess.run(["pg_dump", "--data-only", url], capture_output=True, timeout=120)
        assert dump.returncode == 0, dump.stderr
        assert b"secret.delivered" in dump.stdout  # the dump is real
        _assert_absent(dump.stdout, "pg_dump")
    listed = fabric.cli_json("secret", "ls")
    assert {(s["name"], s["size"]) for s in listed} >= {("api-key", len(VALUE)), ("cert", len(FILE_VALUE))}
    outputs = [json.dumps(listed)]
    for job_id in (setup["used"], setup["leaked"]):
        outputs.append(json.dumps(fabric.cli_json("job", "show", job_id, "--all")))
        outputs.append(json.dumps(fabric.admin.get(f"/v1/jobs/{job_id}/manifests")))
        for task in workflows.tasks(job_id).values():
            outputs.append(workflows.cli("task", "logs", task["id"]).stdout)
    export = fabric.cli("audit", "export")
    assert export.returncode == 0 and "secret.set" in export.stdout
    outputs.append(export.stdout)
    _assert_absent("\n".join(outputs).encode(), "the API listings and the audit export")


def test_rotating_the_key_keeps_secrets_usable(fabric, workflows, setup):
    before = {s["name"]: s["key_id"] for s in fabric.cli_json("secret", "ls")}
    rotated = fabric.cli_json("secret", "rotate-key")
    assert rotated["rewrapped"] >= 2 and rotated["key_id"] not in before.values()
    assert {s["key_id"] for s in fabric.cli_json("secret", "ls")} == {rotated["key_id"]}
    job = workflows.submit({"name": "after-rotation", "tasks": {"use": {
        "command": USE, "secrets": {"API_KEY": "api-key", "cert.pem": {"file": "cert"}}}}})
    assert workflows.wait(job, timeout=120)["status"] == "succeeded", workflows.logs()
    assert workflows.task(job, "use")["result"]["sha"] == hashlib.sha256(VALUE.encode()).hexdigest()


def test_a_missing_secret_fails_the_task_with_a_clear_reason_and_rm_is_audited(fabric, workflows, setup):
    job = workflows.submit({"name": "missing", "tasks": {"use": {"command": ["true"],
                                                                "secrets": {"X": "no-such-secret"}}}})
    assert workflows.wait(job, timeout=120)["status"] == "failed"
    assert "no-such-secret" in workflows.task(job, "use")["error"]
    done = fabric.cli("secret", "rm", "cert", "--domain", workflows.domain)
    assert done.returncode == 0, done.stderr
    assert "cert" not in {s["name"] for s in fabric.cli_json("secret", "ls")}
    assert any(r["subject"].endswith("/cert") for r in fabric.audit(kind="secret.removed"))
    viewer = fabric.api_token("viewer", [workflows.domain])["token"]
    refused = fabric.http("PUT", "/v1/secrets/x", token=viewer, json={"domain": workflows.domain, "value_b64": "eA=="})
    assert refused.status_code == 403 and "secret.manage" in refused.json()["error"]["message"]
