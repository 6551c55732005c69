"""Two-sided negotiation end to end: the lease is an offer, the node's owner policy answers it.

Two real agents in domain lab: `picky` runs with `--policy FILE` (its owner accepts only jobs of
domain lab), `easy` accepts anything. Jobs of domain ops prefer `picky` (`rank:`), so the
coordinator offers them there first: the owner declines (signed, audited, shown in `job show`),
and the task runs on `easy`. Then the owner edits the file and reloads (`polyfabric agent
reload`): new offers follow the new policy, and a running task the new policy no longer allows is
asked to checkpoint and stop, then handed back (`on_change: stop`): a command is stopped (SIGTERM)
and runs again elsewhere, a checkpointing function task resumes elsewhere from the checkpoint it
saved when asked. With `on_change: finish` it runs to its end on the node, while new offers of
the same kind are declined.
"""

from __future__ import annotations

import time

import pytest
import yaml

from polyfabric.client.errors import ApiError
from polyfabric.testing import wait_until

pytestmark = pytest.mark.e2e

OK = ["sh", "-c", "true"]
PREFER_PICKY = 'node.name == "picky" ? 100 : 0'

# A function task that saves a checkpoint only when asked to stop: where its next attempt starts
# shows whether the stop came after a checkpoint (from the count it reached) or not (from 0).
FUNCTIONS = """
import time
import polyfabric

def count_until_asked(n, progress, step_s=0.05):
    ctx = polyfabric.task_context()
    state = ctx.restore() or {"i": 0, "starts": []}
    state["starts"].append({"attempt": ctx.attempt, "from": state["i"]})
    while state["i"] < n:
        if ctx.should_stop():
            ctx.checkpoint(state)
            return {"stopped_at": state["i"]}
        time.sleep(step_s)
        state["i"] += 1
        with open(progress, "w") as handle:
            handle.write(str(state["i"]))
    return state
"""


@pytest.fixture(scope="module")
def pair(fabric, workflows):
    for name in ("lab", "ops"):
        try:
            fabric.admin.post("/v1/domains", {"name": name})
        except ApiError as exc:
            assert exc.status == 409
    policy = fabric.root / "picky-policy.yaml"
    # The owner keeps this policy private (`advertise: false`): the coordinator cannot know what the
    # node accepts, so it offers, and the agent declines. The last tests advertise it.
    policy.write_text(yaml.safe_dump({"accept": {"domains": ["lab"]}, "reason": "owner's rule", "advertise": False}))
    join = fabric.join_token("lab")["token"]
    lib = fabric.root / "negotiation-lib"
    lib.mkdir(exist_ok=True)
    (lib / "negotiation_functions.py").write_text(FUNCTIONS)
    extra = ["--slots", "2", "--kill-grace", "2", "--stop-grace", "0", "--pythonpath", str(lib)]
    picky = fabric.agent("picky", join_token=join, extra_args=[*extra, "--policy", str(policy)])
    easy = fabric.agent("easy", join_token=join, extra_args=extra)
    for agent in (picky, easy):
        fabric.wait_state(agent, "active", timeout=40)
    workflows.workers.extend([picky, easy])
    return {"picky": fabric.wait_joined(picky), "easy": fabric.wait_joined(easy), "policy": policy,
            "picky_agent": picky}


def test_a_node_owners_decline_is_honoured_the_task_runs_elsewhere(fabric, workflows, pair):
    job = workflows.jobs.submit({"name": "foreign", "rank": PREFER_PICKY, "tasks": {"a": {"command": OK}}},
                                None, "ops")["id"]
    assert workflows.wait(job, timeout=90)["status"] == "succeeded"
    task = workflows.task(job, "a")
    assert task["node_id"] == pair["easy"]
    assert [(a["status"], a["node_id"]) for a in task["attempts"]] == [
        ("declined", pair["picky"]), ("succeeded", pair["easy"])]
    assert task["failures"] == 0
    assert "domain 'ops' are not accepted here" in task["attempts"][0]["error"]

    shown = fabric.cli_json("job", "show", job)["policy"]["declines"]
    assert [(d["node_id"], d["policy"]) for d in shown] == [(pair["picky"], "owner v1")]
    assert "owner's rule" in shown[0]["reason"]
    assert "Declined:" in fabric.cli("job", "show", job).stdout
    assert "domain 'ops'" in fabric.cli("task", "show", task["id"]).stdout

    audited = [r for r in fabric.audit(kind="task.declined") if r["subject"] == f"task:{task['id']}"]
    assert len(audited) == 1
    record = audited[0]
    assert record["actor"] == f"node:{pair['picky']}" and "domain 'ops'" in record["cause"]
    assert record["details"]["signature_valid"] is True  # Ed25519 over the answer, by the node's key
    assert record["details"]["answer"]["decision"] == "decline"

    # Jobs of the owner's own domain are accepted on the preferred node.
    own = workflows.jobs.submit({"name": "own", "rank": PREFER_PICKY, "tasks": {"a": {"command": OK}}},
                                None, "lab")["id"]
    assert workflows.wait(own, timeout=60)["status"] == "succeeded"
    assert workflows.task(own, "a")["node_id"] == pair["picky"]


