"""One settings object for the agent process (the CLI's `polyfabric agent` options end up here)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AgentSettings"]


@dataclass
class AgentSettings:
    coordinator: str
    data_dir: Path
    join_token: str | None = None
    name: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    labels: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)
    health_script: Path | None = None
    health_interval_s: float = 10.0
    health_timeout_s: float = 10.0
    heartbeat_interval_s: float | None = None  # None: what the coordinator asks for
    # Running tasks (the slot count is overrides["slots"], applied by the fingerprint).
    pythonpath: list[Path] = field(default_factory=list)  # where function tasks are imported from, first
    kill_grace_s: float = 5.0  # SIGTERM -> SIGKILL of a task's process group (timeout, cancel, shutdown)
    stop_grace_s: float = 5.0  # on SIGTERM, how long running tasks may go on before they are stopped
    lease_wait_s: float = 10.0  # long-poll wait of POST /v1/agent/lease
    report_flush_s: float = 5.0  # on SIGTERM, how long to keep trying to deliver pending reports
