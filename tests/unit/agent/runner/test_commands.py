"""Command tasks: results, failures, timeouts and cancels that kill the whole process group, log chunks."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from polyfabric.agent.runner import Lease
from polyfabric.agent.runner.interrupt import Interrupt
from polyfabric.agent.runner.process import run_command
from polyfabric.agent.runner.streams import LogWriter
from polyfabric.agent.runner.workspace import Workspace
from polyfabric.testing import wait_until

__all__: list[str] = []

pytestmark = pytest.mark.skipif(os.name != "posix", reason="tasks run as POSIX process groups")


def test_success_reports_the_result_file_in_a_private_workspace(runner_factory, make_lease, view, tmp_path):
    runner = runner_factory()
    script = ('import json, os; print("hello"); '
              'json.dump({"env": {k: v for k, v in os.environ.items()}, "cwd": os.getcwd(), '
              '"mode": oct(os.stat(os.environ["POLYFABRIC_WORKSPACE"]).st_mode & 0o777)}, '
              'open(os.environ["POLYFABRIC_RESULT"], "w"))')
    lease = make_lease([sys.executable, "-c", script], env={"EXTRA": "1"})
    runner.offer([lease])
    final = view.wait_final(lease["task_id"])
    assert view.types(lease["task_id"]) == ["started", "finished"]
    assert final["status"] == "succeeded" and final["exit_code"] == 0 and final["error"] is None
    result = final["result"]
    workspace = str(tmp_path / "data" / "work" / f"{lease['task_id']}-1")
    assert result["cwd"] == workspace and result["mode"] == "0o700"
    env = result["env"]
    assert env["POLYFABRIC_TASK_ID"] == lease["task_id"] and env["POLYFABRIC_JOB_ID"] == lease["job_id"]
    assert env["POLYFABRIC_ATTEMPT"] == "1" and env["POLYFABRIC_WORKSPACE"] == workspace
    assert env["POLYFABRIC_RESULT"] == workspace + "/result.json" and env["TMPDIR"] == workspace + "/tmp"
    assert env["EXTRA"] == "1"
    assert set(env) - {"PATH", "HOME", "LANG", "TMPDIR", "EXTRA", "LC_CTYPE"} == {
        "POLYFABRIC_TASK_ID", "POLYFABRIC_JOB_ID", "POLYFABRIC_ATTEMPT", "POLYFABRIC_WORKSPACE", "POLYFABRIC_RESULT",
        "POLYFABRIC_ARTIFACTS"}
    assert env["POLYFABRIC_ARTIFACTS"] == workspace + "/artifacts"  # files left there are collected as artifacts
    assert view.text(lease["task_id"], "stdout") == "hello\n"


def test_no_result_file_is_null_and_invalid_json_fails(runner_factory, make_lease, view):
    runner = runner_factory()
    quiet = make_lease(["true"])
    broken = make_lease(["sh", "-c", 'echo "{not json" > "$POLYFABRIC_RESULT"'])
    runner.offer([quiet, broken])
    assert view.wait_final(quiet["task_id"])["result"] is None
    assert view.final(quiet["task_id"])["status"] == "succeeded"
    final = view.wait_final(broken["task_id"])
    assert final["status"] == "failed" and final["error"].startswith("the result file is not valid JSON")


def test_a_non_zero_exit_fails_with_the_code_and_the_last_stderr_line(runner_factory, make_lease, view):
    runner = runner_factory()
    lease = make_lease(["sh", "-c", "echo first >&2; echo 'disk is full' >&2; echo out; exit 3"])
    runner.offer([lease])
    final = view.wait_final(lease["task_id"])
    assert final == {**final, "status": "failed", "exit_code": 3, "error": "exit code 3: disk is full", "result": None}


def test_a_missing_executable_fails_without_a_shell(runner_factory, make_lease, view):
    runner = runner_factory()
    lease = make_lease(["no-such-program-here", "arg"])
    runner.offer([lease])
    final = view.wait_final(lease["task_id"])
    assert final["status"] == "failed" and "cannot start 'no-such-program-here'" in final["error"]


def _group_task(tmp_path: Path, make_lease, *, ignore_term: bool, timeout_s: float | None):
    # The leader (sh) starts a grandchild of the agent and waits; both pids go to a file.
    trap = 'trap "" TERM; ' if ignore_term else ""
    pids = tmp_path / "pids"
    body = f'{trap}sleep 60 & echo $! > {pids}.tmp; echo $$ >> {pids}.tmp; mv {pids}.tmp {pids}; wait'
    return pids, Lease.from_wire(make_lease(["sh", "-c", body], timeout_s=timeout_s))


def _run_direct(lease: Lease, tmp_path: Path, interrupt: Interrupt, grace: float):
    workspace = Workspace.create(tmp_path / "work", lease.task_id, lease.attempt)
    out = LogWriter(lambda *a: None, "stdout")
    err = LogWriter(lambda *a: None, "stderr")
    return run_command(lease, workspace, stdout=out, stderr=err, interrupt=interrupt, kill_grace_s=grace)


def test_a_timeout_kills_the_whole_process_group(tmp_path, make_lease, pid_gone):
    pids_file, lease = _group_task(tmp_path, make_lease, ignore_term=False, timeout_s=0.5)
    started = time.monotonic()
    outcome = _run_direct(lease, tmp_path, Interrupt(), grace=5.0)
    assert outcome.status == "failed" and outcome.error == "timed out after 0.5s"
    assert time.monotonic() - started < 3.0  # SIGTERM was enough: no waiting for the grace
    grandchild, child = (int(x) for x in pids_file.read_text().split())
    assert pid_gone(child) and pid_gone(grandchild)


def test_processes_ignoring_sigterm_get_sigkill_after_the_grace(tmp_path, make_lease, pid_gone):
    pids_file, lease = _group_task(tmp_path, make_lease, ignore_term=True, timeout_s=0.3)
    started = time.monotonic()
    outcome = _run_direct(lease, tmp_path, Interrupt(), grace=0.4)
    elapsed = time.monotonic() - started
    assert outcome.error == "timed out after 0.3s"
    assert 0.65 <= elapsed < 3.0
    grandchild, child = (int(x) for x in pids_file.read_text().split())
    assert pid_gone(child) and pid_gone(grandchild)


def test_cancel_stops_the_group_and_reports_cancelled(runner_factory, make_lease, view, tmp_path, pid_gone):
    runner = runner_factory()
    pids_file, lease = _group_task(tmp_path, make_lease, ignore_term=False, timeout_s=None)
    raw = make_lease(list(lease.command or ()))
    runner.offer([raw])
    wait_until(pids_file.exists, timeout=5, interval=0.01)
    assert runner.running() == [{"task_id": raw["task_id"], "attempt": 1}]
    runner.cancel([{"task_id": raw["task_id"], "attempt": 1, "reason": "job cancelled by token:alice"}])
    final = view.wait_final(raw["task_id"])
    assert final["type"] == "cancelled" and final["reason"] == "job cancelled by token:alice"
    assert view.types(raw["task_id"]) == ["started", "cancelled"]
    grandchild, child = (int(x) for x in pids_file.read_text().split())
    assert pid_gone(child) and pid_gone(grandchild)
    assert runner.running() == [] and runner.free_slots() == 2


def test_log_chunks_have_contiguous_offsets_in_order(runner_factory, make_lease, view):
    runner = runner_factory()
    # ~200 KiB on stdout in many writes (several chunks, multi-byte characters), a little on stderr.
    script = ("import sys\n"
              "for i in range(4000): sys.stdout.write(f'line {i:05d} é✓ ' + 'x' * 30 + '\\n'); sys.stdout.flush()\n"
              "sys.stderr.write('warning: done\\n')\n")
    lease = make_lease([sys.executable, "-c", script])
    runner.offer([lease])
    assert view.wait_final(lease["task_id"])["status"] == "succeeded"
    chunks = view.logs(lease["task_id"], "stdout")
    assert len(chunks) > 1
    offset = 0
    for chunk in chunks:
        assert chunk["offset"] == offset
        offset += len(chunk["data"].encode())
    expected = "".join(f"line {i:05d} é✓ " + "x" * 30 + "\n" for i in range(4000))
    assert "".join(c["data"] for c in chunks) == expected and offset == len(expected.encode())
    assert [c["offset"] for c in view.logs(lease["task_id"], "stderr")] == [0]
    # Every chunk travels before the final event.
    batch = view.outbox.peek(100_000, 1 << 40)
    assert batch.events[-1]["type"] == "finished"


def test_logs_stream_while_the_task_runs(runner_factory, make_lease, view):
    runner = runner_factory()
    lease = make_lease(["sh", "-c", "echo early; sleep 0.5; echo late"])
    runner.offer([lease])
    wait_until(lambda: view.text(lease["task_id"], "stdout") == "early\n", timeout=0.4, interval=0.01)
    assert view.final(lease["task_id"]) is None
    view.wait_final(lease["task_id"])
    assert view.text(lease["task_id"], "stdout") == "early\nlate\n"


def test_workdir_relative_is_made_in_the_workspace_absolute_must_exist(runner_factory, make_lease, view, tmp_path):
    runner = runner_factory()
    relative = make_lease(["sh", "-c", 'pwd > "$POLYFABRIC_RESULT.txt"; echo \\"$(pwd)\\" > "$POLYFABRIC_RESULT"'],
                          workdir="sub/dir")
    missing = make_lease(["true"], workdir=str(tmp_path / "nowhere"))
    runner.offer([relative, missing])
    result = view.wait_final(relative["task_id"])["result"]
    assert result.endswith(f"{relative['task_id']}-1/sub/dir")
    final = view.wait_final(missing["task_id"])
    assert final["status"] == "failed" and "does not exist on this node" in final["error"]
    assert json.dumps(final)  # every event is JSON
