"""Checkpoints and recovery end to end: real `polyfabric server` and agents, SQLite and PostgreSQL.

* A function task that checkpoints (`polyfabric.task_context()`), its agent killed with kill -9
  mid-task: the task resumes on another agent from its last checkpoint (it does not start over),
  and the node loss uses up no retry. The dead attempt's checkpoint, sent late with the dead
  node's key, is refused (409) and audited.
* A command task saves $POLYFABRIC_CHECKPOINT_DIR with `polyfabric checkpoint`, fails; its next
  attempt finds the directory restored before it starts.
* `polyfabric job retry --from-failed` re-runs the failed task and what it held up, and nothing
  that succeeded (same attempt numbers, run once).
* A drain with a deadline asks the running task to checkpoint and stop, and it resumes on
  another node from that checkpoint, without waiting for the checkpoint grace.

Coordinator settings: conftest (heartbeat 0.5 s, Down after 3 s); drain checkpoint grace 10 s
(the default). Tests wait by polling with deadlines, never by sleeping.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from polyfabric.agent.identity import load_or_create
from polyfabric.testing import AgentProcess, wait_until

from .conftest import signed_post

pytestmark = pytest.mark.e2e

POLYFABRIC = str(Path(sys.executable).parent / "polyfabric")


def py(code: str) -> list[str]:
    return ["python3", "-c", f"import json, os, subprocess, sys, time\n{code}"]


@pytest.fixture
def start(workflows, fabric) -> Iterator[Callable[..., list[AgentProcess]]]:
    """Agents for one test; retired (so they take no later test's work) and stopped at its end."""
    started: list[AgentProcess] = []

    def _start(count: int, *, slots: int = 1, prefix: str = "ck") -> list[AgentProcess]:
        agents = workflows.start_agents(count, slots=slots, prefix=prefix)
        started.extend(agents)
        return agents

    yield _start
    for agent in started:
        node_id = agent.node_id
        if node_id and fabric.node(node_id)["state"] not in ("retired", "down"):
            fabric.admin.post(f"/v1/nodes/{node_id}/retire", {"reason": "test over"})
    for agent in started:
        if agent.alive():
            agent.stop()


def _attempts(fabric, task_id: str) -> list[tuple[int, str, str]]:
    query = sa.text("SELECT attempt, status, node_id FROM task_attempts WHERE task_id = :t ORDER BY attempt")
    with fabric.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query, {"t": task_id})]


def _checkpoints(fabric, task_id: str) -> list[dict]:
    query = sa.text("SELECT attempt, seq, size, sha256, format, node_id FROM checkpoints WHERE task_id = :t "
                    "ORDER BY seq")
    with fabric.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query, {"t": task_id})]


def _max_seq(fabric, task_id: str) -> int:
    query = sa.text("SELECT COALESCE(MAX(seq), 0) FROM checkpoints WHERE task_id = :t")
    with fabric.engine.connect() as conn:
        return int(conn.execute(query, {"t": task_id}).scalar_one())


def _count_job(name: str, marker: Path, n: int, step_s: float = 0.2) -> dict:
    return {"name": name, "tasks": {"count": {"function": "checkpoint_functions:count", "retries": 0,
                                              "args": {"n": n, "marker": str(marker), "step_s": step_s}}}}


# -- 1. kill -9 mid-task: resume elsewhere from the checkpoint ---------------------------------------


