"""Remediation policies and the offer bound, end to end (docs/policy.md).

One real coordinator per store (SQLite, PostgreSQL) started for this module with
`--offer-timeout 4s` and a detector slower than that (Unreachable after 8 s, Down after 15 s), so
that an agent that stops answering is seen as a non-answer to its offer long before it is Down.

* Remediation: a `cordon` policy in dry-run only audits what it would do; enforced, it cordons the
  node whose labels violate it (audited with the policy named) and leaves a conforming node alone;
  a `quarantine` policy then quarantines the violating node.
* Offer bound: an agent frozen with SIGSTOP right before a task is offered to it never answers;
  after 4 s the offer counts as a decline (attempt `declined`, audited as `task.declined` by
  `system:scheduler`), and the task runs on another node.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import yaml

from polyfabric.testing import CoordinatorProcess, wait_until

from .conftest import Fabric

pytestmark = pytest.mark.e2e

OFFER_TIMEOUT = 4.0


@pytest.fixture(scope="module")
def fabric(module_backend: str, module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    root = tmp_path_factory.mktemp(f"remediation-{module_backend}")
    coordinator = CoordinatorProcess(root / "coordinator", module_db_url, heartbeat_interval=0.5,
                                     unreachable_after=8.0, down_after=15.0,
                                     extra_args=["--offer-timeout", f"{OFFER_TIMEOUT:g}s"])
    coordinator.start()
    fab = Fabric(coordinator, root, module_backend)
    try:
        yield fab
    finally:
        fab.close()
        coordinator.stop()


@pytest.fixture(scope="module")
def nodes(fabric):
    join = fabric.join_token("test")["token"]
    extra = ["--slots", "2", "--kill-grace", "2", "--stop-grace", "0"]
    old = fabric.agent("rem-old", join_token=join, labels="tier=old", extra_args=extra)
    new = fabric.agent("rem-new", join_token=join, labels="tier=new", extra_args=extra)
    for agent in (old, new):
        fabric.wait_state(agent, "active", timeout=40)
    return {"old": fabric.wait_joined(old), "new": fabric.wait_joined(new)}


def _apply(fabric: Fabric, name: str, **doc: object) -> dict:
    path = fabric.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "kind": "remediation", "scope": "network", **doc}))
    return fabric.cli_json("policy", "apply", str(path))


NOT_OLD = 'node.labels.tier != "old"'


def test_remediation_dry_run_audits_then_enforced_cordons_then_quarantines(fabric, nodes):
    old, new = nodes["old"], nodes["new"]
    _apply(fabric, "no-old", allow=NOT_OLD, action="cordon", mode="dry-run", reason="tier old is retired")

    def dry_run() -> list[dict] | None:
        found = [r for r in fabric.audit(kind="policy.dry_run") if r["subject"] == f"node:{old}"]
        return found or None

    [record] = wait_until(dry_run, timeout=30, message="the dry-run remediation audit")
    assert record["actor"] == "system:policy"
    assert record["cause"].startswith("would cordon: network policy no-old v1 (cordon): tier old is retired")
    assert record["details"]["policy"] == "no-old" and record["details"]["version"] == 1
    assert fabric.node(old)["state"] == "active"  # dry-run: nothing done
    assert not [r for r in fabric.audit(kind="policy.dry_run") if r["subject"] == f"node:{new}"]

    _apply(fabric, "no-old", allow=NOT_OLD, action="cordon", reason="tier old is retired")  # v2, enforced
    fabric.wait_state(old, "cordoned", timeout=30)
    [cordon] = [t for t in fabric.transitions(old) if t["details"]["to"] == "cordoned"]
    assert cordon["actor"] == "system:policy" and cordon["details"]["trigger"] == "policy"
    assert cordon["details"]["policy"] == "no-old" and cordon["details"]["version"] == 2
    assert cordon["cause"] == "network policy no-old v2 (cordon): tier old is retired"
    assert fabric.node(new)["state"] == "active"
    assert [t["details"]["to"] for t in fabric.transitions(new)] == ["active"]  # only its join
    shown = fabric.cli("node", "show", old)
    assert shown.returncode == 0 and "cordoned" in shown.stdout.lower()

    _apply(fabric, "quarantine-old", allow=NOT_OLD, action="quarantine", reason="quarantine tier old")
    node = fabric.wait_state(old, "quarantined", timeout=30)
    assert node["quarantine"]["trigger"] == "policy"
    assert "quarantine-old v1" in node["quarantine"]["reason"]
    [quarantine] = [t for t in fabric.transitions(old) if t["details"]["to"] == "quarantined"]
    assert quarantine["actor"] == "system:policy" and quarantine["details"]["policy"] == "quarantine-old"
    assert fabric.node(new)["state"] == "active"
    for name in ("no-old", "quarantine-old"):
        assert fabric.cli("policy", "rm", name).returncode == 0


def test_an_unanswered_offer_counts_as_a_decline_and_the_task_runs_elsewhere(fabric, workflows, nodes):
    join = fabric.join_token("test")["token"]
    extra = ["--slots", "2", "--kill-grace", "2", "--stop-grace", "0"]
    frozen = fabric.agent("frozen", join_token=join, extra_args=extra)
    fabric.wait_state(frozen, "active", timeout=40)
    frozen_id = fabric.wait_joined(frozen)
    frozen.kill(signal.SIGSTOP)  # alive and Active for the coordinator, but it answers nothing
    try:
        job = workflows.submit({"name": "offer-bound", "rank": 'node.name == "frozen" ? 100 : 0',
                                "tasks": {"a": {"command": ["sh", "-c", "true"]}}})
        assert workflows.wait(job, timeout=90)["status"] == "succeeded"
        task = workflows.task(job, "a")
        first = task["attempts"][0]
        assert (first["status"], first["node_id"]) == ("declined", frozen_id), task["attempts"]
        assert f"not answered within {OFFER_TIMEOUT:g}s" in first["error"]
        assert task["node_id"] != frozen_id and task["attempts"][-1]["status"] == "succeeded"
        assert task["failures"] == 0

        [audited] = [r for r in fabric.audit(kind="task.declined") if r["subject"] == f"task:{task['id']}"
                     and r["details"]["node"] == frozen_id]
        assert audited["actor"] == "system:scheduler" and audited["details"]["timeout"] is True
        declines = fabric.cli_json("job", "show", job)["policy"]["declines"]
        assert frozen_id in [d["node_id"] for d in declines]
        assert fabric.node(frozen_id)["state"] == "active"  # not Down: the offer bound decided, not the detector
    finally:
        frozen.kill(signal.SIGCONT)
