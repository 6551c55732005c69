"""Signed results end to end: every result carries a manifest signed by the node that ran it, and
`polyfabric job verify` (online, and offline from `job export`) finds a result or manifest that was
changed in the coordinator's database, naming the task.

Real coordinator and two agents, SQLite and PostgreSQL; the tampering is done directly in the
database (as a compromised coordinator or a careless operator could).
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from polyfabric.store import tables

pytestmark = pytest.mark.e2e

WORKFLOW = {
    "name": "signed",
    "tasks": {
        "make": {"command": ["python3", "-c", "import json, os\n"
                                              "json.dump({'rows': [1, 2, 3], 'name': 'ünï'}, "
                                              "open(os.environ['POLYFABRIC_RESULT'], 'w'))"]},
        "work": {"depends_on": ["make"], "foreach": [1, 2, 3], "function": "workflow_functions:square",
                 "args": {"n": "{{ item }}"}},
        "fail": {"command": ["python3", "-c", "import sys; sys.exit(4)"]},
    },
}


@pytest.fixture(scope="module")
def job(fabric, workflows):
    workflows.start_agents(2, slots=2, prefix="sig")
    job_id = workflows.submit(WORKFLOW)
    final = workflows.wait(job_id, timeout=120)
    assert final["status"] == "failed", workflows.logs()  # `fail` fails on purpose: it is signed too
    return job_id


def _verify(fabric, *args: str) -> tuple[int, dict]:
    done = fabric.cli("job", "verify", *args, "--json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_every_result_has_a_manifest_that_verifies(fabric, workflows, job, tmp_path):
    code, report = _verify(fabric, job)
    assert code == 0 and report["ok"], report
    assert report["checked"] == report["tasks"] == 5  # make, work[0..2], fail
    bundle = fabric.admin.get(f"/v1/jobs/{job}/manifests")
    for task in bundle["tasks"]:
        manifest = task["manifest"]
        assert manifest["node_id"] == task["node_id"] and manifest["attempt"] == task["attempt"]
        assert manifest["job_id"] == job and manifest["status"] == task["status"]
        assert manifest["started_at"] <= manifest["finished_at"]
        assert task["coordinator_verified"] is True
    assert set(bundle["nodes"]) == {t["node_id"] for t in bundle["tasks"]}
    server = fabric.admin.get(f"/v1/jobs/{job}/verify")
    assert server["ok"] and server["checked"] == 5
    export = tmp_path / "export.json"
    done = fabric.cli("job", "export", job, "-o", str(export))
    assert done.returncode == 0, done.stderr
    code, offline = _verify(fabric, "--file", str(export))
    assert code == 0 and offline["checked"] == 5


def test_a_tampered_result_or_manifest_is_detected_and_named(fabric, workflows, job, tmp_path):
    export = tmp_path / "before.json"
    assert fabric.cli("job", "export", job, "-o", str(export)).returncode == 0
    tasks = workflows.tasks(job)
    with fabric.engine.begin() as conn:
        conn.execute(sa.update(tables.tasks).where(tables.tasks.c.id == tasks["work[1]"]["id"])
                     .values(result={"item": 1, "square": 100, "attempt": 1}))
        row = conn.execute(sa.select(tables.result_manifests).where(
            tables.result_manifests.c.task_id == tasks["make"]["id"])).mappings().one()
        conn.execute(sa.update(tables.result_manifests).where(
            tables.result_manifests.c.task_id == tasks["make"]["id"]).values(
            manifest={**row["manifest"], "finished_at": row["manifest"]["finished_at"] + 1}))
    code, report = _verify(fabric, job)
    assert code == 1 and not report["ok"]
    by_key = {p["key"]: p["problem"] for p in report["problems"]}
    assert set(by_key) == {"work[1]", "make"}, report
    assert "result altered" in by_key["work[1]"]
    assert "altered or forged" in by_key["make"]
    human = fabric.cli("job", "verify", job)
    assert human.returncode == 1 and "work[1]" in human.stdout and "make" in human.stdout
    # Offline: an export edited after the fact is caught the same way.
    bundle = json.loads(export.read_text())
    for task in bundle["tasks"]:
        if task["key"] == "work[2]":
            task["result"]["square"] = 5
    export.write_text(json.dumps(bundle))
    code, offline = _verify(fabric, "--file", str(export))
    assert code == 1 and [p["key"] for p in offline["problems"]] == ["work[2]"]


def test_the_coordinator_checked_every_manifest_on_arrival(fabric, workflows, job):
    """The coordinator checks each manifest as it arrives: these all did (none audited as invalid)."""
    assert fabric.audit(kind="task.manifest_invalid") == []
