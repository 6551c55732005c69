"""One settings object for the coordinator (no constructors with a dozen arguments)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from polyfabric.coordinator.gc_settings import DEFAULT_GC_THRESHOLD
from polyfabric.domain.conditions import DetectorSettings
from polyfabric.domain.quarantine import QuarantinePolicy

__all__ = ["CoordinatorSettings"]


@dataclass
class CoordinatorSettings:
    db_url: str
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 7340
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    quarantine: QuarantinePolicy = field(default_factory=QuarantinePolicy)
    liveness_flush_s: float = 1.0
    audit_sign_s: float = 5.0
    body_limit: int = 1 << 20
    log_level: str = "info"
    # Several coordinators on one PostgreSQL: the URL the others send clients and agents to when
    # this one leads (default: http://HOST:PORT of --listen), and the leader lease's lifetime.
    advertise_url: str | None = None
    lease_ttl_s: float = 5.0
    # Checkpoints (services/checkpoints.py): where their bytes are kept (default DATA_DIR/checkpoints),
    # and how long a drained node's running task may take to checkpoint before it is moved anyway.
    checkpoint_dir: Path | None = None
    drain_checkpoint_grace_s: float = 10.0
    # Observability (docs/observability.md): /metrics without a token (opt-in), the telemetry history's
    # raw interval, and fair share between domains (off by default) over this much ledger history.
    metrics_public: bool = False
    telemetry_interval_s: float = 10.0
    fair_share: bool = False
    fair_share_window_s: float = 7 * 86400.0
    # Negotiation (docs/policy.md): an offer unanswered this long counts as a decline.
    offer_timeout_s: float = 30.0
    # The young generation's GC threshold for this process (coordinator/gc_settings.py; 0: CPython's).
    gc_threshold: int = DEFAULT_GC_THRESHOLD

    @property
    def advertise(self) -> str:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def key_path(self) -> Path:
        return self.data_dir / "coordinator.key"