def test_a_task_whose_agent_is_killed_resumes_on_another_agent_from_its_checkpoint(workflows, fabric, start):
    agents = start(2, prefix="kill")
    marker = workflows.path(f"kill-{fabric.backend}.marker")
    marker.unlink(missing_ok=True)
    job = workflows.submit(_count_job("checkpoint-kill", marker, n=30))
    task = workflows.wait_running(job, "count", attempt=1)
    task_id = task["id"]
    wait_until(lambda: _max_seq(fabric, task_id) >= 3, timeout=30, message="three checkpoints of attempt 1")
    victim = next(a for a in agents if a.node_id == task["node_id"])
    survivor = next(a for a in agents if a is not victim)
    killed_at = time.time()
    victim.kill(signal.SIGKILL)
    workflows.wait_task(job, "count", lambda t: t["attempt"] == 2 and t["status"] == "running", timeout=60,
                        what="attempt 2 running")
    resumed_s = time.time() - killed_at

    assert workflows.wait(job, timeout=90)["status"] == "succeeded"
    out = workflows.task(job, "count")
    result = out["result"]
    assert result["i"] == 30
    # Attempt 1 started from nothing; attempt 2 from a checkpoint attempt 1 saved, not from 0.
    assert result["starts"][0] == {"attempt": 1, "from": 0}
    assert result["starts"][1]["attempt"] == 2 and result["starts"][1]["from"] >= 3
    assert len(result["starts"]) == 2
    # Node loss: counted in `lost`, no retry used (retries: 0 and the task still succeeded).
    assert (out["failures"], out["lost"], out["node_id"]) == (0, 1, survivor.node_id)
    assert _attempts(fabric, task_id) == [(1, "lost", victim.node_id), (2, "succeeded", survivor.node_id)]
    saved = _checkpoints(fabric, task_id)
    assert saved and all(c["format"] == "json" and len(c["sha256"]) == 64 and c["size"] > 0 for c in saved)
    assert {c["attempt"] for c in saved} <= {1, 2} and saved[-1]["attempt"] == 2
    starts = [line.split() for line in marker.read_text().splitlines()]
    assert [s[1] for s in starts] == ["1", "2"]
    print(f"checkpoint report: kill -9 [{fabric.backend}]: resumed on another agent {resumed_s:.1f}s after the kill "
          f"(Down bound 3s) from step {result['starts'][1]['from']} of 30; tasks lost 0, retries used 0, "
          f"{len(saved)} checkpoints kept")

    # The dead attempt's checkpoint, sent late under the dead node's key: refused and audited.
    identity = load_or_create(victim.data_dir)
    before = _max_seq(fabric, task_id)
    late = signed_post(fabric.url, "/v1/agent/checkpoint", {
        "task_id": task_id, "attempt": 1, "upload_id": "late1", "format": "json", "offset": 0,
        "data": "e30=", "final": True, "size": 2}, key=identity)
    assert late.status_code == 409, late.text
    assert "not current" in late.json()["error"]["message"]
    [refused] = fabric.audit(kind="task.checkpoint_refused", subject=f"task:{task_id}")
    assert refused["actor"] == f"node:{victim.node_id}" and refused["details"]["attempt"] == 1
    assert _max_seq(fabric, task_id) == before


# -- 2. a command task: $POLYFABRIC_CHECKPOINT_DIR + `polyfabric checkpoint` ---------------------------


