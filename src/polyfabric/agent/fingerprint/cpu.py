"""CPU capacity: the logical cores this agent may run on, as millicores.

Counts the cores in the process's affinity mask (what `taskset` or a cpuset allows), not every
core of the machine, and lowers that to a cgroup CPU quota when one is set.
"""

from __future__ import annotations

import os
from pathlib import Path

from polyfabric.agent.fingerprint import _cgroup

__all__ = ["cpu_millis", "logical_cores"]


def logical_cores() -> int:
    """Logical cores available to this process (at least 1)."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def cpu_millis(cgroup_root: Path = _cgroup.CGROUP_ROOT) -> int:
    """Millicores this agent can use: 1000 per logical core, capped by a cgroup quota."""
    millis = logical_cores() * 1000
    limit = _cgroup.cpu_limit_millis(cgroup_root)
    return min(millis, limit) if limit is not None else millis
