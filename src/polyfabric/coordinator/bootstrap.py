"""Wires store, services, controllers and the API for one coordinator process.

On SQLite the coordinator always leads; on PostgreSQL it joins the election and runs the
controllers only while it leads (`coordinator/role.py`, `services/leadership.py`).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fastapi import FastAPI

from polyfabric.api.app import create_app
from polyfabric.controllers.audit_signer import AuditHeadSigner
from polyfabric.controllers.autoscaler import AutoscalerController
from polyfabric.controllers.gc import GcController
from polyfabric.controllers.liveness_flush import LivenessFlusher
from polyfabric.controllers.node_health import NodeHealthController
from polyfabric.controllers.node_lifecycle import NodeLifecycleController
from polyfabric.controllers.observability import ObservabilityController
from polyfabric.controllers.policy_remediation import PolicyRemediationController
from polyfabric.controllers.runtime import Controller, LoopRunner
from polyfabric.controllers.scheduler import SchedulerController
from polyfabric.controllers.schedules import ScheduleController
from polyfabric.controllers.topology_flush import TopologyFlusher
from polyfabric.coordinator.role import CoordinatorRole, exclusive_lock
from polyfabric.coordinator.settings import CoordinatorSettings
from polyfabric.domain.drain import MoveMode
from polyfabric.providers.local import LocalProvider
from polyfabric.providers.ssh import SshProvider
from polyfabric.security.keys import b64e, generate_private_key, load_private_key, public_key_raw, save_private_key
from polyfabric.security.signing import sign_bytes
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.leadership import Leadership
from polyfabric.store import migrate
from polyfabric.store.engine import is_sqlite
from polyfabric.store.unit_of_work import SqlStore

__all__ = ["Coordinator", "SystemClock", "UuidIds", "build"]


class SystemClock:
    def now(self) -> float:
        return time.time()


class UuidIds:
    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:16]}"


class CoordinatorSigner:
    """The coordinator's own Ed25519 key, kept in its data dir (0600)."""

    def __init__(self, path: Path) -> None:
        if path.exists():
            self._key = load_private_key(path)
        else:
            self._key = generate_private_key()
            save_private_key(path, self._key)
        raw = public_key_raw(self._key)
        self.public_key_b64 = b64e(raw)
        from polyfabric.domain.ids import node_id_from_public_key

        self.key_id = "c-" + node_id_from_public_key(raw)[2:]

    def sign(self, data: bytes) -> bytes:
        return sign_bytes(self._key, data)


@dataclass
class Coordinator:
    settings: CoordinatorSettings
    store: SqlStore
    services: Services
    app: FastAPI
    role: CoordinatorRole
    admin_token_created: bool
    locks: list[IO[str]] = field(default_factory=list)

    def start(self) -> None:
        """Run the controllers (SQLite), or join the election (PostgreSQL)."""
        self.role.start()

    def stop(self) -> None:
        """Stop the controllers (with their final pass) and, if leading, release the lease."""
        self.role.stop()

    def close(self) -> None:
        self.store.close()
        for lock in self.locks:
            lock.close()
        self.locks.clear()


