"""The functions the task benchmarks run as function tasks (`benchmarks.workloads:NAME`).

The benchmark's agents get `--pythonpath` pointing at the repository root, so their warm workers
import this module by name. Each function is as small as the workload it stands for: the figures
measure the fabric, not the work.
"""

from __future__ import annotations

import time

__all__ = ["add_one", "identity", "nap", "square", "total"]


def identity(x: int) -> int:
    """fanout: return the input."""
    return x


def add_one(x: int) -> int:
    """chain: the previous step's result plus one."""
    return x + 1


def square(x: int) -> int:
    """fanout_fanin_dag, the map side."""
    return x * x


def total(values: list[int]) -> int:
    """fanout_fanin_dag, the reduce side."""
    return sum(values)


def nap(seconds: float, i: int = 0) -> int:
    """sleep_fanout: hold a slot for `seconds`; returns `i`."""
    time.sleep(seconds)
    return i
