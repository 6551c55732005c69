"""Agent-side garbage collection of the work root (`DATA_DIR/work/`).

The task runner removes each attempt's workspace as soon as the coordinator has acknowledged the
attempt's final report (`runner/task_runner.py`, `runner/workspace.py`: leftover processes of the
attempt's process group are killed first). This loop catches what that misses, and acts early
when the disk fills:

- a directory in the work root that belongs to no attempt the runner holds (a removal that
  failed, a crash between report and removal) is removed once older than `orphan_age_s`, after
  killing any process still running in it (found by POLYFABRIC_WORKSPACE in its environment);
- under disk pressure (the filesystem of the work root at least `disk_pressure_percent` full, the
  threshold of the DiskPressure condition) orphans go at once, and attempts that finished but
  whose report is not acknowledged yet lose everything but their result file (kept: a lost
  report is sent again with it). Running attempts are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from polyfabric.agent.runner.workspace import RESULT_FILE, remove_tree

__all__ = ["AgentGC", "GcSettings", "disk_percent"]

log = logging.getLogger("polyfabric.agent.gc")


@dataclass(frozen=True, slots=True)
class GcSettings:
    interval_s: float = 60.0
    orphan_age_s: float = 600.0
    disk_pressure_percent: float = 90.0

    @classmethod
    def from_env(cls) -> GcSettings:
        """POLYFABRIC_AGENT_GC_INTERVAL_S, POLYFABRIC_AGENT_ORPHAN_AGE_S, POLYFABRIC_AGENT_DISK_PRESSURE_PERCENT."""
        env = os.environ
        try:
            return cls(interval_s=float(env.get("POLYFABRIC_AGENT_GC_INTERVAL_S", "60")),
                       orphan_age_s=float(env.get("POLYFABRIC_AGENT_ORPHAN_AGE_S", "600")),
                       disk_pressure_percent=float(env.get("POLYFABRIC_AGENT_DISK_PRESSURE_PERCENT", "90")))
        except ValueError as exc:
            log.warning("agent gc settings in the environment are not numbers (%s); using the defaults", exc)
            return cls()


def disk_percent(path: Path) -> float:
    usage = shutil.disk_usage(path)
    return 100.0 * usage.used / usage.total if usage.total else 0.0


class AgentGC:
    """`held()` names the runner's workspaces: path -> "running" or "finished" (report not acknowledged)."""

    def __init__(self, work_root: Path, held: Callable[[], dict[Path, str]], settings: GcSettings | None = None,
                 *, usage: Callable[[Path], float] = disk_percent, clock: Callable[[], float] = time.time) -> None:
        self.work_root = work_root
        self._held = held
        self.settings = settings or GcSettings.from_env()
        self._usage = usage
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.removed = 0
        self.trimmed = 0

    def start(self) -> AgentGC:
        self._thread = threading.Thread(target=self._loop, name="pf-agent-gc", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.interval_s):
            try:
                self.run_once()
            except Exception:
                log.exception("agent gc pass failed")

    def under_pressure(self) -> bool:
        try:
            return self._usage(self.work_root) >= self.settings.disk_pressure_percent
        except OSError:
            return False

    def run_once(self) -> dict[str, int]:
        """One pass: remove orphans (old ones; all of them under disk pressure), and under pressure
        trim finished attempts to their result file. Counts of what it did."""
        if not self.work_root.is_dir():
            return {"removed": 0, "trimmed": 0}
        pressure = self.under_pressure()
        held = {p.resolve(): state for p, state in self._held().items()}
        now = self._clock()
        removed = trimmed = 0
        for entry in list(self.work_root.iterdir()):
            if not entry.is_dir() or entry.is_symlink():
                continue
            state = held.get(entry.resolve())
            if state == "running":
                continue
            if state is not None:  # finished, report not acknowledged yet
                if pressure:
                    trimmed += self._trim(entry)
                continue
            try:
                age = now - entry.stat().st_mtime
            except FileNotFoundError:
                continue
            if pressure or age >= self.settings.orphan_age_s:
                _kill_inside(entry)
                remove_tree(entry)
                removed += 1
                log.info("agent gc: removed workspace %s (%s)", entry.name,
                         "disk pressure" if pressure else f"orphaned {age:.0f}s")
        self.removed += removed
        self.trimmed += trimmed
        return {"removed": removed, "trimmed": trimmed}

    @staticmethod
    def _trim(workspace: Path) -> int:
        """Everything but the result file (what the unacknowledged report may need again)."""
        freed = 0
        for child in list(workspace.iterdir()):
            if child.name == RESULT_FILE:
                continue
            if child.is_dir() and not child.is_symlink():
                remove_tree(child)
            else:
                with contextlib.suppress(FileNotFoundError):
                    child.unlink()
            freed += 1
        if freed:
            log.info("agent gc: trimmed %s to its result file (disk pressure)", workspace.name)
        return 1 if freed else 0


def _kill_inside(workspace: Path) -> int:
    """Kill processes whose environment names this workspace (what an attempt left running)."""
    marker = str(workspace)
    me = os.getpid()
    killed = 0
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get("POLYFABRIC_WORKSPACE", "") == marker:
                proc.kill()
                killed += 1
                log.warning("agent gc: killed process %d left running in %s", proc.pid, workspace)
        except (psutil.Error, OSError):
            continue
    return killed
