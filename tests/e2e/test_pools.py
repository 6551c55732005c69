"""Elastic node pools through real processes: the autoscaler starts real agents (local provider,
and over a real sshd on loopback) when fitting tasks wait, drains and retires them when idle, never
below the minimum, never with running work, never past the maximum or the domain's quota."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from polyfabric.testing import wait_until
from polyfabric.testing.processes import free_port

from .conftest import Fabric, Workflows

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


def _pool(fabric: Fabric, name: str) -> dict[str, Any]:
    return fabric.admin.get(f"/v1/pools/{name}")


def _until(fabric: Fabric, name: str, check: Any, *, timeout: float, what: str) -> Any:
    """wait_until, failing with the pool's state at the deadline (not at the start)."""
    try:
        return wait_until(check, timeout=timeout, message=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\npool now: {_pool(fabric, name)}") from None


def _kill_members(fabric: Fabric, name: str) -> None:
    """Teardown: a pool's local agents outlive the coordinator (sessions of their own)."""
    with contextlib.suppress(Exception):
        for member in _pool(fabric, name)["members"]:
            if member["pid"] and member["host"] == "local":
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(member["pid"], signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_local_pool_grows_under_waiting_work_and_shrinks_when_idle(fabric: Fabric, workflows: Workflows):
    name = fabric.unique("burst")
    created = fabric.admin.post("/v1/pools", {
        "name": name, "domain": "test", "provider": "local", "min": 0, "max": 2, "slots": 2,
        "labels": {"role": name}, "idle": 4, "scale_up_after": 1, "start_timeout": 90,
        "cpu": "2", "memory": "2Gi", "provider_config": {"agent_args": ["--kill-grace", "1", "--stop-grace", "0"]}})
    try:
        assert created["size"] == 0 and created["labels"] == {"role": name, "pool": name}
        # Nothing waits: nothing starts.
        assert _pool(fabric, name)["members"] == []
        doc = {"name": "needs-burst", "tasks": {"work": {
            "foreach": list(range(6)), "constraints": {"role": name},
            "command": [sys.executable, "-c", "import time; time.sleep(1.0)"]}}}
        job_id = workflows.submit(doc)
        sizes: list[int] = []

        def grown() -> bool:
            pool = _pool(fabric, name)
            sizes.append(pool["size"])
            return sum(1 for m in pool["members"] if m["state"] == "active") == 2

        _until(fabric, name, grown, timeout=90, what="2 active nodes in the pool")
        final = workflows.wait(job_id, timeout=120)
        assert final["status"] == "succeeded"
        assert max(sizes) <= 2  # never past the maximum
        # The tasks ran on the pool's nodes (the only ones with its label).
        members = {m["node_id"] for m in _pool(fabric, name)["members"]}
        ran_on = {t["node_id"] for t in workflows.tasks(job_id).values() if t["key"] != "work"}
        assert ran_on and ran_on <= members
        scaled = fabric.audit(kind="pool.scaled", subject=f"pool:{name}")
        ups = [r for r in scaled if r["details"]["add"] > 0]
        assert ups and ups[0]["details"]["signal"]["waiting_tasks"] >= 1 and "waited over" in ups[0]["cause"]

        # Idle for 4 s with nothing waiting: drained, retired, processes stopped; back to min 0.
        def shrunk() -> bool:
            pool = _pool(fabric, name)
            return pool["size"] == 0 and all(m["state"] == "stopped" for m in pool["members"])

        _until(fabric, name, shrunk, timeout=90, what="the pool back to 0 nodes")
        pool = _pool(fabric, name)
        for member in pool["members"]:
            assert fabric.node(member["node_id"])["state"] == "retired"
            wait_until(lambda m=member: not _pid_alive(m["pid"]), timeout=20, message=f"agent {member} still runs")
        downs = [r for r in fabric.audit(kind="pool.scaled", subject=f"pool:{name}") if r["details"]["drain"]]
        assert downs and "idle" in downs[0]["cause"]
        # Never drained a node with running work: each drain came after every attempt on that node ended.
        attempts = [a for t in workflows.tasks(job_id).values() if t["key"] != "work"
                    for a in workflows.jobs.task(t["id"])["attempts"]]
        for record in fabric.audit(kind="node.transition"):
            if record["details"].get("to") == "draining" and record["actor"] == "system:autoscaler":
                node_id = record["subject"].removeprefix("node:")
                for a in attempts:
                    if a["node_id"] == node_id:
                        assert a["finished_at"] is not None and a["finished_at"] <= record["at"] + 0.5, (a, record)
    finally:
        _kill_members(fabric, name)


# A task that runs until the test creates its release file (at most 120 s, then fails).
_GATED = ("import os, sys, time\n"
          "deadline = time.monotonic() + 120\n"
          "while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:\n"
          "    time.sleep(0.02)\n"
          "sys.exit(0 if os.path.exists(sys.argv[1]) else 3)\n")


def test_an_idle_node_retires_while_a_busy_one_keeps_its_running_task(fabric: Fabric, workflows: Workflows):
    """Two tasks on two pool nodes (one slot each), each held by a release file: the node whose
    task ended drains and retires after the idle period while the other, still running its task,
    stays Active and undrained; released, that one drains only after its attempt finished."""
    name = fabric.unique("busy")
    idle_s = 2.0
    gate = {i: workflows.path(f"{name}.release-{i}") for i in (0, 1)}
    for path in gate.values():
        path.unlink(missing_ok=True)
    fabric.admin.post("/v1/pools", {
        "name": name, "domain": "test", "provider": "local", "min": 0, "max": 2, "slots": 1,
        "labels": {"role": name}, "idle": idle_s, "scale_up_after": 0.5, "start_timeout": 90,
        "cpu": "1", "memory": "1Gi", "provider_config": {"agent_args": ["--kill-grace", "1", "--stop-grace", "0"]}})
    try:
        job_id = workflows.submit({"name": "held-on-two-nodes", "tasks": {"hold": {
            "foreach": [0, 1], "constraints": {"role": name},
            "command": [sys.executable, "-c", _GATED, str(workflows.path(f"{name}.release-")) + "{{ item }}"]}}})
        running = {i: workflows.wait_running(job_id, f"hold[{i}]", timeout=90) for i in (0, 1)}
        node = {i: running[i]["node_id"] for i in (0, 1)}
        assert node[0] != node[1], running  # one slot a node: two nodes
        member = {i: fabric.node(node[i])["labels"]["pool-member"] for i in (0, 1)}
        # The autoscaler links a member to its node (and marks it active) on its next pass.
        _until(fabric, name, lambda: {(m["id"], m["node_id"], m["state"]) for m in _pool(fabric, name)["members"]}
               == {(member[i], node[i], "active") for i in (0, 1)}, timeout=30, what="both members linked, active")

        def member_of(pool: dict[str, Any], i: int) -> dict[str, Any]:
            return next(m for m in pool["members"] if m["id"] == member[i])

        # Task 0 ends; task 1 keeps running on the other node.
        gate[0].touch()
        workflows.wait_task(job_id, "hold[0]", lambda t: t["status"] == "succeeded", what="succeeded")
        short_end = workflows.task(job_id, "hold[0]")["attempts"][-1]["finished_at"]

        def short_node_retired() -> bool:
            pool = _pool(fabric, name)
            # At every look, the busy node is still in the pool and Active.
            assert member_of(pool, 1)["state"] == "active", pool
            return member_of(pool, 0)["state"] == "stopped"

        _until(fabric, name, short_node_retired, timeout=30, what="the idle node drained and retired")
        assert fabric.node(node[0])["state"] == "retired"
        assert fabric.node(node[1])["state"] == "active"
        assert workflows.task(job_id, "hold[1]")["status"] == "running"
        pool = _pool(fabric, name)
        assert pool["size"] == 1 and (member_of(pool, 1)["state"], member_of(pool, 1)["idle_since"]) == (
            "active", None), pool  # busy: not counted idle
        # The audit chain at this moment: one drain, of the idle member, for idleness; the busy
        # node has no transition since it became Active.
        drains = [r for r in fabric.audit(kind="pool.scaled", subject=f"pool:{name}") if r["details"]["drain"]]
        assert [r["details"]["drain"] for r in drains] == [[member[0]]], drains
        assert "idle" in drains[0]["cause"] and drains[0]["details"]["signal"]["waiting_tasks"] == 0
        to_draining = [r for r in fabric.transitions(node[0]) if r["details"].get("to") == "draining"]
        assert len(to_draining) == 1 and to_draining[0]["actor"] == "system:autoscaler", to_draining
        assert to_draining[0]["at"] >= short_end + idle_s - 0.25, (to_draining, short_end)  # idle for the period
        assert not [r for r in fabric.transitions(node[1]) if r["details"].get("to") in ("draining", "retired")], \
            fabric.transitions(node[1])

        # Released: task 1 ends, then (idle for the period) its node drains and the pool is empty.
        released_at = time.time()
        gate[1].touch()
        final = workflows.wait(job_id, timeout=30)
        assert final["status"] == "succeeded", (final, workflows.logs())
        _until(fabric, name, lambda: _pool(fabric, name)["size"] == 0
               and all(m["state"] == "stopped" for m in _pool(fabric, name)["members"]),
               timeout=30, what="the pool back to 0 nodes")
        assert fabric.node(node[1])["state"] == "retired"
        long_task = workflows.task(job_id, "hold[1]")
        attempts = long_task["attempts"]
        assert [(a["status"], a["node_id"]) for a in attempts] == [("succeeded", node[1])], attempts
        to_draining = [r for r in fabric.transitions(node[1]) if r["details"].get("to") == "draining"]
        assert len(to_draining) == 1 and to_draining[0]["actor"] == "system:autoscaler", to_draining
        assert to_draining[0]["at"] >= released_at and to_draining[0]["at"] >= attempts[0]["finished_at"], (
            to_draining, released_at, attempts)
        drains = [r for r in fabric.audit(kind="pool.scaled", subject=f"pool:{name}") if r["details"]["drain"]]
        assert [r["details"]["drain"] for r in drains] == [[member[0]], [member[1]]], drains
        assert len(_pool(fabric, name)["members"]) == 2  # no node was started beyond the two
    finally:
        for path in gate.values():
            path.touch()  # a task still held ends rather than outlive the test
        _kill_members(fabric, name)


def test_the_minimum_is_kept_and_the_domain_quota_caps_growth(fabric: Fabric, workflows: Workflows):
    name = fabric.unique("steady")
    domain = fabric.unique("quota")
    fabric.admin.request("PUT", f"/v1/quotas/{domain}", json={"max_nodes": 1})
    fabric.admin.post("/v1/pools", {
        "name": name, "domain": domain, "provider": "local", "min": 1, "max": 3, "slots": 1,
        "labels": {"role": name}, "idle": 1, "scale_up_after": 0.5, "start_timeout": 90,
        "cpu": "1", "memory": "1Gi", "provider_config": {"agent_args": ["--kill-grace", "1"]}})
    try:
        # Below its minimum with nothing waiting: one node starts.
        _until(fabric, name, lambda: any(m["state"] == "active" for m in _pool(fabric, name)["members"]),
               timeout=90, what="a node for the minimum")
        # Work waits, but the domain's quota (1 node) holds the pool at 1; the reason says so.
        doc = {"name": "quota-bound", "tasks": {"work": {
            "foreach": list(range(3)), "constraints": {"role": name},
            "command": [sys.executable, "-c", "import time; time.sleep(1.5)"]}}}
        job_id = str(workflows.jobs.submit(doc, None, domain)["id"])
        _until(fabric, name, lambda: "quota" in _pool(fabric, name)["reason"], timeout=30,
               what="the quota named as the reason")
        assert workflows.jobs.wait(job_id, timeout=120)["status"] == "succeeded"
        pool = _pool(fabric, name)
        assert len(pool["members"]) == 1, pool  # never a second node
        # Idle past its idle period, the last node stays: never below the minimum.
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            pool = _pool(fabric, name)
            assert pool["size"] == 1 and pool["members"][0]["state"] == "active", pool
            time.sleep(0.5)  # observing that nothing happens over a period: a poll, not a synchronization
        quotas = {q["domain"]: q for q in fabric.admin.get("/v1/quotas")}
        assert quotas[domain]["max_nodes"] == 1 and quotas[domain]["nodes"] == 1
        # Resized to zero: the idle node drains at once and the pool can then be removed.
        fabric.admin.request("PATCH", f"/v1/pools/{name}", json={"min": 0, "max": 0})
        _until(fabric, name, lambda: _pool(fabric, name)["size"] == 0, timeout=60, what="size 0")
        fabric.admin.delete(f"/v1/pools/{name}")
        assert fabric.http("GET", f"/v1/pools/{name}").status_code == 404
    finally:
        _kill_members(fabric, name)


def test_bad_pools_are_refused_with_the_field_named_and_need_admin(fabric: Fabric):
    bad = [({"name": "x", "max": 1, "min": 2}, "--max"), ({"name": "Bad Name", "max": 1}, "pool name"),
           ({"name": "y", "max": 1, "provider": "aws"}, "--provider"), ({"name": "z", "max": 1, "provider": "ssh"},
                                                                      "--hosts"),
           ({"name": "w", "max": 1, "idle": "soon"}, "idle")]
    for body, needle in bad:
        response = fabric.http("POST", "/v1/pools", json=body)
        assert response.status_code in (400, 422), response.text
        assert needle in response.text, (needle, response.text)
    operator = fabric.api_token("operator", ["test"])["token"]
    response = fabric.http("POST", "/v1/pools", json={"name": "op", "max": 1, "domain": "test"}, token=operator)
    assert response.status_code == 403 and "pool.manage" in response.text
    assert fabric.http("GET", "/v1/pools", token=None).status_code == 401
    result = fabric.cli("pool", "create", "cli-bad", "--max", "1", "--min", "3")
    assert result.returncode != 0 and "--max" in result.stderr and "Traceback" not in result.stderr


# -- the ssh provider, against a real sshd on loopback -------------------------------------------


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    if SSHD is None:
        if os.environ.get("CI") == "true":
            pytest.fail("sshd is required in CI (.ci/run installs openssh-server)")
        pytest.skip("sshd is not installed (apt-get install openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("sshd needs root for privilege separation here")
    root = tmp_path_factory.mktemp("sshd")
    Path("/run/sshd").mkdir(exist_ok=True)
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], check=True)
    (root / "authorized_keys").write_text((root / "client.pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    port = free_port()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {(root / 'host.pub').read_text()}")
    config = root / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host'}\n"
                      f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
                      "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\nStrictModes no\n"
                      "KbdInteractiveAuthentication no\n")
    with open(root / "sshd.log", "wb") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log)

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout=20, message=(root / "sshd.log").read_text())
    yield {"port": port, "key": root / "client", "known_hosts": root / "known_hosts", "root": root}
    proc.terminate()
    proc.wait(timeout=10)


