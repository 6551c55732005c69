"""The `local` provider: agent processes on the coordinator's own machine.

Each member runs `python -m polyfabric agent` in a session of its own (so it outlives a
coordinator restart and a stop reaches its whole process group), with its data dir and log under
the coordinator's data dir: `pools/<pool>/<member>/`. The join token travels in the environment,
never on a command line another user could read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from polyfabric.services.pools import AgentLaunch

__all__ = ["LocalProvider"]


class LocalProvider:
    name = "local"

    def __init__(self, data_dir: Path) -> None:
        self._base = data_dir / "pools"
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, launch: AgentLaunch) -> dict[str, Any]:
        member_dir = self._base / launch.pool / launch.member_id
        member_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        command = [sys.executable, "-m", "polyfabric", "agent", *launch.agent_args(member_dir / "agent")]
        env = {**os.environ, "POLYFABRIC_JOIN_TOKEN": launch.join_token}
        env.pop("POLYFABRIC_URL", None)
        with open(member_dir / "agent.log", "ab") as log:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True, close_fds=True)
        self._children[proc.pid] = proc
        return {"pid": proc.pid, "dir": str(member_dir), "marker": launch.member_id}

    def stop(self, handle: dict[str, Any], grace_s: float = 5.0, config: dict[str, Any] | None = None) -> None:
        pid = int(handle.get("pid") or 0)
        if pid <= 0 or not self._is_ours(pid, str(handle.get("marker", ""))):
            self._reap(pid)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self._running(pid):
            time.sleep(0.05)
        if self._running(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self._reap(pid)

    def alive(self, handle: dict[str, Any]) -> bool:
        pid = int(handle.get("pid") or 0)
        return pid > 0 and self._running(pid) and self._is_ours(pid, str(handle.get("marker", "")))

    @staticmethod
    def _is_ours(pid: int, marker: str) -> bool:
        """The pid still runs the member's agent (not a recycled pid of another program)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return bool(marker) and marker.encode() in cmdline

    def _running(self, pid: int) -> bool:
        proc = self._children.get(pid)
        if proc is not None:
            return proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[-1].startswith("Z") \
            if Path(f"/proc/{pid}/stat").exists() else False

    def _reap(self, pid: int) -> None:
        proc = self._children.pop(pid, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
