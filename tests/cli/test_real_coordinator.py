"""The CLI and the SDK against a real `polyfabric server` and a real `polyfabric agent` (SQLite).

The fake coordinator covers the details; these check that the same commands work against the
real API: the example workflows run, an invalid one is refused whole, exit codes follow the
outcome, `task logs -f` follows a running task to its end, and the SDK submits function tasks the
agent imports from its --pythonpath.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from polyfabric.cli.main import cli as polyfabric
from polyfabric.client.jobs import JobsClient
from polyfabric.sdk import ITEM, Client, Workflow
from polyfabric.testing import AgentProcess, CoordinatorProcess, free_port, wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CAPACITY = ["--cpu", "2", "--memory", "4Gi", "--disk", "20Gi", "--gpus", "0", "--slots", "4"]


class Real:
    def __init__(self, coordinator: CoordinatorProcess, agent: AgentProcess, root: Path) -> None:
        self.coordinator = coordinator
        self.agent = agent
        self.root = root
        self.runner = CliRunner()

    def cli(self, *args: str) -> Result:
        env = {"POLYFABRIC_URL": self.coordinator.url, "POLYFABRIC_TOKEN": self.coordinator.admin_token,
               "POLYFABRIC_CONFIG": str(self.root / "no-client-config.json"), "POLYFABRIC_TOKEN_FILE": None,
               "POLYFABRIC_DOMAIN": "test"}
        return self.runner.invoke(polyfabric, list(args), env=env, catch_exceptions=False)

    def jobs(self) -> JobsClient:
        return JobsClient(self.coordinator.url, self.coordinator.admin_token)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Real]:
    root = tmp_path_factory.mktemp("real")
    coordinator = CoordinatorProcess(root / "coordinator").start()
    agent = AgentProcess(coordinator.url, root / "agent", name="cli-node", join_token=coordinator.join_token("test"),
                         extra_args=[*CAPACITY, "--pythonpath", str(REPO)])
    agent.start()
    try:
        with coordinator.api() as api:
            wait_until(lambda: any(n["state"] == "active" for n in api.get("/v1/nodes")), timeout=30,
                       message=f"the agent to be active\n{agent.log()}")
        yield Real(coordinator, agent, root)
    finally:
        agent.stop()
        coordinator.stop()


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], str]:
    def write_file(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write_file


def test_the_example_runs_and_every_view_of_it_agrees(real: Real):
    result = real.cli("run", str(EXAMPLES / "shard_stats.yaml"), "-p", "shards=3", "-p", "size=10", "--wait",
                      "--json", "--timeout", "60s")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    job_id = out["job"]["id"]
    assert out["job"]["status"] == "succeeded"
    assert out["job"]["counts"] == {"succeeded": 7, "skipped": 1}
    assert [r["shard"] for r in out["result"]["tasks"]["work"]] == [0, 1, 2]
    summary = out["result"]["result"]["summary"]
    assert (summary["branch"], summary["shards"], summary["samples"]) == ("low", 3, 30)
    assert summary["mean"] == round(out["result"]["tasks"]["report"]["mean"], 4)

    listed = json.loads(real.cli("job", "ls", "--json").stdout)
    assert job_id in [j["id"] for j in listed]
    shown = real.cli("job", "show", job_id)
    assert "Progress:   8/8 done (succeeded 7, skipped 1)" in shown.stdout
    detail = json.loads(real.cli("job", "show", job_id, "--json", "--all").stdout)
    assert {t["key"] for t in detail["tasks"]} == {"split", "work", "work[0]", "work[1]", "work[2]", "report",
                                                   "high", "low", "summary"}
    report = next(t for t in detail["tasks"] if t["key"] == "report")
    assert report["node_id"] == real.agent.node_id and report["attempt"] == 1
    logs = real.cli("job", "logs", job_id, "--task", "report").stdout
    assert logs.startswith("report | {'shards': 3, 'n': 30, 'mean': ")
    task = json.loads(real.cli("task", "show", report["id"], "--json").stdout)
    assert [a["status"] for a in task["attempts"]] == ["succeeded"]


def test_an_invalid_workflow_is_refused_whole_with_every_problem(real: Real, write):
    before = len(json.loads(real.cli("job", "ls", "--json").stdout))
    path = write("broken.yaml", "name: broken\ntasks:\n  a: {command: echo, colour: red}\n  b: {depends_on: [zz]}\n")
    result = real.cli("run", path)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "Error: workflow 'broken' is invalid (4 problems):"
    assert len([line for line in lines if line.startswith("  - ")]) == 4
    assert len(json.loads(real.cli("job", "ls", "--json").stdout)) == before


def test_wait_exit_codes_follow_the_outcome(real: Real, write):
    path = write("fails.yaml", "name: fails\ntasks:\n  boom: {command: [python3, -c, 'raise SystemExit(3)']}\n")
    result = real.cli("run", path, "--wait", "--timeout", "60s")
    assert result.exit_code == 1, result.output
    job_id = result.stdout.splitlines()[0]
    assert f"job {job_id} failed" in result.stdout
    detail = json.loads(real.cli("job", "show", job_id, "--json").stdout)
    assert detail["tasks"][0]["exit_code"] == 3

    slow = write("slow.yaml", "name: slow\ntasks:\n  nap: {command: [sleep, '60']}\n")
    result = real.cli("run", slow, "--timeout", "1s")
    assert result.exit_code == 124
    job_id = result.stdout.splitlines()[0]
    assert real.cli("job", "cancel", job_id, "--reason", "test").exit_code == 0
    result = real.cli("job", "wait", job_id, "--timeout", "30s")
    assert result.exit_code == 1 and f"job {job_id} cancelled" in result.stdout


def test_task_logs_follow_a_running_task_to_its_end(real: Real, write):
    path = write("talk.yaml", "name: talk\ntasks:\n  talk:\n    command: [python3, -u, -c, \"import time\\n"
                 "for i in range(5):\\n    print('tick', i)\\n    time.sleep(0.3)\"]\n")
    job_id = real.cli("run", path).stdout.strip()

    def running_task() -> str | None:
        detail = json.loads(real.cli("job", "show", job_id, "--json").stdout)
        return detail["tasks"][0]["id"] if detail["tasks"] else None

    task_id = wait_until(running_task, timeout=20, message="the task to exist")
    result = real.cli("task", "logs", task_id, "-f")
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(f"tick {i}\n" for i in range(5))
    assert json.loads(real.cli("task", "show", task_id, "--json").stdout)["status"] == "succeeded"


def test_the_sdk_runs_a_function_task_the_agent_imports_from_its_pythonpath(real: Real):
    wf = Workflow("sdk-stats", params={"shards": 2})
    split = wf.command("split", ["python3", "-c", "import json,os; json.dump(list(range({{ params.shards }})), "
                                 "open(os.environ['POLYFABRIC_RESULT'],'w'))"])
    wf.function("work", "examples.stats:process", args={"shard": ITEM, "size": 5}, foreach=split.result)
    with Client(real.coordinator.url, real.coordinator.admin_token) as client:
        run = client.run(wf, {"shards": 3}, domain="test", timeout=60)
        result = run.result()
    assert [r["shard"] for r in result["work"]] == [0, 1, 2]
    assert all(r["n"] == 5 for r in result["work"])


def test_semaphores(real: Real):
    assert real.cli("semaphore", "set", "cli-licence", "2").exit_code == 0
    listed = json.loads(real.cli("semaphore", "ls", "--json").stdout)
    assert {"name": "cli-licence", "size": 2, "in_use": 0} in listed


def test_tasks_page_through_everything_in_a_stable_order(real: Real):
    wf = Workflow("pages")
    wf.command("z-first", ["true"])
    wf.command("each", ["true"], foreach=list(range(12)), depends_on=["z-first"])
    wf.command("a-last", ["true"], depends_on=["each"])
    with Client(real.coordinator.url, real.coordinator.admin_token) as client:
        run = client.run(wf, domain="test", timeout=60)
        keys = [t["key"] for t in client.api.tasks(run.id, page_size=4)]
    # by task name, the task's own record first, then its items by index: pages never skip or repeat
    assert keys == ["a-last", "each", *(f"each[{i}]" for i in range(12)), "z-first"]


def test_job_wait_is_woken_by_the_end_not_by_polling(real: Real, write):
    path = write("short.yaml", "name: short\ntasks:\n  nap: {command: [sleep, '2']}\n")
    job_id = real.cli("run", path).stdout.strip()
    with real.jobs() as client:
        calls = []
        original = client.events

        def counted(*args, **kwargs):
            calls.append(kwargs.get("wait_s"))
            return original(*args, **kwargs)

        client.events = counted  # type: ignore[method-assign]
        final = client.wait(job_id, timeout=60)
    assert final["status"] == "succeeded"
    assert len(calls) <= 8, calls  # each answer carries a change (or the end), never an empty spin


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_up(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """`polyfabric up ARGS` in tmp_path (its data dir under it, SQLite), output to a file."""
    data = tmp_path / "fabric"
    output = tmp_path / "up.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYFABRIC_")} | {"PYTHONUNBUFFERED": "1"}
    with output.open("w") as out:
        up = subprocess.Popen([sys.executable, "-m", "polyfabric", "up", *args, "--port", str(free_port()),
                               "--data-dir", str(data)], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    return up, data, output


def _stop_leftovers(up: subprocess.Popen[bytes], pids: list[int]) -> None:
    if up.poll() is None:
        up.kill()
        up.wait()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_polyfabric_up_runs_the_demo_workflow_prints_its_result_and_stops(tmp_path: Path):
    """What `make demo` does (`polyfabric up --run examples/shard_stats.yaml`), smaller: a fabric on
    SQLite in a fresh directory runs the workflow to success, prints its result, and Ctrl-C ends the
    coordinator and every agent."""
    up, data, output = _start_up(tmp_path, "--run", str(EXAMPLES / "shard_stats.yaml"), "-p", "shards=4")
    pids: list[int] = []
    try:
        text = wait_until(lambda: "Ctrl-C stops the fabric" in (t := output.read_text()) and t, timeout=90,
                          message=f"polyfabric up to run the workflow\n{output.read_text()}")
        pids = [int(p) for p in (data / "pids").read_text().split()]
        assert len(pids) == 4  # the coordinator and the three default agents
        assert re.search(r"job (j-\S+) succeeded \(9 tasks\)", text), text
        for key, status in (("split", "succeeded"), ("work[3]", "succeeded"), ("report", "succeeded"),
                            ("high", "skipped"), ("low", "succeeded"), ("summary", "succeeded")):
            assert re.search(rf"^  {re.escape(key)} +{status} ", text, re.MULTILINE), (key, text)
        result = json.loads(text.split("result: ", 1)[1].split("\nsee it again with:", 1)[0])
        summary = result["summary"]
        assert (summary["branch"], summary["shards"], summary["samples"]) == ("low", 4, 4000)
        assert summary["min"] <= summary["mean"] <= summary["max"]

        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(timeout=30) == 0, output.read_text()
        assert "stopping..." in output.read_text()
        assert [pid for pid in pids if _pid_alive(pid)] == []
    finally:
        _stop_leftovers(up, pids)


def test_polyfabric_up_stopped_by_sigterm_while_the_workflow_runs_stops_everything_it_started(tmp_path: Path):
    """The coordinator and the agents run in sessions of their own: a SIGTERM to `up` before it
    sits waiting (here: while it follows its --run workflow) must still stop them, not orphan them."""
    workflow = tmp_path / "stuck.yaml"
    workflow.write_text("name: stuck\ntasks:\n  never:\n    command: [sh, -c, 'exit 0']\n"
                        "    resources: {cpu: 512}\n")  # fits no node: the job waits for ever
    up, data, output = _start_up(tmp_path, "--agents", "1", "--run", str(workflow))
    pids: list[int] = []
    try:
        wait_until(lambda: "running workflow stuck as job" in output.read_text(), timeout=60,
                   message=f"polyfabric up to submit the workflow\n{output.read_text()}")
        pids = [int(p) for p in (data / "pids").read_text().split()]
        assert len(pids) == 2 and all(_pid_alive(pid) for pid in pids)
        up.terminate()
        assert up.wait(timeout=30) == 1, output.read_text()  # interrupted: not a success
        assert [pid for pid in pids if _pid_alive(pid)] == [], output.read_text()
    finally:
        _stop_leftovers(up, pids)