def build(settings: CoordinatorSettings) -> Coordinator:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    locks = [exclusive_lock(settings.data_dir / "coordinator.lock", f"the data dir {settings.data_dir}")]
    signer = CoordinatorSigner(settings.key_path)
    store = SqlStore(settings.db_url, owner=signer.key_id)
    solo = is_sqlite(store.engine)
    if solo:
        try:
            locks.append(exclusive_lock(_sqlite_lock_path(store.url), "this SQLite database"))
        except BaseException:
            locks[0].close()
            store.close()
            raise
    migrate.upgrade(store.engine)
    clock = SystemClock()
    leadership = Leadership.single(settings.advertise) if solo else Leadership(
        store, clock, holder=signer.key_id, url=settings.advertise, ttl=settings.lease_ttl_s)
    ctx = ServiceContext(store=store, clock=clock, ids=UuidIds(), signer=signer, detector=settings.detector,
                         leadership=leadership)
    services = Services.build(ctx)
    _configure_triggers(services)
    if services.checkpoints is not None:
        services.checkpoints.directory = settings.checkpoint_dir or settings.data_dir / "checkpoints"
    if services.artifacts is not None:  # the checkpoint directory's sibling (shared alike)
        services.artifacts.directory = (settings.checkpoint_dir.parent / "artifacts" if settings.checkpoint_dir
                                        else settings.data_dir / "artifacts")
    if services.secrets is not None:
        services.secrets.configure(settings.data_dir / "secrets.key")
    _configure_observability(services, settings)
    services.runtime.offer_timeout_s = settings.offer_timeout_s  # issue 6: an unanswered offer is a decline
    if services.pools is not None:  # issue 7: elastic node pools
        services.pools.providers = {"local": LocalProvider(settings.data_dir), "ssh": SshProvider()}
        services.pools.coordinator_urls = (settings.advertise,)
    services.audit.register_key()
    issued = services.tokens.bootstrap_admin()
    if issued is not None:
        _write_secret(settings.admin_token_path, issued.token)
    services.nodes.load_liveness()
    if solo:
        services.runtime.load()  # elected: rebuilt from the store whenever this coordinator becomes leader

    def controllers() -> list[Controller]:  # a fresh set for each term as leader
        return [
            NodeHealthController(ctx, services.nodes, on_down=services.runtime.node_lost),
            SchedulerController(services.runtime),
            NodeLifecycleController(ctx, services.nodes, services.runtime, settings.quarantine,
                                    move_mode=MoveMode.STOP_AFTER_CHECKPOINT if settings.drain_checkpoint_grace_s > 0
                                    else MoveMode.REQUEUE, checkpoint_grace_s=settings.drain_checkpoint_grace_s),
            PolicyRemediationController(ctx, services.nodes, services.runtime),  # issue 6: cordon / quarantine
            LivenessFlusher(services.nodes, settings.liveness_flush_s),
            TopologyFlusher(services.topology, settings.liveness_flush_s),  # issue 7
            AuditHeadSigner(services.audit, settings.audit_sign_s),
            *([AutoscalerController(services.pools)] if services.pools is not None else []),  # issue 7
            *_trigger_controllers(services),  # issue 7: cron schedules, garbage collection
            ObservabilityController(services.telemetry_history, services.ledger, services.runtime),  # type: ignore[arg-type]
        ]

    app = create_app(services, body_limit=settings.body_limit)
    app.state.metrics_public = settings.metrics_public  # GET /metrics without a token (api/routes/metrics.py)
    role = CoordinatorRole(services, controllers, app.state.notifier, LoopRunner(controllers()) if solo else None)
    return Coordinator(settings, store, services, app, role, issued is not None, locks)


def _sqlite_lock_path(url: str) -> Path:
    """Next to the database file, whatever data dir each coordinator has."""
    path = Path(url.split(":///", 1)[1])
    return path.with_name(path.name + ".coordinator-lock")


def _write_secret(path: Path, value: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _configure_triggers(services: Services) -> None:
    """Schedule and GC settings from the environment (issue 7; documented in docs/triggers.md and
    docs/operations.md): POLYFABRIC_SCHEDULE_TICK_S, POLYFABRIC_SCHEDULE_GRACE_S,
    POLYFABRIC_JOB_TTL (a duration or 'never'), POLYFABRIC_GC_INTERVAL_S."""
    from polyfabric.domain.jobs import parse_duration

    assert services.schedules is not None and services.gc is not None
    services.schedules.grace_s = float(os.environ.get("POLYFABRIC_SCHEDULE_GRACE_S", "30"))
    ttl = os.environ.get("POLYFABRIC_JOB_TTL", "7d").strip()
    services.gc.default_ttl_s = float("inf") if ttl.lower() in ("never", "forever") else parse_duration(ttl)
    from polyfabric.services.gc import checkpoint_files

    checkpoints = services.checkpoints
    services.gc.collectors.append(checkpoint_files(lambda: checkpoints.directory if checkpoints else None))
    from polyfabric.services.artifacts import gc_collector

    artifacts = services.artifacts
    services.gc.collectors.append(gc_collector(lambda: artifacts.directory if artifacts else None))


def _trigger_controllers(services: Services) -> list[Controller]:
    assert services.schedules is not None and services.gc is not None
    return [ScheduleController(services.schedules, float(os.environ.get("POLYFABRIC_SCHEDULE_TICK_S", "1"))),
            GcController(services.gc, float(os.environ.get("POLYFABRIC_GC_INTERVAL_S", "300")))]


def _configure_observability(services: Services, settings: CoordinatorSettings) -> None:
    """Telemetry history interval and fair share (docs/observability.md)."""
    from polyfabric.scheduling.fairshare import FairShare

    assert services.telemetry_history is not None and services.ledger is not None
    services.telemetry_history.configure(settings.telemetry_interval_s)
    services.ledger.balance_window_s = settings.fair_share_window_s
    services.runtime.fair_share = FairShare(enabled=settings.fair_share)
