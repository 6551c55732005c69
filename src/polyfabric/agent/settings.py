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
    metrics_port: int | None = None  # serve this agent's Prometheus metrics there (off by default)
    metrics_addr: str = "127.0.0.1"
    policy_file: Path | None = None  # the owner's policy (issue 6): which offers this node accepts
    # Topology (issue 7, agent/probes.py): the echo endpoint peers probe (off by default), the
    # address advertised for it, and how often this agent probes a peer.
    echo_listen: str | None = None  # HOST:PORT
    echo_advertise: str | None = None  # default: the listen address (its host must be reachable)
    probe_interval_s: float = 5.0
