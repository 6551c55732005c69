"""The lease row of the leader election (one row, id 1) and the fence that leader-only writes pass.

On PostgreSQL the row's locks are the serialization point of the election: an election pass
reads it `FOR UPDATE`, a fenced write reads its epoch `FOR SHARE` first in its transaction, so
a takeover (which bumps the epoch) waits for every fenced transaction in flight, and every fenced
transaction after it sees the new epoch. SQLite ignores both clauses (it has one coordinator and
one writer at a time anyway).

An election pass waits a bounded time for the row (`lock_timeout`), so that a coordinator paused
in the middle of a fenced transaction cannot hold the election up forever: PostgreSQL's own
`idle_in_transaction_session_timeout` does not fire while a session sits mid-pipeline (psycopg's
executemany), so the successor ends such sessions itself (`evict`), by the `application_name`
every coordinator gives its sessions (store.engine.session_name).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.services.ports import LeaseRow
from polyfabric.store.engine import session_name
from polyfabric.store.tables import leadership

__all__ = ["SqlLeadershipRepository"]

_ROW = leadership.c.id == 1
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout that ran out


def _lease(row: Any) -> LeaseRow:
    return LeaseRow(holder=row["holder"], epoch=int(row["epoch"]), expires_at=row["expires_at"],
                    acquired_at=row["acquired_at"], renewed_at=row["renewed_at"], leader_url=row["leader_url"])


class SqlLeadershipRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def _columns(self, idle_timeout_s: float) -> list[sa.ColumnElement]:
        """On PostgreSQL, `idle_timeout_s` bounds how long this transaction may sit idle holding the
        row lock: a coordinator paused mid-transaction (SIGSTOP, a VM stall) is disconnected by
        the server after that long, so its lock cannot hold the election up."""
        if idle_timeout_s > 0 and self._conn.dialect.name == "postgresql":
            timeout = str(max(1, int(idle_timeout_s * 1000)))
            return [sa.func.set_config("idle_in_transaction_session_timeout", timeout, True)]
        return []

    def lock(self, idle_timeout_s: float = 0.0, wait_s: float = 0.0) -> LeaseRow | None:
        """The lease row, locked until the end of the transaction (FOR UPDATE); None when another
        transaction held it for longer than `wait_s` (0: wait as long as it takes). After None
        the transaction is spoiled: end it."""
        if wait_s > 0 and self._conn.dialect.name == "postgresql":
            self._conn.execute(sa.select(sa.func.set_config("lock_timeout", str(max(1, int(wait_s * 1000))), True)))
        query = sa.select(*self._columns(idle_timeout_s), *leadership.c).where(_ROW).with_for_update()
        try:
            row = self._conn.execute(query).mappings().one()
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                return None
            raise
        return _lease(row)

    def peek(self) -> LeaseRow:
        """The lease row as last committed, without a lock (never waits)."""
        return _lease(self._conn.execute(sa.select(leadership).where(_ROW)).mappings().one())

    def evict(self, holder: str) -> int:
        """End every database session of the coordinator `holder` (all its transactions roll
        back, their locks go); how many there were. Only for a holder whose lease ran out."""
        if self._conn.dialect.name != "postgresql":
            return 0
        ended = self._conn.execute(sa.text(
            "SELECT pg_terminate_backend(pid, 2000) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = :name AND pid <> pg_backend_pid()"),
            {"name": session_name(holder)}).scalars().all()
        return sum(1 for done in ended if done)

    def epoch(self, idle_timeout_s: float = 0.0) -> int:
        """The current epoch, share-locked until the end of the transaction (FOR SHARE): a
        takeover cannot commit before this transaction ends."""
        query = sa.select(leadership.c.epoch, *self._columns(idle_timeout_s)).where(_ROW).with_for_update(read=True)
        return int(self._conn.execute(query).one()[0])

    def renew(self, holder: str, epoch: int, expires_at: float, now: float, leader_url: str) -> bool:
        """Extend the lease of `holder` at `epoch`; False if it is not theirs any more."""
        result = self._conn.execute(
            leadership.update().where(_ROW, leadership.c.holder == holder, leadership.c.epoch == epoch)
            .values(expires_at=expires_at, renewed_at=now, leader_url=leader_url))
        return result.rowcount == 1

    def take(self, holder: str, seen_epoch: int, expires_at: float, now: float, leader_url: str) -> bool:
        """Take the lease over with epoch `seen_epoch + 1`; False if the epoch moved meanwhile."""
        result = self._conn.execute(
            leadership.update().where(_ROW, leadership.c.epoch == seen_epoch)
            .values(holder=holder, epoch=seen_epoch + 1, expires_at=expires_at, acquired_at=now, renewed_at=now,
                    leader_url=leader_url))
        return result.rowcount == 1

    def release(self, holder: str, epoch: int, now: float) -> bool:
        """End the lease of `holder` at `epoch` now (a clean stop): a standby takes over at once."""
        result = self._conn.execute(
            leadership.update().where(_ROW, leadership.c.holder == holder, leadership.c.epoch == epoch)
            .values(expires_at=now))
        return result.rowcount == 1
