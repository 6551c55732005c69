"""Functions the checkpoint e2e tests run as function tasks (agents have tests/e2e on their
`--pythonpath`: a task names them as `checkpoint_functions:count`). Not a test module."""

from __future__ import annotations

import os
import time
from typing import Any

import polyfabric


def count(n: int, marker: str, step_s: float = 0.2) -> dict[str, Any]:
    """Count to `n`, one step every `step_s`, saving a checkpoint after each step. Every start is
    written to `marker` ("pid attempt from") and kept in the state, so a test sees where each
    attempt began. Asked to stop (a drain), it returns after its checkpoint: it resumes elsewhere."""
    ctx = polyfabric.task_context()
    state = ctx.restore() or {"i": 0, "starts": []}
    state["starts"].append({"attempt": ctx.attempt, "from": state["i"]})
    with open(marker, "a") as handle:
        handle.write(f"{os.getpid()} {ctx.attempt} {state['i']}\n")
    while state["i"] < n:
        time.sleep(step_s)
        state["i"] += 1
        ctx.checkpoint(state)
        if ctx.should_stop():
            return {"stopped_at": state["i"]}
    return state


def timed_saves(count: int, size: int) -> dict[str, Any]:
    """Save `count` checkpoints of `size` bytes; how long each took, until durable (seconds)."""
    ctx = polyfabric.task_context()
    times = []
    for i in range(count):
        start = time.perf_counter()
        ctx.checkpoint(bytes([i % 256]) * size)
        times.append(time.perf_counter() - start)
    times.sort()
    return {"median_s": times[len(times) // 2], "max_s": times[-1], "count": count, "size": size}
