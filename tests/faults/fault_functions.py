"""Functions the fault-injection scenarios run as function tasks (agents get tests/faults on
`--pythonpath`). Not a test module.

Every call appends one line to a shared *ledger* file before it works: `TASK_ID KEY ATTEMPT RUN`,
RUN being a fresh random id that the call also returns. The ledger is the side effect the suite
counts executions by, independently of the coordinator: a task with two lines ran twice, and the
result the coordinator accepted must carry the RUN of one of its lines.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any


def _record(ledger: str, key: str) -> tuple[str, int]:
    run = uuid.uuid4().hex
    attempt = int(os.environ["POLYFABRIC_ATTEMPT"])
    line = f"{os.environ['POLYFABRIC_TASK_ID']} {key} {attempt} {run}\n"
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write with O_APPEND: lines of concurrent calls never mix
    finally:
        os.close(fd)
    return run, attempt


def work(key: str, seconds: float, ledger: str) -> dict[str, Any]:
    """A short unit of work: record the execution, hold the slot `seconds`."""
    run, attempt = _record(ledger, key)
    time.sleep(seconds)
    return {"key": key, "attempt": attempt, "run": run}


def hold(key: str, release: str, ledger: str, limit_s: float = 300.0) -> dict[str, Any]:
    """Long work that spans a fault: runs until the file `release` exists (or `limit_s`)."""
    run, attempt = _record(ledger, key)
    deadline = time.monotonic() + limit_s
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"key": key, "attempt": attempt, "run": run}


def steps(key: str, count: int, step_s: float, ledger: str, progress: str) -> dict[str, Any]:
    """Checkpointed work: `count` steps of `step_s`, a checkpoint after each; a new attempt resumes
    from the last checkpoint. Each step done is appended to `progress` (`KEY ATTEMPT STEP`), so the
    test sees which steps ran again."""
    import polyfabric

    run, attempt = _record(ledger, key)
    ctx = polyfabric.task_context()
    state = ctx.restore() or {"done": 0, "resumed_from": []}
    start = int(state["done"])
    resumed = [*state.get("resumed_from", []), start] if attempt > 1 else []
    for step in range(start, count):
        time.sleep(step_s)
        with Path(progress).open("a") as out:
            out.write(f"{key} {attempt} {step}\n")
        ctx.checkpoint({"done": step + 1, "resumed_from": resumed})
    return {"key": key, "attempt": attempt, "run": run, "started_at_step": start, "resumed_from": resumed}


def slow_first(key: str, first_s: float, then_s: float, ledger: str) -> dict[str, Any]:
    """Work that takes `first_s` on its first attempt and `then_s` on any later one."""
    run, attempt = _record(ledger, key)
    time.sleep(first_s if attempt == 1 else then_s)
    return {"key": key, "attempt": attempt, "run": run}
