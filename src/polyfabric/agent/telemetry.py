"""How busy the node is right now, sampled for every heartbeat.

Cheap on purpose (well under 2 ms): non-blocking psutil counters, one statvfs, the load average
and, when present, NVML through a session that stays open between samples. The coordinator shows
these numbers and may use them to steer work away from loaded nodes; it never trusts them for
accounting (capacity and allocations are what the scheduler counts).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import psutil

from polyfabric.agent.fingerprint.gpu import sample_gpus

__all__ = ["sample"]


def sample(data_dir: Path) -> dict[str, Any]:
    """cpu_percent, memory_percent, memory_used_bytes, disk_percent, disk_free_bytes,
    load1/load5/load15, processes and gpus ([{index, util_percent, memory_used_bytes,
    memory_total_bytes, temperature_c}], [] without NVML).

    cpu_percent is the CPU use since the previous call (psutil, interval=None): the first
    sample of a process reads 0.0. Values that cannot be read are None.
    """
    memory = psutil.virtual_memory()
    disk_percent: float | None = None
    disk_free: int | None = None
    try:
        disk = shutil.disk_usage(data_dir)
        disk_percent = round(100.0 * (disk.total - disk.free) / disk.total, 1) if disk.total else 0.0
        disk_free = int(disk.free)
    except OSError:
        pass
    try:
        load1, load5, load15 = os.getloadavg()
    except (OSError, AttributeError):
        load1 = load5 = load15 = None  # type: ignore[assignment]
    try:
        processes: int | None = len(psutil.pids())
    except Exception:
        processes = None
    return {
        "cpu_percent": float(psutil.cpu_percent(interval=None)),
        "memory_percent": float(memory.percent),
        "memory_used_bytes": int(memory.total - memory.available),
        "disk_percent": disk_percent,
        "disk_free_bytes": disk_free,
        "load1": load1,
        "load5": load5,
        "load15": load15,
        "processes": processes,
        "gpus": sample_gpus(),
    }
