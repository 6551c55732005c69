"""Policies end to end (docs/policy.md): a real coordinator and two real agents in two domains.

Node `eu` (domain lab, region=eu-west) and node `us` (domain ops, region=us-east). Each test
applies its policies through the CLI or the API, runs jobs, checks where they ran and what
`job show` and the audit chain say, and removes its policies at the end.
"""

from __future__ import annotations

import json

import pytest
import yaml

from polyfabric.client.errors import ApiError

pytestmark = pytest.mark.e2e

OK = ["sh", "-c", "true"]
RESIDENCY = {"name": "residency-eu", "kind": "placement", "scope": "network",
             "when": '"residency" in task.labels && task.labels.residency == "eu"',
             "allow": 'has(node.labels.region) && node.labels.region in ["eu-west", "eu-central"]',
             "reason": "EU-resident data stays on EU nodes"}


@pytest.fixture(scope="module")
def nodes(fabric, workflows):
    for name in ("lab", "ops"):
        try:
            fabric.admin.post("/v1/domains", {"name": name})
        except ApiError as exc:
            assert exc.status == 409
    extra = ["--slots", "2", "--kill-grace", "2", "--stop-grace", "0"]
    eu = fabric.agent("eu", join_token=fabric.join_token("lab")["token"], labels="region=eu-west", extra_args=extra)
    us = fabric.agent("us", join_token=fabric.join_token("ops")["token"], labels="region=us-east", extra_args=extra)
    for agent in (eu, us):
        fabric.wait_state(agent, "active", timeout=40)
    workflows.workers.extend([eu, us])
    return {"eu": fabric.wait_joined(eu), "us": fabric.wait_joined(us)}


def apply(fabric, doc: dict) -> dict:
    return fabric.admin.post("/v1/policies", {"policy": doc})


def remove(fabric, *names: str) -> None:
    for name in names:
        fabric.admin.request("DELETE", f"/v1/policies/{name}", json={"reason": "test done"})


def test_a_placement_policy_enforces_residency_across_domains(fabric, workflows, nodes):
    path = workflows.write("residency.yaml", RESIDENCY)
    applied = fabric.cli_json("policy", "apply", str(path))
    assert [(p["name"], p["version"]) for p in applied] == [("residency-eu", 1)]
    try:
        listed = fabric.cli_json("policy", "ls")
        assert [(p["name"], p["version"], p["scope"]) for p in listed if p["name"] == "residency-eu"] == [
            ("residency-eu", 1, "network")]
        # A job of domain ops (whose own node is in the US) with EU-resident tasks and one free task.
        job = workflows.jobs.submit({"name": "resident", "tasks": {
            "eu": {"foreach": [0, 1, 2, 3], "command": OK, "labels": {"residency": "eu"}},
            "free": {"command": OK, "requires": 'node.labels.region == "us-east"'}}}, None, "ops")["id"]
        final = workflows.wait(job, timeout=90)
        assert final["status"] == "succeeded", final
        tasks = workflows.tasks(job)
        assert {tasks[f"eu[{i}]"]["node_id"] for i in range(4)} == {nodes["eu"]}
        assert tasks["free"]["node_id"] == nodes["us"]
        shown = fabric.cli_json("job", "show", job)
        allowed = {p["task_id"]: p["allowed_by"] for p in shown["policy"]["placements"]}
        assert all(allowed[tasks[f"eu[{i}]"]["id"]] == ["residency-eu v1"] for i in range(4)), allowed
        text = fabric.cli("job", "show", job).stdout
        assert "allowed by residency-eu v1" in text, text

        # A task the policy and its own requirement rule out everywhere waits, and says why.
        stuck = workflows.jobs.submit({"name": "stuck", "tasks": {"x": {
            "command": OK, "labels": {"residency": "eu"}, "requires": 'node.labels.region == "us-east"'}}},
            None, "ops")["id"]
        task = workflows.wait_task(stuck, "x", lambda t: bool(t.get("pending_reason")), what="a pending reason")
        reason = task["pending_reason"]
        assert "nodes evaluated" in reason and "policy residency-eu v1 (network)" in reason, reason
        assert "requirement not met" in reason, reason
        assert "Pending:" in fabric.cli("task", "show", task["id"]).stdout
        workflows.jobs.post(f"/v1/jobs/{stuck}/cancel", {"reason": "test"})
    finally:
        remove(fabric, "residency-eu")
    shown = fabric.cli_json("policy", "show", "residency-eu")
    assert shown["removed"] and [v["version"] for v in shown["versions"]] == [1, 2]
    audited = [r for r in fabric.audit(kind="policy.applied") if r["subject"] == "policy:residency-eu"]
    assert audited and audited[0]["details"]["version"] == 1