def test_a_task_only_a_declining_node_could_take_waits_and_says_why(fabric, workflows, pair):
    job = workflows.jobs.submit({"name": "only-picky", "requires": 'node.name == "picky"',
                                 "tasks": {"a": {"command": OK}}}, None, "ops")["id"]
    task = workflows.wait_task(job, "a", lambda t: "declined by 1 node" in (t.get("pending_reason") or ""),
                               timeout=60, what="a pending reason naming the decline")
    reason = task["pending_reason"]
    assert "2 nodes evaluated" in reason and "requirement not met" in reason, reason
    workflows.jobs.post(f"/v1/jobs/{job}/cancel", {"reason": "test"})


def test_reloading_the_owner_policy_changes_new_offers_and_stops_what_it_no_longer_allows(fabric, workflows, pair):
    policy = pair["policy"]
    policy.write_text(yaml.safe_dump({"accept": {"domains": ["lab", "ops"]}, "on_change": "stop", "advertise": False}))
    result = fabric.cli("agent", "reload", "--data-dir", str(pair["picky_agent"].data_dir))
    assert result.returncode == 0, result.stderr
    wait_until(lambda: "reloaded: version 2" in pair["picky_agent"].log(), timeout=20, message="the reload")

    release = workflows.path("negotiation.release")
    release.unlink(missing_ok=True)
    hold = f"while [ ! -e '{release}' ]; do sleep 0.05; done"
    job = workflows.jobs.submit({"name": "long", "rank": PREFER_PICKY,
                                 "tasks": {"a": {"command": ["sh", "-c", hold]}}}, None, "ops")["id"]
    workflows.wait_running(job, "a", attempt=1, timeout=60)
    assert workflows.task(job, "a")["node_id"] == pair["picky"]  # the new policy accepts ops

    # The owner closes the node to ops again: the running task is handed back and moves.
    policy.write_text(yaml.safe_dump({"accept": {"domains": ["lab"]}, "on_change": "stop", "advertise": False}))
    assert fabric.cli("agent", "reload", "--data-dir", str(pair["picky_agent"].data_dir)).returncode == 0
    moved = workflows.wait_task(job, "a", lambda t: t["status"] == "running" and t["node_id"] == pair["easy"],
                                timeout=60, what="running on easy")
    release.touch()
    assert workflows.wait(job, timeout=60)["status"] == "succeeded"
    attempts = workflows.task(job, "a")["attempts"]
    assert attempts[0]["node_id"] == pair["picky"] and attempts[0]["status"] == "rejected"
    assert "no longer allows" in attempts[0]["error"]
    assert moved["failures"] == 0


def _reload(fabric, pair, doc: dict) -> None:
    """The owner edits the node's policy file and runs `polyfabric agent reload`; returns once
    the agent says it reloaded."""
    agent = pair["picky_agent"]
    before = agent.log().count("reloaded: version")
    pair["policy"].write_text(yaml.safe_dump(doc))
    result = fabric.cli("agent", "reload", "--data-dir", str(agent.data_dir))
    assert result.returncode == 0, result.stderr
    wait_until(lambda: agent.log().count("reloaded: version") > before, timeout=20, message="the reload")


def test_a_task_stopped_by_a_reload_checkpoints_first_and_resumes_elsewhere_from_it(fabric, workflows, pair):
    grace = 60.0  # it stops by its checkpoint long before this
    _reload(fabric, pair, {"accept": {"domains": ["lab", "ops"]}, "on_change": "stop", "checkpoint_grace": "60s",
                           "advertise": False})
    progress = workflows.path(f"negotiation-progress-{fabric.backend}")
    progress.unlink(missing_ok=True)
    job = workflows.jobs.submit({"name": "count", "rank": PREFER_PICKY, "tasks": {"count": {
        "function": "negotiation_functions:count_until_asked", "retries": 0,
        "args": {"n": 200, "progress": str(progress)}}}}, None, "ops")["id"]
    workflows.wait_running(job, "count", attempt=1, timeout=60)
    assert workflows.task(job, "count")["node_id"] == pair["picky"]
    wait_until(lambda: progress.exists() and int(progress.read_text() or 0) >= 5, timeout=30,
               message="attempt 1 counting")

    asked = time.time()
    _reload(fabric, pair, {"accept": {"domains": ["lab"]}, "on_change": "stop", "checkpoint_grace": "60s",
                           "advertise": False})
    assert workflows.wait(job, timeout=90)["status"] == "succeeded"
    task = workflows.task(job, "count")
    first, second = task["attempts"]
    assert (first["status"], first["node_id"]) == ("rejected", pair["picky"])
    assert "no longer allows" in first["error"]
    assert (second["status"], second["node_id"]) == ("succeeded", pair["easy"])
    assert first["finished_at"] - asked < grace / 2  # it stopped by itself once asked, not at the grace
    assert task["failures"] == 0
    result = task["result"]
    assert result["i"] == 200
    # Attempt 2 began from the checkpoint attempt 1 saved when it was asked to stop (the only one
    # it saved), not from the start.
    assert [s["attempt"] for s in result["starts"]] == [1, 2]
    assert result["starts"][1]["from"] >= 5


