"""The configuration manager end to end: real coordinator, three real agents, the real CLI.

A bad document is refused at publish naming the field; a network document reaches every node,
which applies it (labels and task slots as the coordinator sees them, health settings, allowed
env for leases) and acknowledges the version; a canary goes to one node first and to the rest on
`promote`; a document a node cannot apply is reported by it and halts the rollout (`promote`
refused); a stopped node shows drift until it is back; a rollback takes every node back to the
version before; `config diff` shows the change; everything is in the audit chain.
"""

from __future__ import annotations

import pytest
import yaml

from polyfabric.testing import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def agents(fabric, workflows):
    return workflows.start_agents(3, slots=4, prefix="cfg")


def _publish(fabric, tmp_path, name: str, doc: dict, *args: str) -> dict:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return fabric.cli_json("config", "publish", str(path), *args)


def _status(fabric) -> dict[str, dict]:
    """What `config status --json` prints (polled through the API: a CLI process per poll is slow)."""
    return {r["node_id"]: r for r in fabric.admin.get("/v1/config/status")}


def _wait_acked(fabric, nodes: list[str], version: int, timeout: float = 60.0) -> dict[str, dict]:
    def done() -> dict[str, dict] | None:
        status = _status(fabric)
        ok = all(status[n]["acked_version"] == version and not status[n]["drift"] for n in nodes)
        return status if ok else None

    return wait_until(done, timeout=timeout, interval=0.2,
                      message=f"nodes {nodes} to acknowledge version {version}: {_status(fabric)}")


def test_a_bad_document_is_refused_naming_the_field(fabric, agents, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"max_concurrent_tasks": "many", "health": {"intervall_s": 3}}))
    done = fabric.cli("config", "publish", str(path), "--scope", "network")
    assert done.returncode != 0
    assert "max_concurrent_tasks" in done.stderr and "health.intervall_s" in done.stderr
    # The coordinator refuses it too (not only the CLI's own check), with a 400 naming the field.
    reply = fabric.http("POST", "/v1/config", json={"document": {"execution": {"max_timeout_s": "soon"}},
                                                     "scope": "network"})
    assert reply.status_code == 400 and "execution.max_timeout_s" in reply.json()["error"]["message"]
    reply = fabric.http("POST", "/v1/config", json={"document": {}, "scope": "galaxy:far"})
    assert reply.status_code == 400 and "scope" in reply.json()["error"]["message"]
    assert fabric.cli_json("config", "ls") == []


