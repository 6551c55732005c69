"""One settings object for the agent process."""

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
