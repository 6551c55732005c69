"""The transaction boundary: one connection, one transaction, the repositories bound to it."""

from __future__ import annotations

from sqlalchemy.engine import Connection, Engine

from polyfabric.store.engine import create_engine
from polyfabric.store.repositories.audit import SqlAuditRepository
from polyfabric.store.repositories.domains import SqlDomainRepository
from polyfabric.store.repositories.jobs import SqlJobRepository
from polyfabric.store.repositories.nodes import SqlNodeRepository
from polyfabric.store.repositories.tokens import SqlTokenRepository

__all__ = ["SqlStore", "SqlUnitOfWork"]


class SqlUnitOfWork:
    """`with store.unit_of_work() as uow: ...; uow.commit()` — no commit, no change."""

    def __init__(self, engine: Engine, readonly: bool) -> None:
        self._engine = engine
        self._readonly = readonly
        self._conn: Connection | None = None

    def __enter__(self) -> SqlUnitOfWork:
        conn = self._engine.connect()
        if self._readonly:
            conn = conn.execution_options(polyfabric_readonly=True)
        self._conn = conn
        self._tx = conn.begin()
        self.domains = SqlDomainRepository(conn)
        self.tokens = SqlTokenRepository(conn)
        self.nodes = SqlNodeRepository(conn)
        self.audit = SqlAuditRepository(conn)
        self.jobs = SqlJobRepository(conn)
        return self

    def commit(self) -> None:
        self._tx.commit()

    def __exit__(self, *exc: object) -> None:
        assert self._conn is not None
        try:
            if self._tx.is_active:
                self._tx.rollback()
        finally:
            self._conn.close()
            self._conn = None


class SqlStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)

    def unit_of_work(self, *, readonly: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, readonly)

    def close(self) -> None:
        self.engine.dispose()
