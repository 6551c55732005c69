"""Helpers for the runner's tests: leases, a runner with its outbox, and a module of test functions.

Tasks are real processes (sh, the venv's Python); the functions for warm workers live in a small
module written to a temporary directory that goes on the workers' --pythonpath.
"""

from __future__ import annotations

import itertools
import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from polyfabric.agent.runner import Outbox, TaskRunner
from polyfabric.testing import wait_until

__all__ = ["OutboxView"]

pytestmark = pytest.mark.skipif(os.name != "posix", reason="tasks run as POSIX process groups")

FUNCTIONS = '''
import os, sys, time

def add(a, b):
    return a + b

def trivial():
    return None

def whoami():
    return {"pid": os.getpid(), "cwd": os.getcwd(), "task": os.environ.get("POLYFABRIC_TASK_ID"),
            "tmp": os.environ.get("TMPDIR"), "extra": os.environ.get("EXTRA")}

def chatty(lines, tag="out"):
    for i in range(lines):
        print(f"{tag} {i}")
    print("to stderr", file=sys.stderr)
    os.write(1, b"raw fd write\\n")
    return lines

def boom(message="bad input"):
    raise ValueError(message)

def sleepy(seconds):
    time.sleep(seconds)
    return "woke"

def die(code=3):
    os._exit(code)

def not_json():
    return {1, 2}

def span(seconds, marks):
    start = time.time()
    time.sleep(seconds)
    with open(marks, "a") as handle:
        handle.write(f"{start} {time.time()}\\n")
    return None
'''


@pytest.fixture
def functions_dir(tmp_path: Path) -> Path:
    path = tmp_path / "pylib"
    path.mkdir()
    (path / "pf_test_functions.py").write_text(textwrap.dedent(FUNCTIONS))
    return path


_ids = itertools.count(1)


@pytest.fixture
def make_lease() -> Callable[..., dict[str, Any]]:
    def make(command: list[str] | None = None, function: str | None = None, **fields: Any) -> dict[str, Any]:
        number = next(_ids)
        lease = {"task_id": f"t-{number:016x}", "job_id": "j-00000000000000aa", "key": f"work[{number}]",
                 "attempt": 1, "command": command, "function": function, "args": {}, "env": {}, "workdir": None,
                 "timeout_s": None, "resources": {"cpu_millis": 0, "memory_bytes": 0, "gpus": 0, "slots": 1}}
        lease.update(fields)
        return lease

    return make


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


@pytest.fixture
def runner_factory(tmp_path: Path, outbox: Outbox, functions_dir: Path) -> Iterator[Callable[..., TaskRunner]]:
    runners: list[TaskRunner] = []

    def make(slots: int = 2, **kwargs: Any) -> TaskRunner:
        kwargs.setdefault("pythonpath", [functions_dir])
        kwargs.setdefault("kill_grace_s", 0.5)
        kwargs.setdefault("flush_interval_s", 0.02)
        runner = TaskRunner(data_dir=tmp_path / "data", slots=slots, outbox=outbox, **kwargs).start()
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.close()


class OutboxView:
    """Read what a runner put in its outbox (without taking it out)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def events(self, task_id: str | None = None) -> list[dict[str, Any]]:
        events = self.outbox.peek(100_000, 1 << 40).events
        return [e for e in events if task_id is None or e["task_id"] == task_id]

    def types(self, task_id: str) -> list[str]:
        return [e["type"] for e in self.events(task_id)]

    def logs(self, task_id: str, stream: str | None = None) -> list[dict[str, Any]]:
        logs = self.outbox.peek(100_000, 1 << 40).logs
        return [c for c in logs if c["task_id"] == task_id and (stream is None or c["stream"] == stream)]

    def final(self, task_id: str) -> dict[str, Any] | None:
        for event in self.events(task_id):
            if event["type"] in ("finished", "cancelled", "rejected"):
                return event
        return None

    def wait_final(self, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
        return wait_until(lambda: self.final(task_id), timeout=timeout, interval=0.005,
                          message=f"the final event of {task_id}")

    def text(self, task_id: str, stream: str) -> str:
        return "".join(c["data"] for c in self.logs(task_id, stream))


@pytest.fixture
def view(outbox: Outbox) -> OutboxView:
    return OutboxView(outbox)


def _pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def pid_gone() -> Callable[[int], bool]:
    return _pid_gone
