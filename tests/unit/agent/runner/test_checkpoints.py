"""Checkpoints on the agent (agent/runner/checkpoints.py) and the task's side (sdk/context.py):
real task processes and warm workers, the agent's real Unix socket, a fake coordinator client."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from polyfabric.agent.runner.checkpoints import CheckpointAgent
from polyfabric.client import ApiError
from polyfabric.sdk.context import CheckpointError, NotInTask, task_context
from polyfabric.testing import wait_until

PY = sys.executable


class FakeCoordinator:
    """Answers the agent's checkpoint calls like services/checkpoints.py, in memory."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []
        self.saved: list[dict[str, Any]] = []  # {"task_id", "attempt", "format", "data": bytes}
        self.refuse: str | None = None
        self.stored: dict[str, tuple[str, bytes]] = {}  # task -> (format, bytes) served by fetch
        self._spool: dict[str, bytearray] = {}
        self.lock = threading.Lock()

    def post(self, path: str, payload: dict[str, Any], **_: Any) -> Any:
        with self.lock:
            if path == "/v1/agent/checkpoint":
                return self._part(payload)
            if path == "/v1/agent/checkpoint/fetch":
                return self._fetch(payload)
        raise AssertionError(path)

    def _part(self, part: dict[str, Any]) -> dict[str, Any]:
        if self.refuse:
            raise ApiError(409, "conflict", self.refuse)
        self.parts.append(part)
        buffer = self._spool.setdefault(part["upload_id"], bytearray())
        assert part["offset"] == len(buffer)
        buffer += base64.b64decode(part["data"])
        if not part["final"]:
            return {"received": len(buffer)}
        data = bytes(buffer)
        assert part["size"] == len(data) and part["sha256"] == hashlib.sha256(data).hexdigest()
        self.saved.append({"task_id": part["task_id"], "attempt": part["attempt"], "format": part["format"],
                           "data": data})
        meta = {"seq": len(self.saved), "size": len(data), "sha256": part["sha256"], "format": part["format"]}
        return {"checkpoint": meta, "stop": False}

    def _fetch(self, request: dict[str, Any]) -> dict[str, Any]:
        if request["task_id"] not in self.stored:
            raise ApiError(404, "not_found", f"task {request['task_id']} has no checkpoint")
        fmt, data = self.stored[request["task_id"]]
        offset = request["offset"]
        chunk = data[offset:offset + 100_000]  # small parts: the agent must join them
        return {"seq": 7, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "format": fmt,
                "offset": offset, "data": base64.b64encode(chunk).decode(), "eof": offset + len(chunk) >= len(data)}

    def meta(self, task_id: str) -> dict[str, Any]:
        fmt, data = self.stored[task_id]
        return {"seq": 7, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "format": fmt}


@pytest.fixture
def coordinator() -> FakeCoordinator:
    return FakeCoordinator()


@pytest.fixture
def runner(runner_factory, coordinator):
    runner = runner_factory(slots=2)
    runner.checkpoints = CheckpointAgent(coordinator).start(runner.work_root.parent)  # type: ignore[arg-type]
    yield runner
    runner.checkpoints.close()


def _sdk(code: str) -> list[str]:
    """A command task running Python with the SDK."""
    return [PY, "-c", f"import json, os, sys, time\nimport polyfabric\nctx = polyfabric.task_context()\n{code}"]


RESULT = "json.dump(out, open(os.environ['POLYFABRIC_RESULT'], 'w'))"


def test_a_state_saved_by_a_task_reaches_the_coordinator_and_restore_sees_it(runner, make_lease, view, coordinator):
    lease = make_lease(_sdk(f"before = ctx.restore()\nsaved = ctx.checkpoint({{'step': 3}})\n"
                            f"out = {{'before': before, 'saved': saved, 'after': ctx.restore()}}\n{RESULT}"))
    runner.offer([lease])
    final = view.wait_final(lease["task_id"], timeout=30)
    assert final["status"] == "succeeded", final
    assert final["result"]["before"] is None and final["result"]["after"] == {"step": 3}
    assert final["result"]["saved"]["seq"] == 1 and len(final["result"]["saved"]["sha256"]) == 64
    [saved] = coordinator.saved
    assert (saved["task_id"], saved["attempt"], saved["format"]) == (lease["task_id"], 1, "json")
    assert json.loads(saved["data"]) == {"step": 3}


