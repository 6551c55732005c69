"""The transaction boundary: one connection, one transaction, the repositories bound to it.

SQLite has one writer at a time, and a writer that finds the lock taken sleeps in SQLite's busy
handler (1, 2, 5 ... up to 100 ms a retry) rather than being woken when the lock is free: with a
few dozen writing threads (registrations, heartbeats that change a node's state, the flusher, the
failure detector) a write then waits hundreds of milliseconds for a lock that is free most of the
time. So writers of one SQLite store queue on a lock in this process first and reach SQLite one
by one; readers are not held. PostgreSQL is left to its own row locks.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy.engine import Connection, Engine

from polyfabric.observability.metrics import STORE_COMMIT_SECONDS
from polyfabric.store.engine import create_engine, is_sqlite
from polyfabric.store.repositories.artifacts import SqlArtifactRepository
from polyfabric.store.repositories.audit import SqlAuditRepository
from polyfabric.store.repositories.checkpoints import SqlCheckpointRepository
from polyfabric.store.repositories.config import SqlConfigRepository
from polyfabric.store.repositories.domains import SqlDomainRepository
from polyfabric.store.repositories.gc import SqlRetentionRepository
from polyfabric.store.repositories.jobs import SqlJobRepository
from polyfabric.store.repositories.leadership import SqlLeadershipRepository
from polyfabric.store.repositories.ledger import SqlLedgerRepository
from polyfabric.store.repositories.manifests import SqlManifestRepository
from polyfabric.store.repositories.nodes import SqlNodeRepository
from polyfabric.store.repositories.policies import SqlPolicyRepository
from polyfabric.store.repositories.pools import SqlPoolRepository
from polyfabric.store.repositories.schedules import SqlScheduleRepository
from polyfabric.store.repositories.secrets import SqlSecretRepository
from polyfabric.store.repositories.telemetry import SqlTelemetryRepository
from polyfabric.store.repositories.tokens import SqlTokenRepository
from polyfabric.store.repositories.topology import SqlTopologyRepository
from polyfabric.store.repositories.triggers import SqlTriggerRepository

__all__ = ["SqlStore", "SqlUnitOfWork"]

_WRITE_LOCK_WAIT_S = 30.0


class SqlUnitOfWork:
    """`with store.unit_of_work() as uow: ...; uow.commit()` — no commit, no change."""

    def __init__(self, engine: Engine, readonly: bool, write_lock: threading.RLock | None = None) -> None:
        self._engine = engine
        self._readonly = readonly
        self._conn: Connection | None = None
        self._write_lock = None if readonly else write_lock

    def __enter__(self) -> SqlUnitOfWork:
        # Bounded like SQLite's own busy timeout: past it, go on and let SQLite decide as before.
        if self._write_lock is not None and not self._write_lock.acquire(timeout=_WRITE_LOCK_WAIT_S):
            self._write_lock = None
        conn: Connection | None = None
        try:
            conn = self._engine.connect()
            if self._readonly:
                conn = conn.execution_options(polyfabric_readonly=True)
            self._tx = conn.begin()
        except BaseException:
            try:
                if conn is not None:
                    conn.close()
            finally:
                if self._write_lock is not None:
                    self._write_lock.release()
            raise
        self._conn = conn
        self.domains = SqlDomainRepository(conn)
        self.tokens = SqlTokenRepository(conn)
        self.nodes = SqlNodeRepository(conn)
        self.audit = SqlAuditRepository(conn)
        self.jobs = SqlJobRepository(conn)
        self.leadership = SqlLeadershipRepository(conn)
        self.policies = SqlPolicyRepository(conn)
        self.checkpoints = SqlCheckpointRepository(conn)
        self.schedules = SqlScheduleRepository(conn)
        self.triggers = SqlTriggerRepository(conn)
        self.retention = SqlRetentionRepository(conn)
        self.telemetry = SqlTelemetryRepository(conn)
        self.ledger = SqlLedgerRepository(conn)
        self.config = SqlConfigRepository(conn)
        self.secrets = SqlSecretRepository(conn)
        self.manifests = SqlManifestRepository(conn)
        self.topology = SqlTopologyRepository(conn)
        self.pools = SqlPoolRepository(conn)
        self.artifacts = SqlArtifactRepository(conn)
        return self

    def commit(self) -> None:
        started = time.perf_counter()
        self._tx.commit()
        STORE_COMMIT_SECONDS.observe(time.perf_counter() - started)

    def __exit__(self, *exc: object) -> None:
        assert self._conn is not None
        try:
            if self._tx.is_active:
                self._tx.rollback()
        finally:
            try:
                self._conn.close()
                self._conn = None
            finally:
                if self._write_lock is not None:
                    self._write_lock.release()


class SqlStore:
    def __init__(self, url: str, *, owner: str | None = None) -> None:
        """`owner`: the coordinator's key id, which names its PostgreSQL sessions (store.engine)."""
        self.url = url
        self.engine = create_engine(url, owner=owner)
        # Re-entrant: a thread that nests write units of work keeps today's behaviour (SQLite decides).
        self._write_lock = threading.RLock() if is_sqlite(self.engine) else None

    def unit_of_work(self, *, readonly: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, readonly, self._write_lock)

    def close(self) -> None:
        self.engine.dispose()