def test_a_command_task_finds_its_checkpoint_directory_restored_on_its_next_attempt(workflows, fabric, start):
    start(1, prefix="cmd")
    code = (
        "d = os.environ['POLYFABRIC_CHECKPOINT_DIR']\n"
        "attempt = int(os.environ['POLYFABRIC_ATTEMPT'])\n"
        "p = os.path.join(d, 'progress.txt')\n"
        "start = int(open(p).read()) if os.path.exists(p) else 0\n"
        "os.makedirs(os.path.join(d, 'sub'), exist_ok=True)\n"
        "seen = sorted(os.listdir(d))\n"
        "for i in range(start, 5):\n"
        "    open(p, 'w').write(str(i + 1))\n"
        "    open(os.path.join(d, 'sub', 'log.txt'), 'a').write(f'{attempt}:{i + 1}\\n')\n"
        f"    out = subprocess.run([{POLYFABRIC!r}, 'checkpoint', '--json'], capture_output=True, text=True)\n"
        "    assert out.returncode == 0, out.stderr\n"
        "    print(out.stdout.strip(), flush=True)\n"
        "    if attempt == 1 and i + 1 == 3:\n"
        "        sys.exit(3)\n"
        "log = open(os.path.join(d, 'sub', 'log.txt')).read().split()\n"
        "json.dump({'start': start, 'attempt': attempt, 'seen': seen, 'log': log},"
        " open(os.environ['POLYFABRIC_RESULT'], 'w'))\n")
    job = workflows.submit({"name": "checkpoint-command", "tasks": {"steps": {"retries": 1, "command": py(code)}}})
    assert workflows.wait(job, timeout=60)["status"] == "succeeded", workflows.tasks(job)
    task = workflows.task(job, "steps")
    assert task["result"]["attempt"] == 2 and task["result"]["start"] == 3
    assert task["result"]["seen"] == ["progress.txt", "sub"]  # restored before the command started
    assert task["result"]["log"] == ["1:1", "1:2", "1:3", "2:4", "2:5"]
    assert task["failures"] == 1
    saved = _checkpoints(fabric, task["id"])
    assert [(c["attempt"], c["format"]) for c in saved][-1] == (2, "tar") and saved[-1]["seq"] == 5
    # Only the last two are kept.
    assert [c["seq"] for c in saved] == [4, 5]


def test_polyfabric_checkpoint_outside_a_task_says_why(fabric):
    out = fabric.cli("checkpoint", token=None, url=None)
    assert out.returncode == 1 and "not inside a polyfabric task" in out.stderr


# -- 3. retry --from-failed -------------------------------------------------------------------------


