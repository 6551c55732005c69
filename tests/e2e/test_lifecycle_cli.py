"""Node lifecycle through the CLI: `polyfabric node cordon|uncordon|suspend|resume|drain|retire|quarantine`.

Each command runs as its own process (`python -m polyfabric ... --json`) with an operator token
in POLYFABRIC_TOKEN; every allowed move is audited with that operator as the actor, and a refused
move exits non-zero with one readable line (no traceback) and changes nothing.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e

OPERATOR = "ops-alice"


@pytest.fixture(scope="module")
def operator(fabric) -> str:
    return fabric.api_token("operator", ["test"], name=OPERATOR)["token"]


@pytest.fixture(scope="module")
def join(fabric) -> str:
    return fabric.join_token()["token"]


def _node(fabric, join, name: str) -> str:
    return fabric.wait_state(fabric.agent(name, join_token=join), "active")["id"]


def _act(fabric, token: str, verb: str, name: str, reason: str) -> dict:
    result = fabric.cli("node", verb, name, "--reason", reason, "--json", token=token)
    assert result.returncode == 0, f"node {verb} {name}: {result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def _check_walk(fabric, operator: str, name: str, node_id: str, steps: list[tuple[str, str, str]]) -> None:
    for verb, before, after in steps:
        count = len(fabric.transitions(node_id))
        reason = f"{verb} for the test"
        out = _act(fabric, operator, verb, name, reason)
        assert (out["id"], out["state"]) == (node_id, after), (verb, out)
        assert fabric.node(node_id)["state"] == after

        new = fabric.transitions(node_id)[count:]
        assert len(new) == 1, (verb, new)
        record = new[0]
        assert record["actor"] == f"token:{OPERATOR}"
        assert record["cause"] == reason
        assert record["details"] == {"from": before, "to": after, "trigger": "operator", "action": verb}
        assert record["domain"] == "test"


def test_allowed_transitions_work_and_are_audited_with_the_operator_as_actor(fabric, operator, join):
    node_id = _node(fabric, join, "lc-walk")
    _check_walk(fabric, operator, "lc-walk", node_id, [
        ("cordon", "active", "cordoned"),
        ("uncordon", "cordoned", "active"),
        ("suspend", "active", "suspended"),
        ("resume", "suspended", "active"),
        ("cordon", "active", "cordoned"),
        ("suspend", "cordoned", "suspended"),
        ("resume", "suspended", "active"),
        ("quarantine", "active", "quarantined"),
        ("resume", "quarantined", "active"),
        ("retire", "active", "retired"),
    ])
    # The human-readable form of the same command says what happened in one line.
    other = _node(fabric, join, "lc-plain")
    result = fabric.cli("node", "cordon", "lc-plain", token=operator)
    assert result.returncode == 0 and result.stdout.strip() == f"node lc-plain ({other}) is now cordoned"


def test_retire_directly_from_active(fabric, operator, join):
    node_id = _node(fabric, join, "lc-retire")
    _check_walk(fabric, operator, "lc-retire", node_id, [("retire", "active", "retired")])


def test_a_drained_node_with_no_work_retires_by_itself(fabric, operator, join):
    """Draining waits for the node's tasks; with none, the drain completes on the lifecycle
    controller's next pass (about a second): Draining -> Retired, trigger system. (Draining with
    work, and drain deadlines: test_self_healing.py.)"""
    node_id = _node(fabric, join, "lc-drain")
    count = len(fabric.transitions(node_id))
    out = _act(fabric, operator, "drain", "lc-drain", "drain for the test")
    assert (out["id"], out["state"]) == (node_id, "draining")
    fabric.wait_state(node_id, "retired", timeout=10)
    drained, retired = fabric.transitions(node_id)[count:]
    assert (drained["actor"], drained["cause"], drained["details"]) == (
        f"token:{OPERATOR}", "drain for the test",
        {"from": "active", "to": "draining", "trigger": "operator", "action": "drain"})
    assert (retired["actor"], retired["cause"], retired["details"]) == (
        "system:lifecycle", "drain complete: no task left on the node",
        {"from": "draining", "to": "retired", "trigger": "system", "rule": "drain"})


@pytest.mark.parametrize(("name", "setup", "verb", "expected"), [
    ("lc-bad-uncordon", [], "uncordon", "is already active"),
    ("lc-bad-resume", [], "resume", "is already active"),
    ("lc-bad-suspend", ["quarantine"], "suspend", "cannot go from quarantined to suspended"),
    ("lc-bad-cordon", ["quarantine"], "cordon", "cannot go from quarantined to cordoned"),
    ("lc-bad-retired", ["retire"], "uncordon", "cannot go from retired to active; retired is final"),
])
def test_illegal_transition_exits_non_zero_naming_the_states_without_a_traceback(
        fabric, operator, join, name, setup, verb, expected):
    node_id = _node(fabric, join, name)
    for step in setup:
        _act(fabric, operator, step, name, "setup")
    state = fabric.node(node_id)["state"]
    count = len(fabric.transitions(node_id))

    result = fabric.cli("node", verb, name, "--json", token=operator)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    line = result.stderr.strip()
    assert line.startswith("Error: ") and "\n" not in line, line
    assert expected in line and node_id in line, line
    assert "(HTTP 409)" in line
    assert result.stdout == ""  # no half-written JSON

    # Nothing changed and nothing was recorded.
    assert fabric.node(node_id)["state"] == state
    assert len(fabric.transitions(node_id)) == count


def test_refusals_from_auth_and_unknown_nodes_are_one_line_errors(fabric, join):
    node_id = _node(fabric, join, "lc-auth")
    viewer = fabric.api_token("viewer", ["test"])["token"]

    result = fabric.cli("node", "cordon", "lc-auth", token=viewer)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "needs role operator or higher; this token has role viewer (HTTP 403)" in result.stderr

    result = fabric.cli("node", "cordon", "no-such-node", token=viewer)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no node with id or name 'no-such-node' (HTTP 404)" in result.stderr

    result = fabric.cli("node", "cordon", "lc-auth", token=None)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no API token" in result.stderr

    result = fabric.cli("node", "cordon", "lc-auth", url="http://127.0.0.1:1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot reach the coordinator at http://127.0.0.1:1" in result.stderr

    assert fabric.node(node_id)["state"] == "active"
