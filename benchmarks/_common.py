"""What every benchmark shares: the machine it ran on, statistics, a table and one JSON line.

Every benchmark prints its figures twice: as a table for people and as one line of JSON (starting
with `{"benchmark": ...`) for tools, and both say which machine produced them. The machine is
small and noisy, so a figure is the median of a few runs (`--repeat`); the JSON keeps every run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ProcessSampler",
    "describe_machine",
    "emit_json",
    "log",
    "machine",
    "median",
    "median_of_runs",
    "percentile",
    "pin_to_cpus",
    "print_table",
    "repo_root",
]


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# the machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))} (Linux {platform.release()})"
    return platform.platform()


def _git_commit() -> str | None:
    """The commit the code came from, and whether the tree had local changes (read-only git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo_root(), capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_root(),
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+local changes" if dirty else "")


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model, Python and OS: enough to know whether two figures compare."""
    import psutil

    from polyfabric import __version__

    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": _cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": _os_name(),
        "polyfabric": __version__,
        "commit": _git_commit(),
    }


def describe_machine(info: Mapping[str, Any]) -> str:
    return (f"{info['cores']} cores ({info['cpu_model']}), {info['memory_gib']} GiB, {info['python']}, "
            f"{info['os']}, polyfabric {info['polyfabric']}"
            + (f" @ {info['commit']}" if info.get("commit") else ""))


def pin_to_cpus(cpus: Iterable[int] | None, pid: int = 0) -> list[int] | None:
    """Restrict a process (0: this one) to the given CPUs, where the OS allows it."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        return None
    wanted = sorted(set(cpus) & os.sched_getaffinity(0)) or None
    if wanted:
        os.sched_setaffinity(pid, wanted)
    return wanted


# --------------------------------------------------------------------------------------------
# statistics


def median(values: Iterable[float | None]) -> float | None:
    clean = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(clean) if clean else None


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100) of already sorted values, nearest rank; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def median_of_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per key: the median of the numbers over the runs; other values from the last run.

    Integers stay integers where the median is whole (counts such as errors or false Downs).
    """
    out: dict[str, Any] = {}
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run if k not in keys)
    for key in keys:
        values = [run.get(key) for run in runs]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers and len(numbers) == len([v for v in values if v is not None]):
            m = median(numbers)
            out[key] = int(m) if m is not None and all(isinstance(v, int) for v in numbers) and m == int(m) else m
        else:
            out[key] = values[-1]
    return out


# --------------------------------------------------------------------------------------------
# a process's CPU and memory, sampled


class ProcessSampler:
    """CPU % (of one core) and RSS of a process, sampled on a thread; peak RSS kept throughout.

    `mark()` starts a measured window: `window_cpu_percent()` is the CPU time the process used
    since the mark, over the wall time since the mark.
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self.peak_rss = 0
        self.last_rss = 0
        self._mark: tuple[float, float] | None = None
        self._window_peak_rss = 0

    def _cpu(self) -> float:
        times = self._proc.cpu_times()
        return times.user + times.system

    def _sample(self) -> None:
        import psutil

        try:
            rss = self._proc.memory_info().rss
        except psutil.Error:
            return
        self.last_rss = rss
        self.peak_rss = max(self.peak_rss, rss)
        self._window_peak_rss = max(self._window_peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def start(self) -> ProcessSampler:
        self._sample()
        self._thread.start()
        return self

    def mark(self) -> None:
        self._mark = (time.monotonic(), self._cpu())
        self._window_peak_rss = self.last_rss

    def window_cpu_percent(self) -> float | None:
        if self._mark is None:
            return None
        wall = time.monotonic() - self._mark[0]
        return 100.0 * (self._cpu() - self._mark[1]) / wall if wall > 0 else None

    @property
    def window_peak_rss(self) -> int:
        return self._window_peak_rss

    def stop(self) -> None:
        self._sample()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)


# --------------------------------------------------------------------------------------------
# output


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"
    return str(value)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
                title: str | None = None, file: Any = None) -> None:
    """A plain-text table: `columns` are (key, header) pairs."""
    file = file or sys.stdout
    cells = [[_fmt(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(header), *(len(c[i]) for c in cells)) if cells else len(header)
              for i, (_, header) in enumerate(columns)]
    if title:
        print(f"\n{title}", file=file)
    print("  ".join(h.rjust(w) for (_, h), w in zip(columns, widths, strict=True)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)), file=file)
    file.flush()


def emit_json(benchmark: str, payload: Mapping[str, Any], file: Any = None) -> str:
    """One line of JSON with every figure: {"benchmark": NAME, "machine": {...}, ...}."""
    line = json.dumps({"benchmark": benchmark, **payload}, default=_json_default, sort_keys=False)
    print(line, file=file or sys.stdout, flush=True)
    return line


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"cannot serialize {type(value).__name__}")


def log(message: str) -> None:
    """Progress for people, on stderr (stdout carries the table and the JSON line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

