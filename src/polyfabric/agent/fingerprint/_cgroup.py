"""Limits of the control groups (v2) the agent runs in, so a container reports what it may use.

A process in a container or a systemd slice with a CPU quota or a memory limit sees the whole
machine through /proc; the cgroup files say how much of it is really available. Every ancestor
group counts, so the limit is the smallest one on the way from the agent's group to the root.
Nothing here raises: no cgroup v2, or a file that cannot be read, means no limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

__all__ = ["CGROUP_ROOT", "cpu_limit_millis", "memory_limit_bytes"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_limit_millis(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """The tightest `cpu.max` quota as millicores, None when unlimited or unknown."""
    limits = []
    for directory in _group_dirs(root, proc_cgroup):
        text = _read(directory / "cpu.max")
        if not text:
            continue
        parts = text.split()
        if len(parts) == 2 and parts[0] != "max" and parts[0].isdigit() and parts[1].isdigit():
            period = int(parts[1])
            if period > 0:
                limits.append(max(1, int(parts[0]) * 1000 // period))
    return min(limits) if limits else None


def memory_limit_bytes(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """The tightest `memory.max`, None when unlimited or unknown."""
    limits = []
    for directory in _group_dirs(root, proc_cgroup):
        text = _read(directory / "memory.max")
        if text and text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


def _group_dirs(root: Path, proc_cgroup: Path) -> Iterator[Path]:
    """The agent's cgroup v2 directory and its ancestors up to `root`."""
    relative = ""
    for line in (_read(proc_cgroup) or "").splitlines():
        if line.startswith("0::"):
            relative = line[3:].strip()
            break
    parts = [part for part in relative.split("/") if part and part != ".."]
    for depth in range(len(parts), -1, -1):
        yield root.joinpath(*parts[:depth])


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None
