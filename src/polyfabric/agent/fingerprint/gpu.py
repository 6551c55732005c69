"""NVIDIA GPUs through NVML (the `pynvml` module of nvidia-ml-py): what is there and how busy.

A machine without the NVIDIA driver, or a container without the library, simply has no GPUs:
nothing here raises. `detect_gpus` is for the fingerprint (once at start); `sample_gpus` is for
telemetry (every heartbeat) and so keeps NVML initialized between calls, since initializing it
can take tens of milliseconds, and remembers a failure for a while instead of retrying each time.
MIG instances are not listed separately: a MIG-enabled GPU counts as one GPU.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from polyfabric.domain.resources import Gpu

__all__ = ["NvmlSession", "detect_gpus", "sample_gpus"]

_RETRY_AFTER_S = 300.0


def _nvml() -> Any:
    """The pynvml module, or None when nvidia-ml-py is not installed."""
    try:
        import pynvml
    except Exception:
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _optional(call: Any, *args: Any) -> Any:
    """The result of an NVML query, or None when this GPU does not support it."""
    try:
        return call(*args)
    except Exception:
        return None


def detect_gpus() -> list[Gpu]:
    """The GPUs NVML reports, in NVML index order; [] when NVML is absent or fails."""
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        nvml.nvmlInit()
    except Exception:
        return []
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = _optional(nvml.nvmlDeviceGetMemoryInfo, handle)
            gpus.append(
                Gpu(
                    model=_text(_optional(nvml.nvmlDeviceGetName, handle) or "unknown"),
                    memory_bytes=int(memory.total) if memory is not None else 0,
                    uuid=_text(_optional(nvml.nvmlDeviceGetUUID, handle) or ""),
                    index=index,
                )
            )
        return gpus
    except Exception:
        return []
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


class NvmlSession:
    """NVML kept initialized for repeated sampling; thread-safe; never raises."""

    def __init__(self, retry_after_s: float = _RETRY_AFTER_S) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._failed_at: float | None = None
        self._retry_after_s = retry_after_s

    def _ensure(self) -> bool:
        if self._nvml is not None:
            return True
        now = time.monotonic()
        if self._failed_at is not None and now - self._failed_at < self._retry_after_s:
            return False
        nvml = _nvml()
        try:
            if nvml is None:
                raise RuntimeError("nvidia-ml-py is not installed")
            nvml.nvmlInit()
            try:
                self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
            except Exception:
                nvml.nvmlShutdown()
                raise
        except Exception:
            self._failed_at = now
            return False
        self._nvml, self._failed_at = nvml, None
        return True

    def sample(self) -> list[dict[str, Any]]:
        """Per GPU: index, util_percent, memory_used_bytes, memory_total_bytes, temperature_c.

        A value the GPU cannot report is None; [] without NVML.
        """
        with self._lock:
            if not self._ensure():
                return []
            nvml = self._nvml
            samples = []
            for index, handle in enumerate(self._handles):
                util = _optional(nvml.nvmlDeviceGetUtilizationRates, handle)
                memory = _optional(nvml.nvmlDeviceGetMemoryInfo, handle)
                temperature = _optional(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
                samples.append(
                    {
                        "index": index,
                        "util_percent": float(util.gpu) if util is not None else None,
                        "memory_used_bytes": int(memory.used) if memory is not None else None,
                        "memory_total_bytes": int(memory.total) if memory is not None else None,
                        "temperature_c": float(temperature) if temperature is not None else None,
                    }
                )
            return samples

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                with contextlib.suppress(Exception):
                    self._nvml.nvmlShutdown()
            self._nvml, self._handles, self._failed_at = None, [], None


_SESSION = NvmlSession()


def sample_gpus() -> list[dict[str, Any]]:
    """Utilization, memory and temperature of each GPU, through a process-wide NVML session."""
    return _SESSION.sample()