def test_an_ssh_pool_starts_and_stops_agents_over_ssh(fabric: Fabric, sshd: dict[str, Any]):
    name = fabric.unique("remote")
    remote_dir = sshd["root"] / "remote"
    result = fabric.cli("pool", "create", name, "--provider", "ssh", "--min", "1", "--max", "1", "--domain", "test",
                        "--hosts", f"127.0.0.1:{sshd['port']}", "--ssh-user", "root", "--ssh-key", str(sshd["key"]),
                        "--known-hosts", str(sshd["known_hosts"]), "--remote-python", sys.executable,
                        "--remote-dir", str(remote_dir), "--slots", "1", "--cpu", "1", "--memory", "1Gi",
                        "--idle", "1s", "--json")
    assert result.returncode == 0, result.stderr
    pid = None
    try:
        def up() -> dict | None:
            members = _pool(fabric, name)["members"]
            return members[0] if members and members[0]["state"] == "active" else None

        member = _until(fabric, name, up, timeout=90, what="the ssh member Active")
        pid = member["pid"]
        assert member["host"] == f"127.0.0.1:{sshd['port']}" and _pid_alive(pid)
        node = fabric.node(member["node_id"])
        assert node["labels"]["pool"] == name and node["labels"]["pool-member"] == member["id"]
        # The join token went over stdin: it is on no command line and in no log of the agent.
        assert b"pfj_" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        shown = fabric.cli_json("pool", "show", name)
        assert shown["size"] == 1 and shown["hosts"] == [f"127.0.0.1:{sshd['port']}"]
        # Scaled to zero: drained, retired, and the remote agent stopped over ssh.
        fabric.cli("pool", "set", name, "--min", "0", "--max", "0")
        _until(fabric, name, lambda: _pool(fabric, name)["members"][0]["state"] == "stopped", timeout=60,
               what="the ssh member stopped")
        wait_until(lambda: not _pid_alive(pid), timeout=20, message="the remote agent still runs")
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