def test_with_on_change_finish_a_running_task_finishes_here_and_new_offers_are_declined(fabric, workflows, pair):
    _reload(fabric, pair, {"accept": {"domains": ["lab", "ops"]}, "on_change": "finish", "advertise": False})
    release = workflows.path(f"negotiation-finish-{fabric.backend}.release")
    release.unlink(missing_ok=True)
    hold = f"while [ ! -e '{release}' ]; do sleep 0.05; done"
    long = workflows.jobs.submit({"name": "long-finish", "rank": PREFER_PICKY,
                                  "tasks": {"a": {"command": ["sh", "-c", hold]}}}, None, "ops")["id"]
    workflows.wait_running(long, "a", attempt=1, timeout=60)
    assert workflows.task(long, "a")["node_id"] == pair["picky"]

    _reload(fabric, pair, {"accept": {"domains": ["lab"]}, "on_change": "finish", "advertise": False})
    # A new offer of domain ops is declined and runs elsewhere...
    late = workflows.jobs.submit({"name": "late", "rank": PREFER_PICKY, "tasks": {"a": {"command": OK}}},
                                 None, "ops")["id"]
    assert workflows.wait(late, timeout=90)["status"] == "succeeded"
    assert [(a["status"], a["node_id"]) for a in workflows.task(late, "a")["attempts"]] == [
        ("declined", pair["picky"]), ("succeeded", pair["easy"])]
    # ... while the running one is left alone, and finishes on this node.
    running = workflows.task(long, "a")
    assert (running["status"], running["attempt"], running["node_id"]) == ("running", 1, pair["picky"])
    release.touch()
    assert workflows.wait(long, timeout=60)["status"] == "succeeded"
    assert [(a["status"], a["node_id"]) for a in workflows.task(long, "a")["attempts"]] == [
        ("succeeded", pair["picky"])]


def test_an_advertised_owner_policy_is_followed_by_the_scheduler_without_a_decline(fabric, workflows, pair):
    """Two-sided matchmaking: with its policy advertised (the default), the coordinator knows what
    the node accepts and does not offer it anything else; the task goes to `easy` at once (one
    attempt, no decline), and a task only `picky` could run waits, naming the owner's policy."""
    _reload(fabric, pair, {"accept": {"domains": ["lab"]}, "reason": "owner's rule"})
    version = int(pair["picky_agent"].log().rsplit("reloaded: version", 1)[1].split()[0])
    wait_until(lambda: any(r["subject"] == f"node:{pair['picky']}"
                           and (r["details"].get("owner_policy") or {}).get("version") == version
                           for r in fabric.audit(kind="node.owner_policy")),
               timeout=30, message="the reloaded policy advertised to the coordinator")

    job = workflows.jobs.submit({"name": "advertised", "rank": PREFER_PICKY, "tasks": {"a": {"command": OK}}},
                                None, "ops")["id"]
    assert workflows.wait(job, timeout=90)["status"] == "succeeded"
    assert [(a["status"], a["node_id"]) for a in workflows.task(job, "a")["attempts"]] == [
        ("succeeded", pair["easy"])]

    only = workflows.jobs.submit({"name": "only-picky-advertised", "requires": 'node.name == "picky"',
                                  "tasks": {"a": {"command": OK}}}, None, "ops")["id"]
    named = f"policy owner v{version} (node)"
    workflows.wait_task(only, "a", lambda t: named in (t.get("pending_reason") or ""),
                        timeout=60, what="a pending reason naming the owner's policy")
    assert workflows.task(only, "a")["attempts"] == []  # never offered, so never declined
    workflows.jobs.post(f"/v1/jobs/{only}/cancel", {"reason": "test"})

    # Jobs of the owner's own domain still go to the node they prefer.
    own = workflows.jobs.submit({"name": "own-advertised", "rank": PREFER_PICKY, "tasks": {"a": {"command": OK}}},
                                None, "lab")["id"]
    assert workflows.wait(own, timeout=60)["status"] == "succeeded"
    assert workflows.task(own, "a")["node_id"] == pair["picky"]
