"""Webhook triggers, the deliveries they accepted (a replay is refused), and the sealing key."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from polyfabric.store.tables import trigger_deliveries, trigger_keys, triggers

__all__ = ["SqlTriggerRepository"]


class SqlTriggerRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, row: dict[str, Any]) -> None:
        self._conn.execute(triggers.insert().values(**row))

    def get(self, ref: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            sa.select(triggers).where(sa.or_(triggers.c.id == ref, triggers.c.name == ref))
        ).mappings().first()
        return dict(row) if row else None

    def list(self, domains: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        query = sa.select(triggers).order_by(triggers.c.name)
        if domains is not None:
            query = query.where(triggers.c.domain.in_(domains))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def delete(self, trigger_id: str) -> None:
        self._conn.execute(trigger_deliveries.delete().where(trigger_deliveries.c.trigger_id == trigger_id))
        self._conn.execute(triggers.delete().where(triggers.c.id == trigger_id))

    def record_delivery(self, trigger_id: str, signature: str, now: float, job_id: str) -> str | None:
        """Remember a delivery; if this signature was delivered before, the job it started (a replay)."""
        existing = self._conn.execute(
            sa.select(trigger_deliveries.c.job_id).where(trigger_deliveries.c.trigger_id == trigger_id)
            .where(trigger_deliveries.c.signature == signature)).first()
        if existing is not None:
            return str(existing[0] or "")
        self._conn.execute(trigger_deliveries.insert().values(trigger_id=trigger_id, signature=signature,
                                                              received_at=now, job_id=job_id))
        self._conn.execute(triggers.update().where(triggers.c.id == trigger_id)
                           .values(fired=triggers.c.fired + 1, last_fired_at=now))
        return None

    def forget_deliveries(self, before: float) -> int:
        result = self._conn.execute(trigger_deliveries.delete().where(trigger_deliveries.c.received_at < before))
        return int(result.rowcount or 0)

    def sealing_key(self, make: Any, now: float) -> str:
        """The stored sealing key; made with `make()` and stored on first use (racing makers agree)."""
        row = self._conn.execute(sa.select(trigger_keys.c.key).where(trigger_keys.c.id == 1)).first()
        if row is not None:
            return str(row[0])
        key = str(make())
        try:
            with self._conn.begin_nested():
                self._conn.execute(trigger_keys.insert().values(id=1, key=key, created_at=now))
        except IntegrityError:
            row = self._conn.execute(sa.select(trigger_keys.c.key).where(trigger_keys.c.id == 1)).first()
            assert row is not None
            return str(row[0])
        return key
