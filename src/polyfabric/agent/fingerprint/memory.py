"""Memory capacity: physical memory in bytes, capped by a cgroup memory limit when one is set."""

from __future__ import annotations

from pathlib import Path

import psutil

from polyfabric.agent.fingerprint import _cgroup

__all__ = ["total_bytes"]


def total_bytes(cgroup_root: Path = _cgroup.CGROUP_ROOT) -> int:
    """Bytes of memory this agent's tasks can use."""
    total = int(psutil.virtual_memory().total)
    limit = _cgroup.memory_limit_bytes(cgroup_root)
    return min(total, limit) if limit is not None else total
