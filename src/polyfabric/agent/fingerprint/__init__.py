"""What this machine offers, detected at agent start and sent when the node registers.

One module per detector (cpu, memory, disk, gpu, network); `detect` combines them and applies the
owner's overrides, since the owner decides how much of the machine the fabric gets: less CPU or
memory than the machine has, no GPUs, a number of task slots.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from polyfabric.agent.fingerprint.cpu import cpu_millis
from polyfabric.agent.fingerprint.disk import disk_space
from polyfabric.agent.fingerprint.gpu import detect_gpus
from polyfabric.agent.fingerprint.memory import total_bytes
from polyfabric.agent.fingerprint.network import detect_network
from polyfabric.domain.errors import ValidationError
from polyfabric.domain.resources import Resources, parse_bytes, parse_cpu

__all__ = ["OVERRIDE_KEYS", "detect", "detect_platform"]

OVERRIDE_KEYS = frozenset({"cpu", "memory", "disk", "gpus", "slots"})


def detect(data_dir: Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{"capacity": Resources.to_dict(), "network": {...}, "platform": {"os", "arch", "python"}}.

    `overrides` (values None are ignored) may set cpu ("2", "500m"), memory ("4Gi"), disk
    ("100G"), gpus (a count; 0 disables GPUs and NVML is not even opened; more than detected is
    taken on the owner's word) and slots (concurrent tasks; default: whole cores of the final
    CPU, at least 1). ValidationError for an unknown key or a malformed value.
    """
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(given) - OVERRIDE_KEYS)
    if unknown:
        raise ValidationError(
            f"unknown resource override(s) {', '.join(unknown)} (known: {', '.join(sorted(OVERRIDE_KEYS))})"
        )

    cpu = parse_cpu(given["cpu"]) if "cpu" in given else cpu_millis()
    memory = parse_bytes(given["memory"]) if "memory" in given else total_bytes()
    disk = parse_bytes(given["disk"]) if "disk" in given else disk_space(data_dir).total_bytes
    if "gpus" in given:
        gpu_count = _count(given["gpus"], "gpus")
        models = tuple(detect_gpus()[:gpu_count]) if gpu_count else ()
    else:
        models = tuple(detect_gpus())
        gpu_count = len(models)
    slots = _count(given["slots"], "slots") if "slots" in given else max(1, cpu // 1000)

    capacity = Resources(
        cpu_millis=cpu,
        memory_bytes=memory,
        disk_bytes=disk,
        gpus=gpu_count,
        slots=slots,
        gpu_models=models,
    )
    return {"capacity": capacity.to_dict(), "network": detect_network(), "platform": detect_platform()}


def detect_platform() -> dict[str, str]:
    """{"os": "linux", "arch": "x86_64", "python": "3.11.7"}."""
    return {
        "os": platform.system().lower(),
        "arch": platform.machine().lower(),
        "python": platform.python_version(),
    }


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValidationError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or value < 0:
        raise ValidationError(f"{name} must be a whole number >= 0, got {value!r}")
    return value