def test_retry_from_failed_reruns_only_the_failed_task_and_what_it_held_up(workflows, fabric, start):
    start(1, slots=2, prefix="retry")
    runs = workflows.path(f"retry-runs-{fabric.backend}")
    runs.mkdir(exist_ok=True)
    flag = workflows.path(f"retry-flag-{fabric.backend}")
    flag.unlink(missing_ok=True)

    def counted(name: str, extra: str = "") -> list[str]:
        return py(f"open({str(runs / name)!r}, 'a').write('x')\n{extra}"
                  "json.dump({'attempt': int(os.environ['POLYFABRIC_ATTEMPT'])},"
                  " open(os.environ['POLYFABRIC_RESULT'], 'w'))")

    job = workflows.submit({"name": "retry-from-failed", "tasks": {
        "a": {"command": counted("a")},
        "b": {"depends_on": ["a"], "retries": 0,
              "command": counted("b", f"if not os.path.exists({str(flag)!r}):\n    sys.exit(7)\n")},
        "c": {"depends_on": ["b"], "command": counted("c")},
        "d": {"command": counted("d")},
    }})
    assert workflows.wait(job, timeout=60)["status"] == "failed"
    before = workflows.tasks(job)
    assert {k: t["status"] for k, t in before.items()} == {"a": "succeeded", "b": "failed", "c": "skipped",
                                                           "d": "succeeded"}
    flag.write_text("ok")
    out = fabric.cli("job", "retry", job, "--from-failed", "--reason", "fixed the input", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "running"
    assert workflows.wait(job, timeout=60)["status"] == "succeeded"
    after = workflows.tasks(job)
    assert {k: t["status"] for k, t in after.items()} == dict.fromkeys("abcd", "succeeded")
    # Succeeded tasks kept their result and were not run again.
    for key in ("a", "d"):
        assert after[key]["attempt"] == before[key]["attempt"] == 1
        assert after[key]["result"] == before[key]["result"]
        assert (runs / key).read_text() == "x"
    assert after["b"]["attempt"] == 2 and (runs / "b").read_text() == "xx"
    assert after["c"]["attempt"] == 1 and (runs / "c").read_text() == "x"
    [record] = fabric.audit(kind="job.retry", subject=f"job:{job}")
    assert record["details"] == {"from_failed": True} and record["cause"] == "fixed the input"
    # Nothing failed now: another --from-failed has nothing to do (a clear 409).
    again = fabric.cli("job", "retry", job, "--from-failed")
    assert again.returncode != 0 and "nothing to retry" in again.stderr


# -- 4. drain with a deadline: checkpoint, stop, resume elsewhere --------------------------------------


def test_a_drain_deadline_moves_a_running_task_by_checkpoint(workflows, fabric, start):
    a, b = start(2, prefix="drainck")
    fabric.cli_json("node", "cordon", b.name)
    marker = workflows.path(f"drain-{fabric.backend}.marker")
    marker.unlink(missing_ok=True)
    job = workflows.submit(_count_job("checkpoint-drain", marker, n=80))
    task_id = workflows.wait_running(job, "count", attempt=1)["id"]
    wait_until(lambda: _max_seq(fabric, task_id) >= 2, timeout=30, message="two checkpoints of attempt 1")
    fabric.cli_json("node", "uncordon", b.name)
    deadline = fabric.cli_json("node", "drain", a.name, "--deadline", "1s", "--reason", "maintenance")["drain_deadline"]

    moved = workflows.wait_task(job, "count", lambda t: t["attempt"] == 2 and t["status"] == "running",
                                timeout=30, what="attempt 2 running")
    assert moved["node_id"] == b.node_id
    assert workflows.wait(job, timeout=60)["status"] == "succeeded"
    out = workflows.task(job, "count")
    assert out["result"]["i"] == 80
    assert out["result"]["starts"][1]["attempt"] == 2 and out["result"]["starts"][1]["from"] >= 2
    assert (out["failures"], out["lost"]) == (0, 1)
    assert _attempts(fabric, task_id) == [(1, "evicted", a.node_id), (2, "succeeded", b.node_id)]
    [evicted] = fabric.audit(node=a.node_id, kind="task.evicted")
    assert evicted["actor"] == "system:lifecycle"
    assert evicted["cause"].startswith(f"drain deadline of node {a.node_id}") and "saved checkpoint" in evicted["cause"]
    fabric.wait_state(a, "retired", timeout=20)
    with fabric.engine.connect() as conn:
        evicted_at = conn.execute(sa.text("SELECT finished_at FROM task_attempts WHERE task_id = :t AND attempt = 1"),
                                  {"t": task_id}).scalar_one()
    # Moved by its checkpoint: well before the 10 s checkpoint grace would have run out.
    assert evicted_at - deadline < 8.0
    print(f"checkpoint report: drain [{fabric.backend}]: moved by its checkpoint {evicted_at - deadline:.1f}s after "
          f"the deadline, resumed on the next node from step {out['result']['starts'][1]['from']} of 80; failures 0")


# -- 5. how long a save takes (figures for docs/resilience.md) ------------------------------------------


def test_a_checkpoint_is_durable_within_a_bounded_time(workflows, fabric, start):
    start(1, prefix="lat")
    job = workflows.submit({"name": "checkpoint-latency", "tasks": {
        "small": {"function": "checkpoint_functions:timed_saves", "args": {"count": 20, "size": 1024}},
        "large": {"function": "checkpoint_functions:timed_saves", "args": {"count": 3, "size": 4 << 20},
                  "depends_on": ["small"]}}})
    assert workflows.wait(job, timeout=120)["status"] == "succeeded", workflows.tasks(job)
    small, large = (workflows.task(job, k)["result"] for k in ("small", "large"))
    assert small["max_s"] < 10 and large["max_s"] < 30
    large_id = workflows.tasks(job)["large"]["id"]
    [kept_a, kept_b] = _checkpoints(fabric, large_id)
    assert (kept_a["seq"], kept_b["seq"], kept_b["size"]) == (2, 3, 4 << 20)
    print(f"checkpoint report: save latency [{fabric.backend}]: 1 KiB median {small['median_s'] * 1000:.0f} ms "
          f"(max {small['max_s'] * 1000:.0f} ms, 20 saves); 4 MiB median {large['median_s'] * 1000:.0f} ms "
          f"(max {large['max_s'] * 1000:.0f} ms, 3 saves)")
