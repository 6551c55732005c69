"""The agent process with its task runner: join, run leases next to the heartbeat, drain on SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from polyfabric.agent.main import Agent
from polyfabric.agent.settings import AgentSettings
from polyfabric.testing import AgentProcess, wait_until

__all__: list[str] = []

pytestmark = pytest.mark.skipif(os.name != "posix", reason="tasks run as POSIX process groups")


def lease(number: int, command: list[str]) -> dict[str, object]:
    return {"task_id": f"t-{number:016x}", "job_id": "j-0000000000000001", "key": f"k{number}", "attempt": 1,
            "command": command, "function": None, "args": {}, "env": {}, "workdir": None, "timeout_s": None,
            "resources": {"cpu_millis": 100, "memory_bytes": 1024, "gpus": 0, "slots": 1}}


def test_the_agent_runs_tasks_and_hands_them_back_when_stopped(coordinator, tmp_path):
    settings = AgentSettings(coordinator=coordinator.url, data_dir=tmp_path / "agent", join_token="pfj_x",
                             overrides={"slots": "2", "gpus": "0", "cpu": "2", "memory": "1Gi"},
                             heartbeat_interval_s=0.2, lease_wait_s=0.2, stop_grace_s=0.3, kill_grace_s=0.3,
                             report_flush_s=3.0, health_interval_s=60)
    agent = Agent(settings)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(agent.run()), daemon=True)
    thread.start()
    quick = lease(1, ["sh", "-c", "echo hi"])
    coordinator.add_lease(quick)
    assert wait_until(lambda: coordinator.final(quick["task_id"]), timeout=10)["status"] == "succeeded"
    slow = lease(2, ["sh", "-c", 'echo $$ > "$POLYFABRIC_WORKSPACE/../slow.pid"; exec sleep 30'])
    coordinator.add_lease(slow)
    wait_until(lambda: coordinator.events(slow["task_id"]), timeout=10)
    pid = int(wait_until(lambda: (tmp_path / "agent" / "work" / "slow.pid").read_text().strip(), timeout=5))
    beats = coordinator.heartbeats
    started = time.monotonic()
    agent.stop_event.set()  # what SIGTERM does
    thread.join(10)
    assert codes == [0] and time.monotonic() - started < 5
    final = coordinator.final(slow["task_id"])
    assert final == {**final, "type": "rejected", "reason": "the agent is shutting down"}
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert coordinator.heartbeats > beats  # it kept beating while it drained
    assert not any((tmp_path / "agent" / "work").glob("t-*"))  # workspaces gone


def test_sigterm_stops_the_agent_command_cleanly(coordinator, tmp_path):
    agent = AgentProcess(coordinator.url, tmp_path / "agent", name="runner-node", join_token="pfj_x",
                         extra_args=["--slots", "1", "--gpus", "0", "--stop-grace", "0.2", "--kill-grace", "0.5",
                                     "--heartbeat-interval", "0.2", "--pythonpath", str(tmp_path)])
    agent.start()
    try:
        slow = lease(3, ["sleep", "30"])
        coordinator.add_lease(slow)
        wait_until(lambda: coordinator.events(slow["task_id"]), timeout=20, message=f"started\n{agent.log()}")
        started = time.monotonic()
        agent.kill(signal.SIGTERM)
        assert agent.wait_exit(15) == 0, agent.log()
        assert time.monotonic() - started < 5
        final = coordinator.final(slow["task_id"])
        assert final is not None and final["type"] == "rejected", agent.log()
        assert "running tasks in 1 slot(s)" in agent.log()
    finally:
        agent.stop()
