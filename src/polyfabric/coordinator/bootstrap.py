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
from polyfabric.controllers.liveness_flush import LivenessFlusher
from polyfabric.controllers.node_health import NodeHealthController
from polyfabric.controllers.node_lifecycle import NodeLifecycleController
from polyfabric.controllers.runtime import Controller, LoopRunner
from polyfabric.controllers.scheduler import SchedulerController
from polyfabric.coordinator.role import CoordinatorRole, exclusive_lock
from polyfabric.coordinator.settings import CoordinatorSettings
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
    store = SqlStore(settings.db_url)
    solo = is_sqlite(store.engine)
    if solo:
        try:
            locks.append(exclusive_lock(_sqlite_lock_path(store.url), "this SQLite database"))
        except BaseException:
            locks[0].close()
            store.close()
            raise
    migrate.upgrade(store.engine)
    clock, signer = SystemClock(), CoordinatorSigner(settings.key_path)
    leadership = Leadership.single(settings.advertise) if solo else Leadership(
        store, clock, holder=signer.key_id, url=settings.advertise, ttl=settings.lease_ttl_s)
    ctx = ServiceContext(store=store, clock=clock, ids=UuidIds(), signer=signer, detector=settings.detector,
                         leadership=leadership)
    services = Services.build(ctx)
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
            NodeLifecycleController(ctx, services.nodes, services.runtime, settings.quarantine),
            LivenessFlusher(services.nodes, settings.liveness_flush_s),
            AuditHeadSigner(services.audit, settings.audit_sign_s),
        ]

    app = create_app(services, body_limit=settings.body_limit)
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
