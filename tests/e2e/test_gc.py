"""Garbage collection with real processes (SQLite and PostgreSQL).

Agent side: an attempt's workspace goes once its final report is acknowledged, with whatever it
left running in its process group; an orphaned workspace goes (at once here: the agent runs with
its disk-pressure threshold at 0 %, so it is always "under pressure"), with its processes; a
running attempt's workspace is never touched.

Coordinator side: a finished job expires `ttl` after it finished; `gc --dry-run` lists without
deleting; `gc` deletes it but keeps the outputs the workflow declares (`keep:`); a running job
and a failed (retryable) job within its ttl are never collected.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyfabric.client.jobs import JobsClient
from polyfabric.testing import AgentProcess, CoordinatorProcess, wait_until

from .conftest import DOWN, E2E_DIR, HEARTBEAT, UNREACHABLE, Fabric, pid_alive


class GcFabric:
    def __init__(self, fabric: Fabric, agent: AgentProcess) -> None:
        self.fabric = fabric
        self.agent = agent
        self.jobs = JobsClient(fabric.url, fabric.admin_token)

    @property
    def work(self) -> Path:
        return self.agent.data_dir / "work"

    def submit(self, doc: dict[str, Any]) -> str:
        return str(self.jobs.submit(doc, {}, "test")["id"])

    def tasks(self, job_id: str) -> dict[str, dict[str, Any]]:
        return {t["key"]: t for t in self.jobs.tasks(job_id)}


@pytest.fixture(scope="module")
def gcf(module_backend: str, module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcFabric]:
    root = tmp_path_factory.mktemp(f"gc-{module_backend}")
    coordinator = CoordinatorProcess(root / "coordinator", module_db_url, heartbeat_interval=HEARTBEAT,
                                     unreachable_after=UNREACHABLE, down_after=DOWN)
    coordinator.env = {"POLYFABRIC_GC_INTERVAL_S": "3600", "POLYFABRIC_JOB_TTL": "1h"}
    coordinator.start()
    fabric = Fabric(coordinator, root, module_backend)
    fabric.admin.post("/v1/domains", {"name": "test"})
    agent = fabric.agent("gc-node", join_token=fabric.join_token("test")["token"], start=False,
                         extra_args=["--pythonpath", str(E2E_DIR), "--kill-grace", "1", "--stop-grace", "0"])
    agent.env = {"POLYFABRIC_AGENT_GC_INTERVAL_S": "0.3", "POLYFABRIC_AGENT_DISK_PRESSURE_PERCENT": "0"}
    agent.start()
    fabric.wait_state(agent, "active", timeout=40)
    gc = GcFabric(fabric, agent)
    try:
        yield gc
    finally:
        gc.jobs.close()
        fabric.close()
        coordinator.stop()


def _wait_job(gcf: GcFabric, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    return gcf.jobs.wait(job_id, timeout=timeout)


def test_workspaces_and_leftover_processes_go_but_a_running_attempt_is_untouched(gcf: GcFabric, tmp_path: Path):
    pidfile = tmp_path / "leftover.pid"
    leaky = gcf.submit({"name": "leaky", "tasks": {"leak": {
        "command": ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo started"]}}})
    assert _wait_job(gcf, leaky)["status"] == "succeeded"
    task_id = gcf.tasks(leaky)["leak"]["id"]
    pid = int(wait_until(lambda: pidfile.read_text().strip(), timeout=10, message="the pid file"))
    wait_until(lambda: not any(p.name.startswith(task_id) for p in gcf.work.iterdir()), timeout=30,
               message="the finished attempt's workspace to go")
    wait_until(lambda: not pid_alive(pid), timeout=30, message="the process the task left running to die")

    slow = gcf.submit({"name": "slow", "tasks": {"hold": {"command": ["sleep", "60"]}}})
    hold = wait_until(lambda: (lambda t: t if t["status"] == "running" else None)(gcf.tasks(slow)["hold"]),
                      timeout=40, message="the slow task to run")
    live = gcf.work / f"{hold['id']}-{hold['attempt']}"
    wait_until(live.is_dir, timeout=20, message="the running attempt's workspace")
    orphan = gcf.work / "t-orphan-1"
    (orphan / "tmp").mkdir(parents=True)
    (orphan / "tmp" / "junk").write_bytes(b"x" * 4096)
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True,
                             env={**os.environ, "POLYFABRIC_WORKSPACE": str(orphan)})
    try:
        wait_until(lambda: not orphan.exists(), timeout=30, message="the orphaned workspace to go")
        wait_until(lambda: stray.poll() is not None, timeout=30, message="the orphan's process to be killed")
    finally:
        if stray.poll() is None:
            stray.kill()
        stray.wait(5)
    assert live.is_dir(), "agent GC removed a running attempt's workspace"
    assert gcf.tasks(slow)["hold"]["status"] == "running"
    gcf.jobs.post(f"/v1/jobs/{slow}/cancel", {"reason": "done"})


def _fn(**extra: Any) -> dict[str, Any]:
    return {"function": "workflow_functions:square", "args": {"n": 3}, **extra}


def test_gc_collects_expired_jobs_keeps_declared_outputs_and_never_live_or_retryable_ones(gcf: GcFabric):
    f = gcf.fabric
    expired = gcf.submit({"name": "expiring", "ttl": "1s", "tasks": {
        "a": _fn(keep=True), "b": _fn(depends_on=["a"]), "c": _fn(depends_on=["b"])}})
    plain = gcf.submit({"name": "plain", "ttl": "1s", "tasks": {"a": _fn()}})
    failed = gcf.submit({"name": "failing", "tasks": {"bad": {"command": ["false"]}}})  # default ttl: 1h
    running = gcf.submit({"name": "running", "ttl": "1s", "tasks": {"hold": {"command": ["sleep", "60"]}}})
    for job_id, status in ((expired, "succeeded"), (plain, "succeeded"), (failed, "failed")):
        assert _wait_job(gcf, job_id)["status"] == status
    wait_until(lambda: gcf.tasks(running)["hold"]["status"] == "running", timeout=40, message="the held task")
    done_at = time.time()
    wait_until(lambda: time.time() > done_at + 1.5, timeout=10, message="the 1 s ttl to pass")

    plan = f.cli_json("gc", "--dry-run")
    planned = {j["job_id"]: j for j in plan["jobs"]}
    assert set(planned) == {expired, plain}, plan
    assert planned[expired]["action"] == "trim" and planned[expired]["kept"] == ["a"]
    assert planned[plain]["action"] == "delete" and planned[plain]["footprint"]["tasks"] == 1
    human = f.cli("gc", "--dry-run")
    assert human.returncode == 0 and "would collect 2 job(s)" in human.stdout
    assert f.http("GET", f"/v1/jobs/{plain}").status_code == 200  # a dry run deleted nothing

    done = f.cli_json("gc")
    assert {j["job_id"] for j in done["jobs"]} == {expired, plain}
    assert f.http("GET", f"/v1/jobs/{plain}").status_code == 404
    kept = gcf.tasks(expired)
    assert set(kept) == {"a"} and kept["a"]["status"] == "succeeded"
    assert gcf.jobs.task(kept["a"]["id"])["result"]["square"] == 9  # the declared output outlives the ttl
    assert f.cli_json("gc", "--dry-run")["jobs"] == []
    # Never collected: the running job (whatever its ttl) and the failed one (retryable within its ttl).
    assert gcf.tasks(running)["hold"]["status"] == "running"
    assert gcf.tasks(failed)["bad"]["status"] == "failed"
    retried = f.cli("job", "retry", failed)
    assert retried.returncode == 0, retried.stderr
    assert any(r["action"] == "gc.collected" for r in f.audit())
    gcf.jobs.post(f"/v1/jobs/{running}/cancel", {"reason": "done"})
