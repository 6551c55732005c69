"""Joining the fabric: join tokens, the node's key as its identity, refusals, revocation.

Real `polyfabric server` and `polyfabric agent` processes on loopback, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyfabric.testing import wait_until

pytestmark = pytest.mark.e2e

CAPACITY = {"cpu_millis": 2000, "memory_bytes": 4 << 30, "disk_bytes": 20 << 30, "gpus": 0, "slots": 4}


def _registered(fabric, name: str) -> list[dict]:
    return [n for n in fabric.nodes() if n["name"] == name]


def test_agent_joins_with_a_join_token_and_is_visible_in_the_api_and_the_cli(fabric):
    token = fabric.join_token(uses=3)
    agent = fabric.agent("join-visible", join_token=token["token"],
                         labels="region=eu-west,zone=eu-west-1b,rack=r07,disk=nvme")
    node = fabric.wait_state(agent, "active")
    node_id = agent.node_id
    assert node["id"] == node_id and node_id.startswith("n-")

    listed = {n["id"]: n for n in fabric.nodes()}
    assert node_id in listed
    n = listed[node_id]
    assert n["name"] == "join-visible"
    assert n["domain"] == "test"
    assert n["state"] == "active"
    assert not n["revoked"]
    assert {k: n["capacity"][k] for k in CAPACITY} == CAPACITY
    assert n["labels"] == {"region": "eu-west", "zone": "eu-west-1b", "rack": "r07", "disk": "nvme"}
    assert n["topology"] == {"region": "eu-west", "zone": "eu-west-1b", "rack": "r07"}
    assert n["last_heartbeat_at"] is not None

    # The token counted exactly one use, and the join is in the audit chain.
    assert fabric.token_row(token["id"])["uses"] == 1
    registered = fabric.audit(node=node_id, kind="node.registered")
    assert len(registered) == 1 and registered[0]["cause"] == f"joined with token {token['id']}"

    # The CLI, run as a separate process with POLYFABRIC_URL / POLYFABRIC_TOKEN, sees the same node.
    result = fabric.cli("node", "ls", "--json")
    assert result.returncode == 0, result.stderr
    by_id = {x["id"]: x for x in json.loads(result.stdout)}
    c = by_id[node_id]
    assert (c["name"], c["domain"], c["state"]) == ("join-visible", "test", "active")
    assert {k: c["capacity"][k] for k in CAPACITY} == CAPACITY
    assert c["labels"] == n["labels"] and c["topology"] == n["topology"]

    # Label filters and `node show` by name work from the CLI too.
    filtered = fabric.cli_json("node", "ls", "--label", "zone=eu-west-1b")
    assert [x["id"] for x in filtered] == [node_id]
    assert fabric.cli_json("node", "show", "join-visible")["id"] == node_id
    table = fabric.cli("node", "ls")
    assert table.returncode == 0 and "join-visible" in table.stdout and "zone=eu-west-1b" in table.stdout


def test_restarted_agent_with_the_same_data_dir_is_the_same_node_and_needs_no_token(fabric):
    token = fabric.join_token(uses=1)
    first = fabric.agent("join-restart", join_token=token["token"])
    node_id = fabric.wait_state(first, "active")["id"]
    assert first.stop() == 0

    # Same data dir, no join token (and the only use of the token is spent anyway).
    again = fabric.agent("join-restart", data_dir=first.data_dir)
    wait_until(lambda: again.log().count("joined domain test") == 2, timeout=20,
               message="the restarted agent to reconnect")
    assert again.alive(), again.log()
    assert again.node_id == node_id
    assert fabric.wait_state(node_id, "active")["id"] == node_id
    # Its heartbeats arrive: the node's last heartbeat moves on after the restart.
    before = fabric.node(node_id)["last_heartbeat_at"]
    wait_until(lambda: fabric.node(node_id)["last_heartbeat_at"] > before, timeout=10,
               message="heartbeats from the restarted agent")

    assert [n["id"] for n in _registered(fabric, "join-restart")] == [node_id]
    assert fabric.token_row(token["id"])["uses"] == 1
    assert len(fabric.audit(node=node_id, kind="node.registered")) == 1


def _no_registration_since(fabric, seq: int) -> None:
    """No registration was written after audit record `seq` (other nodes' conditions may be)."""
    written = [r for r in fabric.audit(after=seq) if r["action"] in ("node.registered", "token.used")]
    assert written == [], written


def _refused(fabric, agent, *expected: str) -> str:
    """The agent exits 2 by itself; its log (stderr) says why."""
    code = agent.wait_exit(30)
    log = agent.log()
    assert code == 2, f"agent exited with {code}:\n{log}"
    assert "the coordinator refused this node" in log, log
    for text in expected:
        assert text in log, f"{text!r} not in the agent's log:\n{log}"
    assert "Traceback" not in log, log
    assert agent.node_id is None  # it never recorded a node id
    return log


@pytest.mark.parametrize("case", ["unknown", "malformed", "expired", "used-up", "revoked"])
def test_bad_join_tokens_are_refused_and_create_nothing(fabric, case):
    name = fabric.unique(f"join-bad-{case}")
    token_id = None
    if case == "unknown":
        token, expected = "pfj_" + "A" * 43, ["join token is not known to this coordinator"]
    elif case == "malformed":
        token, expected = "not-a-token", ["join token is missing or malformed"]
    elif case == "expired":
        created = fabric.join_token(ttl_s=0.2)
        token, token_id = created["token"], created["id"]
        wait_until(lambda: fabric.token_row(token_id)["status"] == "expired", timeout=10,
                   message="the join token to expire")
        expected = [f"join token {token_id} expired"]
    elif case == "used-up":
        created = fabric.join_token(uses=1)
        token, token_id = created["token"], created["id"]
        fabric.wait_state(fabric.agent(fabric.unique("join-uses-it"), join_token=token), "active")
        expected = [f"join token {token_id} is used up (1 uses allowed)"]
    else:
        created = fabric.join_token(uses=5)
        token, token_id = created["token"], created["id"]
        fabric.admin.delete(f"/v1/tokens/{token_id}")
        assert fabric.token_row(token_id)["status"] == "revoked"
        expected = [f"join token {token_id} was revoked"]

    uses_before = fabric.token_row(token_id)["uses"] if token_id else None
    tip_before = fabric.audit_tip()
    agent = fabric.agent(name, join_token=token)
    _refused(fabric, agent, *expected)

    # Nothing was created: no node row, no token use counted, nothing appended to the audit chain.
    assert _registered(fabric, name) == []
    if token_id:
        assert fabric.token_row(token_id)["uses"] == uses_before
    _no_registration_since(fabric, tip_before)


def test_agent_without_a_join_token_that_never_joined_exits_with_a_clear_message(fabric):
    agent = fabric.agent(fabric.unique("join-no-token"))
    assert agent.wait_exit(30) == 2
    assert "has not joined yet: start it with --join-token" in agent.log()
    assert _registered(fabric, agent.name) == []


def test_a_second_agent_cannot_take_an_existing_node_name_with_another_key(fabric, signed, tmp_path: Path):
    token = fabric.join_token(uses=10)
    owner = fabric.agent("join-clash", join_token=token["token"])
    owner_id = fabric.wait_state(owner, "active")["id"]
    uses = fabric.token_row(token["id"])["uses"]
    tip = fabric.audit_tip()

    # Over HTTP: a correctly signed registration with another key and the taken name is a 409.
    other = signed.identity(tmp_path / "other-key")
    response = signed.post(fabric.url, "/v1/agent/register", {
        "join_token": token["token"], "public_key": other.public_key_b64,
        "node": signed.declaration("join-clash"),
    }, key=other)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert "join-clash" in error["message"] and owner_id in error["message"]

    # A real agent with its own data dir (another key) is refused the same way and exits 2.
    intruder = fabric.agent("join-clash", join_token=token["token"], data_dir=tmp_path / "intruder")
    _refused(fabric, intruder, f"the name 'join-clash' is taken by node {owner_id}")

    # The owner is untouched, nothing was created, the token was not used.
    assert [n["id"] for n in _registered(fabric, "join-clash")] == [owner_id]
    assert fabric.node(owner_id)["state"] == "active"
    assert owner.alive()
    assert fabric.token_row(token["id"])["uses"] == uses
    _no_registration_since(fabric, tip)


def test_node_revoke_stops_the_running_agent_with_code_3_and_refuses_it_afterwards(fabric, signed):
    token = fabric.join_token(uses=10)
    agent = fabric.agent("join-revoked", join_token=token["token"])
    node_id = fabric.wait_state(agent, "active")["id"]

    result = fabric.cli("node", "revoke", "join-revoked", "--reason", "key leaked", "--json")
    assert result.returncode == 0, result.stderr
    revoked = json.loads(result.stdout)
    assert revoked["id"] == node_id and revoked["revoked"] is True and revoked["state"] == "retired"

    # The running agent learns it at its next heartbeat and exits with code 3.
    assert agent.wait_exit(20) == 3, agent.log()
    assert "this node was revoked" in agent.log()

    records = fabric.audit(node=node_id, kind="node.revoked")
    assert len(records) == 1 and records[0]["actor"] == "token:admin" and records[0]["cause"] == "key leaked"

    # Restarted with its key (and even with a valid join token), it is refused: exit 3 again.
    again = fabric.agent("join-revoked", data_dir=agent.data_dir, join_token=token["token"])
    assert again.wait_exit(30) == 3, again.log()
    assert again.log().count("this node was revoked") == 2

    # Registering the same key afresh is refused too, and nothing new is created.
    uses = fabric.token_row(token["id"])["uses"]
    key = signed.identity(agent.data_dir)
    assert key.node_id == node_id
    response = signed.post(fabric.url, "/v1/agent/register", {
        "join_token": token["token"], "public_key": key.public_key_b64,
        "node": signed.declaration("join-revoked-2"),
    }, key=key)
    assert response.status_code == 403, response.text
    assert "revoked" in response.json()["error"]["message"]
    assert fabric.token_row(token["id"])["uses"] == uses
    node = fabric.node(node_id)
    assert node["revoked"] is True and node["state"] == "retired"
    assert _registered(fabric, "join-revoked-2") == []