def test_a_function_task_checkpoints_bytes_in_parts_from_a_warm_worker(runner, make_lease, view, coordinator,
                                                                        functions_dir):
    (functions_dir / "pf_ck.py").write_text(
        "import polyfabric\n"
        "def save(size):\n"
        "    ctx = polyfabric.task_context()\n"
        "    return ctx.checkpoint(bytes(range(256)) * (size // 256))\n")
    lease = make_lease(function="pf_ck:save", args={"size": 1_200_128})
    runner.offer([lease])
    final = view.wait_final(lease["task_id"], timeout=30)
    assert final["status"] == "succeeded", final
    [saved] = coordinator.saved
    assert saved["format"] == "bytes" and saved["data"] == bytes(range(256)) * (1_200_128 // 256)
    assert len(coordinator.parts) == 3  # 512 KiB parts
    assert final["result"]["size"] == 1_200_128


def test_a_restored_json_state_is_what_restore_returns_before_the_task_starts(runner, make_lease, view,
                                                                               coordinator):
    lease = make_lease(_sdk(f"out = ctx.restore()\n{RESULT}"), attempt=2)
    coordinator.stored[lease["task_id"]] = ("json", json.dumps({"i": 41, "big": "x" * 250_000}).encode())
    lease["checkpoint"] = coordinator.meta(lease["task_id"])
    runner.offer([lease])
    final = view.wait_final(lease["task_id"], timeout=30)
    assert final["status"] == "succeeded", final
    assert final["result"]["i"] == 41 and len(final["result"]["big"]) == 250_000


def test_a_command_finds_its_directory_restored_and_saves_it_with_polyfabric_checkpoint(
        runner, make_lease, view, coordinator):
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, text in (("progress.txt", b"3"), ("sub/notes.txt", b"hello")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    lease = make_lease(_sdk(
        "import subprocess\n"
        "d = os.environ['POLYFABRIC_CHECKPOINT_DIR']\n"
        "seen = {p: open(os.path.join(d, p)).read() for p in ('progress.txt', 'sub/notes.txt')}\n"
        "open(os.path.join(d, 'progress.txt'), 'w').write('4')\n"
        f"cli = subprocess.run([{str(Path(PY).parent / 'polyfabric')!r}, 'checkpoint', '--json'],"
        " capture_output=True, text=True)\n"
        f"out = {{'seen': seen, 'rc': cli.returncode, 'cli': cli.stdout, 'err': cli.stderr}}\n{RESULT}"), attempt=2)
    coordinator.stored[lease["task_id"]] = ("tar", archive.getvalue())
    lease["checkpoint"] = coordinator.meta(lease["task_id"])
    runner.offer([lease])
    final = view.wait_final(lease["task_id"], timeout=30)
    assert final["status"] == "succeeded", final
    result = final["result"]
    assert result["seen"] == {"progress.txt": "3", "sub/notes.txt": "hello"}
    assert result["rc"] == 0, result["err"]
    assert json.loads(result["cli"])["seq"] == 1
    [saved] = coordinator.saved
    with tarfile.open(fileobj=io.BytesIO(saved["data"])) as tar:
        names = sorted(tar.getnames())
        progress = tar.extractfile("progress.txt").read()  # type: ignore[union-attr]
    assert saved["format"] == "tar" and names == ["progress.txt", "sub", "sub/notes.txt"] and progress == b"4"


def test_a_refused_checkpoint_raises_with_the_coordinators_reason(runner, make_lease, view, coordinator):
    coordinator.refuse = "checkpoint refused: attempt 1 of task t-x is not current on node n-y"
    lease = make_lease(_sdk("try:\n    ctx.checkpoint([1])\n    out = 'saved'\n"
                            "except polyfabric.sdk.CheckpointError as exc:\n    out = str(exc)\n" + RESULT))
    runner.offer([lease])
    final = view.wait_final(lease["task_id"], timeout=30)
    assert final["status"] == "succeeded", final
    assert "refused" in final["result"] and "not current" in final["result"]


def test_a_checkpoint_that_cannot_be_fetched_fails_the_attempt_naming_why(runner, make_lease, view):
    lease = make_lease(["true"], attempt=2, checkpoint={"seq": 3, "size": 10, "sha256": "0" * 64, "format": "json"})
    runner.offer([lease])
    final = view.wait_final(lease["task_id"], timeout=30)
    assert final["status"] == "failed" and "cannot fetch the task's checkpoint: 404" in final["error"]


def test_asked_to_stop_a_function_sees_should_stop_a_command_gets_sigterm_and_both_are_handed_back(
        runner, make_lease, view, functions_dir, tmp_path):
    """Whatever a task returns or exits with after it was asked to checkpoint and stop, it is not
    done: the attempt ends `rejected` (the coordinator moves it, resuming from its checkpoint),
    never `finished` with a partial result passed off as the task's."""
    (functions_dir / "pf_stop.py").write_text(
        "import time, polyfabric\n"
        "def wait_for_stop(marker):\n"
        "    ctx = polyfabric.task_context()\n"
        "    open(marker, 'w').write('started')\n"
        "    while not ctx.should_stop():\n"
        "        time.sleep(0.02)\n"
        "    return 'asked to stop'\n")
    marker = tmp_path / "fn-started"
    fn = make_lease(function="pf_stop:wait_for_stop", args={"marker": str(marker)})
    cmd_marker = tmp_path / "cmd-started"
    cmd = make_lease(_sdk(
        "import signal\n"
        "def on_term(*_):\n"
        f"    json.dump('terminated', open(os.environ['POLYFABRIC_RESULT'], 'w'))\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        f"open({str(cmd_marker)!r}, 'w').write('started')\n"
        "time.sleep(60)\n"))
    runner.offer([fn, cmd])
    wait_until(lambda: marker.exists() and cmd_marker.exists(), timeout=30, message="both tasks started")
    runner.checkpoint_asked([{"task_id": t["task_id"], "attempt": 1, "reason": "drain"} for t in (fn, cmd)])
    for lease in (fn, cmd):
        final = view.wait_final(lease["task_id"], timeout=30)
        assert (final["type"], final["reason"]) == ("rejected", "drain"), final
        assert "finished" not in view.types(lease["task_id"])


def test_outside_a_task_there_is_no_context_and_no_socket(monkeypatch):
    monkeypatch.delenv("POLYFABRIC_TASK_ID", raising=False)
    with pytest.raises(NotInTask, match="not inside a polyfabric task"):
        task_context()
    monkeypatch.setenv("POLYFABRIC_TASK_ID", "t-1")
    for name in ("POLYFABRIC_AGENT_SOCKET", "POLYFABRIC_CHECKPOINT_TOKEN", "POLYFABRIC_CHECKPOINT_DIR"):
        monkeypatch.delenv(name, raising=False)
    ctx = task_context()
    assert ctx.restore() is None and not ctx.should_stop()
    with pytest.raises(CheckpointError, match="not available"):
        ctx.checkpoint({"a": 1})
    with pytest.raises(CheckpointError, match="not JSON-serializable"):
        ctx.checkpoint({1, 2})


def test_the_socket_refuses_an_unknown_token(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYFABRIC_TASK_ID", "t-1")
    monkeypatch.setenv("POLYFABRIC_AGENT_SOCKET", runner.checkpoints.socket_path)
    monkeypatch.setenv("POLYFABRIC_CHECKPOINT_TOKEN", "not-a-token")
    monkeypatch.delenv("POLYFABRIC_CHECKPOINT_DIR", raising=False)
    with pytest.raises(CheckpointError) as caught:
        task_context().checkpoint({"a": 1})
    assert "unknown token" in str(caught.value), str(caught.value)
    assert os.stat(runner.checkpoints.socket_path)


# -- handing an attempt back (a reloaded owner policy, `on_change: stop`) -----------------------------

STEPS = (
    "import time, polyfabric\n"
    "def steps(marker, obey=True):\n"
    "    ctx = polyfabric.task_context()\n"
    "    i = 0\n"
    "    while True:\n"
    "        i += 1\n"
    "        ctx.checkpoint({'i': i})\n"
    "        if obey and ctx.should_stop():\n"
    "            open(marker, 'w').write(str(i))\n"
    "            return {'stopped_at': i}\n"
    "        time.sleep(0.02)\n")

NO_LONGER = "the node's owner policy v2 no longer allows it: jobs of domain 'ops' are not accepted here"


def test_handing_back_asks_for_a_checkpoint_first_and_the_attempt_ends_rejected_not_finished(
        runner, make_lease, view, coordinator, functions_dir, tmp_path):
    (functions_dir / "pf_steps.py").write_text(STEPS)
    marker = tmp_path / "stopped-at"
    fn = make_lease(function="pf_steps:steps", args={"marker": str(marker)})
    term = tmp_path / "cmd-started"
    cmd = make_lease(_sdk(  # a command that saves its state on SIGTERM and exits 0
        "import signal\n"
        "def on_term(*_):\n"
        "    ctx.checkpoint({'terminated': True})\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        f"open({str(term)!r}, 'w').write('started')\n"
        "time.sleep(60)\n"))
    runner.offer([fn, cmd])
    wait_until(lambda: len([s for s in coordinator.saved if s["task_id"] == fn["task_id"]]) >= 2 and term.exists(),
               timeout=30, message="the function checkpointing and the command started")
    for lease in (fn, cmd):
        assert runner.hand_back((lease["task_id"], 1), NO_LONGER, checkpoint_grace_s=60.0)
        assert not runner.hand_back((lease["task_id"], 1), NO_LONGER, checkpoint_grace_s=60.0)  # once
    # Both stop by themselves, long before the grace: each after saving a checkpoint.
    for lease in (fn, cmd):
        final = view.wait_final(lease["task_id"], timeout=20)
        assert final["type"] == "rejected" and final["reason"] == NO_LONGER, final
        assert "finished" not in view.types(lease["task_id"])
    stopped_at = int(marker.read_text())
    saved_fn = [json.loads(s["data"]) for s in coordinator.saved if s["task_id"] == fn["task_id"]]
    assert saved_fn[-1] == {"i": stopped_at}  # the last checkpoint is where it stopped: it resumes from there
    saved_cmd = [json.loads(s["data"]) for s in coordinator.saved if s["task_id"] == cmd["task_id"]]
    assert saved_cmd == [{"terminated": True}]
    assert runner.wait_idle(5)


def test_an_attempt_that_ignores_the_ask_is_stopped_when_the_grace_is_over(runner, make_lease, view, coordinator,
                                                                           functions_dir, tmp_path):
    (functions_dir / "pf_steps.py").write_text(STEPS)
    fn = make_lease(function="pf_steps:steps", args={"marker": str(tmp_path / "never"), "obey": False})
    runner.offer([fn])
    wait_until(lambda: any(s["task_id"] == fn["task_id"] for s in coordinator.saved), timeout=30,
               message="the function checkpointing")
    asked_at = time.time()
    assert runner.hand_back((fn["task_id"], 1), NO_LONGER, checkpoint_grace_s=0.5)
    assert (runner.work_root / f"{fn['task_id']}-1" / ".polyfabric-stop").exists()  # it was asked
    final = view.wait_final(fn["task_id"], timeout=20)
    assert final["type"] == "rejected" and final["reason"] == NO_LONGER
    assert final["at"] - asked_at >= 0.5  # not before the grace was over
    assert not (tmp_path / "never").exists()


def test_handing_back_without_a_grace_stops_at_once_without_asking(runner, make_lease, view):
    lease = make_lease(["sleep", "30"])
    runner.offer([lease])
    wait_until(lambda: view.types(lease["task_id"]) == ["started"], timeout=5, interval=0.005)
    workspace = runner.work_root / f"{lease['task_id']}-1"
    wait_until(lambda: workspace.exists(), timeout=5, interval=0.005)
    assert runner.hand_back((lease["task_id"], 1), NO_LONGER, checkpoint_grace_s=0.0)
    final = view.wait_final(lease["task_id"], timeout=10)
    assert final["type"] == "rejected" and final["reason"] == NO_LONGER
    assert not (workspace / ".polyfabric-stop").exists()


def test_a_refused_large_checkpoint_still_says_why(runner, tmp_path, monkeypatch):
    """The agent answers an unknown token after reading the header and closes: a checkpoint larger
    than the socket's buffer then fails to send, and the task must still get the agent's reason
    (not "broken pipe"): the race the small test above hits now and then, made certain."""
    monkeypatch.setenv("POLYFABRIC_TASK_ID", "t-1")
    monkeypatch.setenv("POLYFABRIC_AGENT_SOCKET", runner.checkpoints.socket_path)
    monkeypatch.setenv("POLYFABRIC_CHECKPOINT_TOKEN", "not-a-token")
    monkeypatch.delenv("POLYFABRIC_CHECKPOINT_DIR", raising=False)
    with pytest.raises(CheckpointError) as caught:
        task_context().checkpoint({"blob": "x" * 8_000_000})
    assert "unknown token" in str(caught.value), str(caught.value)