def test_rollout_canary_halt_drift_and_rollback(fabric, workflows, agents, tmp_path):
    nodes = sorted(a.node_id for a in agents)
    # 1. A network document: every node applies and acknowledges it.
    v1 = _publish(fabric, tmp_path, "v1", {"labels": {"tier": "base"}, "max_concurrent_tasks": 3,
                                            "health": {"interval_s": "2s"}}, "--scope", "network",
                  "--comment", "baseline")
    status = _wait_acked(fabric, nodes, v1["version"])
    for node_id in nodes:
        assert status[node_id]["applied"]["slots"] == 3 and status[node_id]["applied"]["health"]["interval_s"] == 2
        node = fabric.node(node_id)
        assert node["labels"]["tier"] == "base"
        wait_until(lambda n=node_id: fabric.node(n)["capacity"]["slots"] == 3, timeout=20,
                   message="slots to be declared")

    # 2. A canary at domain scope: one node first.
    v2 = _publish(fabric, tmp_path, "v2", {"labels": {"tier": "canary"}, "allowed_env": ["OK_*"]},
                  "--scope", f"domain:{workflows.domain}", "--canary", "1")
    assert v2["state"] == "canary" and v2["canary_nodes"] == nodes[:1]
    status = _wait_acked(fabric, nodes[:1], v2["version"])
    assert [status[n]["desired_version"] for n in nodes] == [v2["version"], v1["version"], v1["version"]]
    assert fabric.node(nodes[0])["labels"]["tier"] == "canary" and fabric.node(nodes[1])["labels"]["tier"] == "base"
    assert fabric.cli_json("config", "promote")["state"] == "active"
    _wait_acked(fabric, nodes, v2["version"])
    assert all(fabric.node(n)["labels"]["tier"] == "canary" for n in nodes)

    # The applied allowed_env really gates leases: OK_* runs, anything else is rejected by every node.
    ok = workflows.submit({"name": "env-ok", "tasks": {"t": {"command": ["true"], "env": {"OK_A": "1"}}}})
    assert workflows.wait(ok, timeout=60)["status"] == "succeeded"
    bad = workflows.submit({"name": "env-bad", "tasks": {"t": {"command": ["true"], "env": {"NOPE": "1"}}}})

    def rejected() -> dict | None:
        t = workflows.task(bad, "t")
        return t if any(a["status"] == "rejected" and "allowed_env" in (a["error"] or "")
                        for a in t["attempts"]) else None
    task = wait_until(rejected, timeout=60, message="a node to reject the env it does not allow")
    assert task["status"] != "succeeded"
    assert fabric.cli("job", "cancel", bad, "--reason", "test").returncode == 0

    # 3. A document one node cannot apply: it reports it, the rollout halts, promote is refused.
    v3 = _publish(fabric, tmp_path, "v3", {"max_concurrent_tasks": 99}, "--scope", f"node:{nodes[2]}",
                  "--canary", "1")

    def halted() -> dict | None:
        doc = fabric.admin.get(f"/v1/config/{v3['version']}")
        return doc if doc["state"] == "halted" else None

    doc = wait_until(halted, timeout=60, message="the rollout to halt")
    assert "max_concurrent_tasks" in doc["halted_reason"] and nodes[2] in doc["halted_reason"]
    status = _status(fabric)
    assert status[nodes[2]]["error_version"] == v3["version"] and "99" in status[nodes[2]]["error"]
    assert status[nodes[2]]["acked_version"] == v2["version"] and not status[nodes[2]]["drift"]
    refused = fabric.cli("config", "promote", str(v3["version"]))
    assert refused.returncode != 0 and "halted" in refused.stderr

    # 4. Drift: a node that is down does not acknowledge a new version until it is back.
    stopped = next(a for a in agents if a.node_id == nodes[1])
    stopped.stop()
    # (It sets another label than the one its selector tests: docs/config.md says why.)
    v4 = _publish(fabric, tmp_path, "v4", {"labels": {"level": "gold"}, "health": {"interval_s": 5}},
                  "--scope", "selector:tier=canary")
    _wait_acked(fabric, [nodes[0], nodes[2]], v4["version"])
    status = _status(fabric)
    assert status[nodes[1]]["drift"] and status[nodes[1]]["desired_version"] == v4["version"]
    assert status[nodes[1]]["acked_version"] == v2["version"]
    text = fabric.cli("config", "status")
    assert text.returncode == 0 and "DRIFT" in text.stdout
    assert {r["node_id"]: r["drift"] for r in fabric.cli_json("config", "status")}[nodes[1]] is True
    stopped.start()
    _wait_acked(fabric, nodes, v4["version"])

    # 5. Diff and rollback: v4 withdrawn, every node back on v2 (labels too).
    diff = fabric.cli_json("config", "diff", str(v2["version"]), str(v4["version"]))
    changes = {c["field"]: (c["old"], c["new"]) for c in diff["changes"]}
    assert changes["labels.level"] == (None, "gold") and changes["health.interval_s"] == (None, 5)
    assert changes["labels.tier"] == ("canary", None)
    back = fabric.cli_json("config", "rollback", "--reason", "gold was a mistake")
    assert back["version"] == v4["version"] and back["state"] == "rolled_back"
    status = _wait_acked(fabric, nodes, v2["version"])
    for node_id in nodes:
        wait_until(lambda n=node_id: "level" not in fabric.node(n)["labels"], timeout=20, message="labels to revert")
        assert fabric.node(node_id)["labels"]["tier"] == "canary"
    assert status[nodes[0]]["applied"]["health"]["interval_s"] == 2

    # 6. Every step is in the audit chain.
    actions = {r["action"] for r in fabric.audit(kind="config")}
    assert {"config.published", "config.promoted", "config.acknowledged", "config.apply_failed", "config.halted",
            "config.rolled_back"} <= actions
    acks = [r for r in fabric.audit(kind="config.acknowledged") if r["subject"] == f"node:{nodes[1]}"]
    assert {r["details"]["version"] for r in acks} >= {v1["version"], v2["version"], v4["version"]}


def test_scopes_need_the_right_role(fabric, workflows, agents, tmp_path):
    operator = fabric.api_token("operator", [workflows.domain])["token"]
    reply = fabric.http("POST", "/v1/config", token=operator, json={"document": {}, "scope": "network"})
    assert reply.status_code == 403 and "admin" in reply.json()["error"]["message"]
    reply = fabric.http("POST", "/v1/config", token=operator,
                        json={"document": {"labels": {"team": "x"}}, "scope": f"domain:{workflows.domain}"})
    assert reply.status_code == 201
    viewer = fabric.api_token("viewer", [workflows.domain])["token"]
    assert fabric.http("GET", "/v1/config/status", token=viewer).status_code == 200
    reply = fabric.http("POST", "/v1/config/rollback", token=viewer, json={})
    assert reply.status_code == 403
