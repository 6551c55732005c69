"""The lease row of the leader election (one row, id 1) and the fence that leader-only writes pass.

On PostgreSQL the row's locks are the serialization point of the election: an election pass
reads it `FOR UPDATE`, a fenced write reads its epoch `FOR SHARE` first in its transaction, so
a takeover (which bumps the epoch) waits for every fenced transaction in flight, and every fenced
transaction after it sees the new epoch. SQLite ignores both clauses (it has one coordinator and
one writer at a time anyway).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.services.ports import LeaseRow
from polyfabric.store.tables import leadership

__all__ = ["SqlLeadershipRepository"]

_ROW = leadership.c.id == 1


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

    def lock(self, idle_timeout_s: float = 0.0) -> LeaseRow:
        """The lease row, locked until the end of the transaction (FOR UPDATE)."""
        query = sa.select(*self._columns(idle_timeout_s), *leadership.c).where(_ROW).with_for_update()
        row = self._conn.execute(query).mappings().one()
        return LeaseRow(holder=row["holder"], epoch=int(row["epoch"]), expires_at=row["expires_at"],
                        acquired_at=row["acquired_at"], renewed_at=row["renewed_at"], leader_url=row["leader_url"])

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
