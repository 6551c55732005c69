"""Health checks: the built-in probes and the owner's script (pass, fail, hang)."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from polyfabric.agent.health import run_checks, run_script

pytestmark = pytest.mark.skipif(os.name != "posix", reason="health scripts are POSIX executables")


def script(tmp_path, body, name="check.sh"):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def by_name(checks):
    return {check["name"]: check for check in checks}


def test_builtin_probes_pass_on_a_healthy_dir(tmp_path):
    checks = run_checks(tmp_path, None)
    assert [c["name"] for c in checks] == ["data_dir_writable", "memory_available", "disk_free"]
    assert all(c["ok"] for c in checks), checks
    assert all(isinstance(c["duration_ms"], float) and c["duration_ms"] >= 0 for c in checks)
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_an_unwritable_data_dir_fails(tmp_path):
    missing = tmp_path / "missing"
    checks = by_name(run_checks(missing, None))
    assert not checks["data_dir_writable"]["ok"]
    assert str(missing) in checks["data_dir_writable"]["message"]


def test_a_passing_script(tmp_path):
    path = script(tmp_path, 'echo "checking"\necho "all mounts present"\necho\nexit 0\n')
    checks = by_name(run_checks(tmp_path, path, timeout=10))
    assert checks["script"] == {**checks["script"], "ok": True, "message": "all mounts present"}


def test_a_passing_silent_script_says_ok(tmp_path):
    assert run_script(script(tmp_path, "exit 0\n"))["message"] == "ok"


def test_a_failing_script_reports_its_last_line(tmp_path):
    path = script(tmp_path, 'echo "checking /scratch"\necho "/scratch is not mounted" >&2\nexit 3\n')
    result = run_script(path, timeout=10)
    assert result["ok"] is False
    assert result["message"] == "/scratch is not mounted"


def test_a_failing_silent_script_reports_its_status(tmp_path):
    assert run_script(script(tmp_path, "exit 7\n"))["message"] == "exit status 7"
    assert run_script(script(tmp_path, "kill -TERM $$\n", "sig.sh"))["message"] == "killed by SIGTERM"


def test_long_messages_are_truncated(tmp_path):
    result = run_script(script(tmp_path, f"echo {'x' * 500}\nexit 1\n"))
    assert len(result["message"]) == 200


def test_the_script_sees_the_data_dir(tmp_path):
    result = run_script(script(tmp_path, 'echo "$POLYFABRIC_DATA_DIR"\n'), data_dir=tmp_path)
    assert result["message"] == str(tmp_path)


def test_a_script_that_cannot_run(tmp_path):
    path = tmp_path / "not-executable.sh"
    path.write_text("#!/bin/sh\nexit 0\n")
    result = run_script(path)
    assert result["ok"] is False and "cannot run" in result["message"]
    assert run_script(tmp_path / "absent.sh")["ok"] is False


def _gone(pid, within=5.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def test_a_hanging_script_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    path = script(tmp_path, f'echo "starting"\nsleep 300 &\necho $! > {pid_file}\nwait\n')
    started = time.monotonic()
    result = run_script(path, timeout=0.5)
    elapsed = time.monotonic() - started
    assert result["ok"] is False
    assert result["message"] == "timed out after 0.5s: starting"
    assert elapsed < 4.0
    assert result["duration_ms"] >= 500
    assert _gone(int(pid_file.read_text()))


def test_background_children_of_a_finished_script_are_cleaned_up(tmp_path):
    pid_file = tmp_path / "child.pid"
    path = script(tmp_path, f"sleep 300 >/dev/null 2>&1 &\necho $! > {pid_file}\necho done\nexit 0\n")
    result = run_script(path, timeout=5)
    assert result["ok"] is True and result["message"] == "done"
    assert _gone(int(pid_file.read_text()))
