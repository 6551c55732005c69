"""One settings object for the coordinator (no constructors with a dozen arguments)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from polyfabric.domain.conditions import DetectorSettings

__all__ = ["CoordinatorSettings"]


@dataclass
class CoordinatorSettings:
    db_url: str
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 7340
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    liveness_flush_s: float = 1.0
    audit_sign_s: float = 5.0
    body_limit: int = 1 << 20
    log_level: str = "info"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def key_path(self) -> Path:
        return self.data_dir / "coordinator.key"