def test_a_deny_at_domain_scope_overrides_a_network_allow(fabric, workflows, nodes):
    apply(fabric, {"name": "open", "kind": "admission", "allow": "true"})
    apply(fabric, {"name": "lab-priority", "kind": "admission", "scope": "domain:lab",
                   "allow": "job.priority <= 5", "reason": "lab jobs run at priority 5 or less"})
    try:
        doc = {"name": "urgent", "priority": 9, "tasks": {"a": {"command": OK}}}
        with pytest.raises(ApiError) as info:
            workflows.jobs.submit(doc, None, "lab")
        assert info.value.status == 403
        assert "domain:lab policy lab-priority v1" in info.value.message
        assert "priority 5 or less" in info.value.message
        denied = fabric.audit(kind="job.denied")
        assert denied and "lab-priority v1" in denied[-1]["cause"]
        # The CLI says the same in one line, no traceback.
        path = workflows.write("urgent.yaml", doc)
        result = workflows.fabric.cli("run", str(path), "--domain", "lab")
        assert result.returncode != 0 and "lab-priority v1" in result.stderr and "Traceback" not in result.stderr
        # The same job in domain ops: only the network allow applies.
        job = workflows.jobs.submit(doc, None, "ops")["id"]
        assert workflows.wait(job, timeout=60)["status"] == "succeeded"
        assert fabric.cli_json("job", "show", job)["policy"]["admitted_by"] == ["open v1"]
    finally:
        remove(fabric, "open", "lab-priority")


def test_dry_run_records_what_it_would_deny_without_denying(fabric, workflows, nodes):
    apply(fabric, {"name": "no-us", "kind": "placement", "mode": "dry-run",
                   "when": '"audit" in task.labels', "allow": 'node.labels.region != "us-east"',
                   "reason": "audited work should avoid us-east"})
    try:
        job = workflows.jobs.submit({"name": "dry", "tasks": {"a": {
            "command": OK, "labels": {"audit": "yes"}, "requires": 'node.labels.region == "us-east"'}}},
            None, "ops")["id"]
        assert workflows.wait(job, timeout=60)["status"] == "succeeded"
        task = workflows.tasks(job)["a"]
        assert task["node_id"] == nodes["us"]  # not denied
        dry = fabric.cli_json("job", "show", job)["policy"]["dry_run"]
        assert [(d["policy"], d["node_id"]) for d in dry] == [("no-us v1", nodes["us"])]
        audited = [r for r in fabric.audit(kind="policy.dry_run") if r["subject"] == f"task:{task['id']}"]
        assert len(audited) == 1 and "would deny" in audited[0]["cause"]
        assert "Dry-run:" in fabric.cli("job", "show", job).stdout
    finally:
        remove(fabric, "no-us")


def test_policy_test_matches_what_really_happens(fabric, workflows, nodes):
    policy = workflows.write("residency-test.yaml", RESIDENCY)
    job_doc = {"name": "predicted", "tasks": {"a": {"command": OK, "labels": {"residency": "eu"}}}}
    job_file = workflows.write("predicted.yaml", job_doc)
    out = fabric.cli_json("policy", "test", str(policy), "--job", str(job_file), "--domain", "ops")
    assert out["admission"]["allowed"]
    verdicts = {n["node_id"]: n["tasks"]["a"] for n in out["nodes"] if n["node_id"] in nodes.values()}
    assert verdicts[nodes["eu"]]["allowed"] and not verdicts[nodes["us"]]["allowed"]
    assert "residency-eu" in verdicts[nodes["us"]]["reasons"][0]
    text = fabric.cli("policy", "test", str(policy), "--job", str(job_file), "--domain", "ops",
                      "--node", nodes["us"]).stdout
    assert "DENY" in text and "EU-resident data stays on EU nodes" in text, text
    assert fabric.admin.get("/v1/policies") == [] or all(p["name"] != "residency-eu" for p in
                                                         fabric.admin.get("/v1/policies"))  # nothing applied
    # Now for real: apply it and run the same job; it lands where the test said it may.
    fabric.cli_json("policy", "apply", str(policy))
    try:
        job = workflows.jobs.submit(yaml.safe_load(job_file.read_text()), None, "ops")["id"]
        assert workflows.wait(job, timeout=60)["status"] == "succeeded"
        ran = workflows.tasks(job)["a"]["node_id"]
        assert verdicts[ran]["allowed"] and ran == nodes["eu"]
    finally:
        remove(fabric, "residency-eu")


def test_bad_policies_are_refused_with_the_field_named(fabric, workflows, nodes):
    bad = workflows.write("bad.yaml", {"name": "bad", "kind": "placment", "allow": "node."})
    result = fabric.cli("policy", "apply", str(bad))
    assert result.returncode != 0 and "kind must be one of" in result.stderr and "Traceback" not in result.stderr
    reply = fabric.http("POST", "/v1/policies", json={"policy": {"name": "x", "kind": "admission",
                                                                 "allow": "node.cpu > 1"}})
    assert reply.status_code == 400 and "cannot read node" in json.dumps(reply.json())
    viewer = fabric.api_token("viewer", ["ops"])["token"]
    reply = fabric.http("POST", "/v1/policies", token=viewer, json={"policy": {**RESIDENCY, "name": "v"}})
    assert reply.status_code == 403
    assert fabric.http("GET", "/v1/policies", token=None).status_code == 401
