"""Wires store, services, controllers and the API for one coordinator process."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from polyfabric.api.app import create_app
from polyfabric.controllers.audit_signer import AuditHeadSigner
from polyfabric.controllers.liveness_flush import LivenessFlusher
from polyfabric.controllers.node_health import NodeHealthController
from polyfabric.controllers.runtime import LoopRunner
from polyfabric.controllers.scheduler import SchedulerController
from polyfabric.coordinator.settings import CoordinatorSettings
from polyfabric.security.keys import b64e, generate_private_key, load_private_key, public_key_raw, save_private_key
from polyfabric.security.signing import sign_bytes
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.store import migrate
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
    loops: LoopRunner
    admin_token_created: bool


def build(settings: CoordinatorSettings) -> Coordinator:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    store = SqlStore(settings.db_url)
    migrate.upgrade(store.engine)
    ctx = ServiceContext(store=store, clock=SystemClock(), ids=UuidIds(),
                         signer=CoordinatorSigner(settings.key_path), detector=settings.detector)
    services = Services.build(ctx)
    services.audit.register_key()
    issued = services.tokens.bootstrap_admin()
    if issued is not None:
        _write_secret(settings.admin_token_path, issued.token)
    services.nodes.load_liveness()
    services.runtime.load()
    loops = LoopRunner([
        NodeHealthController(ctx, services.nodes, on_down=services.runtime.node_lost),
        SchedulerController(services.runtime),
        LivenessFlusher(services.nodes, settings.liveness_flush_s),
        AuditHeadSigner(services.audit, settings.audit_sign_s),
    ])
    app = create_app(services, body_limit=settings.body_limit)
    return Coordinator(settings, store, services, app, loops, issued is not None)


def _write_secret(path: Path, value: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
