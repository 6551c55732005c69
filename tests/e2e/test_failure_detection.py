"""The failure detector, end to end: a killed agent goes Down within the bound, comes back by itself,
health scripts raise conditions, and a healthy node is never declared dead.

Coordinator settings (see conftest): heartbeat 0.5 s, Unreachable after 1.5 s, Down after 3 s,
checked every 0.25 s. The documented bound (DetectorSettings): a silent node is Down at most
down_after + check_interval after its last heartbeat, and the last heartbeat was no later than
the kill; MARGIN absorbs scheduling on a loaded 2-core CI machine.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from polyfabric.testing import wait_until

from .conftest import CHECK, DOWN

pytestmark = pytest.mark.e2e

MARGIN = 1.5
DOWN_BOUND = DOWN + CHECK + MARGIN


@pytest.fixture(scope="module")
def steady(fabric):
    """A healthy node under no load that lives through the whole module: the false-alarm canary."""
    agent = fabric.agent("fd-steady", join_token=fabric.join_token()["token"])
    node = fabric.wait_state(agent, "active")
    return {"agent": agent, "id": node["id"], "since": time.monotonic()}


def _condition(node: dict, kind: str) -> dict | None:
    return next((c for c in node["conditions"] if c["type"] == kind), None)


def _kill_and_wait_down(fabric, agent, node_id: str) -> tuple[float, dict]:
    """kill -9 the agent; return (seconds from the kill to the Down record, that record)."""
    before = len(fabric.transitions(node_id))
    killed_at = time.time()
    started = time.monotonic()
    agent.kill(signal.SIGKILL)
    fabric.wait_state(node_id, "down", timeout=DOWN_BOUND + 10)
    observed = time.monotonic() - started
    record = fabric.transitions(node_id)[before:][-1]
    assert record["details"]["to"] == "down"
    elapsed = record["at"] - killed_at  # the coordinator's clock: same machine, same time.time()
    assert elapsed <= DOWN_BOUND, f"Down {elapsed:.2f}s after the kill; bound {DOWN_BOUND:.2f}s"
    assert observed <= DOWN_BOUND + 1.0, f"Down observed {observed:.2f}s after the kill"
    # Not early either: the silence the detector acted on is past the Down bound (measured from the
    # last heartbeat it received, which a starved agent may have sent well before the kill).
    silence = float(re.fullmatch(r"no heartbeat for ([0-9.]+)s \(Down bound [0-9.]+s\)", record["cause"]).group(1))
    assert DOWN <= silence <= DOWN_BOUND, record["cause"]  # (the cause rounds it to 0.1 s)
    return elapsed, record


def test_killed_agent_goes_down_within_the_bound_and_returns_to_active_by_itself(fabric, steady):
    agent = fabric.agent("fd-crash", join_token=fabric.join_token()["token"])
    node_id = fabric.wait_state(agent, "active")["id"]

    elapsed, record = _kill_and_wait_down(fabric, agent, node_id)
    print(f"kill -9 -> Down in {elapsed:.2f}s (bound {DOWN_BOUND:.2f}s)")

    # The transition and its cause are in the audit chain.
    assert record["actor"] == "system:health"
    assert record["details"] == {"from": "active", "to": "down", "trigger": "health"}
    assert record["cause"].startswith("no heartbeat for ") and f"(Down bound {DOWN:g}s)" in record["cause"]
    down = fabric.node(node_id)
    assert down["resume_state"] == "active"
    # The node is reported unreachable and not ready while it is Down.
    wait_until(lambda: (_condition(fabric.node(node_id), "Unreachable") or {}).get("status") is True,
               timeout=5, message="the Unreachable condition")
    assert _condition(fabric.node(node_id), "Ready")["status"] is False

    # Restart the agent (same data dir, no token): the same node becomes Active again by itself.
    again = fabric.agent("fd-crash", data_dir=agent.data_dir)
    back = fabric.wait_state(node_id, "active", timeout=20)
    assert back["id"] == node_id and again.node_id == node_id
    last = fabric.transitions(node_id)[-1]
    assert last["details"] == {"from": "down", "to": "active", "trigger": "health"}
    assert last["cause"] == "heartbeats resumed" and last["actor"] == "system:health"
    wait_until(lambda: (_condition(fabric.node(node_id), "Ready") or {}).get("status") is True,
               timeout=5, message="the node to be Ready again")


def test_cordoned_node_that_went_down_returns_to_cordoned(fabric, steady):
    agent = fabric.agent("fd-cordoned", join_token=fabric.join_token()["token"])
    node_id = fabric.wait_state(agent, "active")["id"]
    assert fabric.admin.post(f"/v1/nodes/{node_id}/cordon", {"reason": "disk swap"})["state"] == "cordoned"

    _, record = _kill_and_wait_down(fabric, agent, node_id)
    assert record["details"] == {"from": "cordoned", "to": "down", "trigger": "health"}
    assert fabric.node(node_id)["resume_state"] == "cordoned"

    fabric.agent("fd-cordoned", data_dir=agent.data_dir)
    back = fabric.wait_state(node_id, "cordoned", timeout=20)
    assert back["resume_state"] is None
    last = fabric.transitions(node_id)[-1]
    assert last["details"] == {"from": "down", "to": "cordoned", "trigger": "health"}


def _write_script(path: Path, message: str, code: int) -> None:
    """Replace the health script atomically (the agent may be running the old one right now)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"#!/bin/sh\necho 'checking the scratch volume'\necho '{message}'\nexit {code}\n")
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def test_failing_health_script_raises_the_degraded_condition_with_its_message(fabric, steady, tmp_path: Path):
    script = tmp_path / "health.sh"
    _write_script(script, "scratch volume /mnt/scratch is not mounted", 1)
    agent = fabric.agent("fd-degraded", join_token=fabric.join_token()["token"],
                         extra_args=["--health-script", str(script)])
    node_id = fabric.wait_joined(agent)

    def degraded() -> dict | None:
        node = fabric.node(node_id)
        cond = _condition(node, "Degraded")
        return node if cond and cond["status"] else None

    node = wait_until(degraded, timeout=20, message="the Degraded condition")
    cond = _condition(node, "Degraded")
    assert cond["reason"] == "script: scratch volume /mnt/scratch is not mounted"
    assert _condition(node, "Ready") == {"type": "Ready", "status": False, "reason": "health checks failing"}
    # A condition, not a state: the node is up (its first heartbeat may still be settling when
    # the condition shows, since conditions are read from memory and states from the store).
    assert fabric.wait_state(node_id, "active", timeout=10)["state"] == "active"
    script_check = next(h for h in node["health"] if h["name"] == "script")
    assert script_check["ok"] is False and script_check["message"] == "scratch volume /mnt/scratch is not mounted"
    # The flip is audited by the same detector pass, committed just after the condition shows.
    flips = wait_until(lambda: [r for r in fabric.audit(node=node_id, kind="node.condition")
                                if "Degraded true" in r["cause"]], timeout=5, message="the audited flip")
    assert flips[0]["details"]["conditions"]["Degraded"] is True

    # The owner fixes it: the next check passes and the condition clears by itself.
    _write_script(script, "scratch mounted", 0)
    wait_until(lambda: _condition(fabric.node(node_id), "Degraded")["status"] is False, timeout=20,
               message="the Degraded condition to clear")
    assert _condition(fabric.node(node_id), "Ready")["status"] is True


def test_healthy_node_is_never_marked_down(fabric, steady):
    """Runs last in the module: the canary has lived through the other tests' kills and restarts.
    If this test runs alone, it watches the canary until it has lived twice the Down bound."""
    node_id = steady["id"]

    def watched_long_enough() -> bool:
        assert fabric.node(node_id)["state"] == "active"
        return time.monotonic() - steady["since"] > 2 * DOWN

    wait_until(watched_long_enough, timeout=4 * DOWN, interval=0.2, message="the canary to live 2x the Down bound")
    assert steady["agent"].alive()
    node = fabric.node(node_id)
    assert node["state"] == "active"
    assert _condition(node, "Ready")["status"] is True
    assert _condition(node, "Unreachable")["status"] is False
    # Never Down, never even Unreachable: the only transition is its first heartbeat.
    assert [r["details"]["to"] for r in fabric.transitions(node_id)] == ["active"]
    assert not [r for r in fabric.audit(node=node_id, kind="node.condition") if "Unreachable true" in r["cause"]]
