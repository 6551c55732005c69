"""Agent GC of the work root: orphans go when old (at once under disk pressure, with the processes
left running in them), finished-but-unacknowledged attempts are trimmed to their result file
under pressure, and running attempts are never touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from polyfabric.agent.gc import AgentGC, GcSettings
from polyfabric.testing import wait_until


def _workspace(root: Path, name: str, *, result: bool = False) -> Path:
    path = root / name
    (path / "tmp").mkdir(parents=True)
    (path / "tmp" / "big.bin").write_bytes(b"x" * 1024)
    if result:
        (path / "result.json").write_text('{"ok": true}')
    return path


def test_orphans_wait_for_their_age_unless_the_disk_is_under_pressure(tmp_path: Path):
    root = tmp_path / "work"
    running = _workspace(root, "t-run-1")
    finished = _workspace(root, "t-done-1", result=True)
    orphan = _workspace(root, "t-orphan-1")
    usage = {"percent": 10.0}
    now = {"t": os.stat(orphan).st_mtime + 5}
    gc = AgentGC(root, lambda: {running: "running", finished: "finished"},
                 GcSettings(interval_s=60, orphan_age_s=600, disk_pressure_percent=90),
                 usage=lambda _p: usage["percent"], clock=lambda: now["t"])
    assert gc.run_once() == {"removed": 0, "trimmed": 0}  # young orphan, no pressure
    now["t"] += 600
    assert gc.run_once() == {"removed": 1, "trimmed": 0}
    assert not orphan.exists() and running.exists() and (finished / "tmp" / "big.bin").exists()
    _workspace(root, "t-orphan-2")
    usage["percent"] = 95.0
    assert gc.run_once() == {"removed": 1, "trimmed": 1}
    assert not (root / "t-orphan-2").exists()
    assert sorted(p.name for p in finished.iterdir()) == ["result.json"]  # the report may be sent again
    assert (running / "tmp" / "big.bin").exists()  # never a running attempt's


def test_a_process_left_running_in_an_orphan_is_killed(tmp_path: Path):
    root = tmp_path / "work"
    orphan = _workspace(root, "t-orphan-1")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                            env={**os.environ, "POLYFABRIC_WORKSPACE": str(orphan)}, start_new_session=True)
    try:
        gc = AgentGC(root, dict, GcSettings(disk_pressure_percent=0.0))
        assert gc.run_once()["removed"] == 1
        wait_until(lambda: proc.poll() is not None, timeout=10, message="the leftover process to die")
        assert not orphan.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
