"""The audit chain in SQL: append links records under the tip row's lock, so the chain stays
one line even with several writers (PostgreSQL: SELECT ... FOR UPDATE; SQLite: one writer)."""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.domain import audit as chain
from polyfabric.domain.audit import AuditRecord, SignedHead
from polyfabric.services.ports import AuditEntry, AuditQuery
from polyfabric.store.tables import audit_heads, audit_records, audit_tip, coordinator_keys

__all__ = ["SqlAuditRepository"]


def _record(row: sa.RowMapping) -> AuditRecord:
    return AuditRecord(
        seq=int(row["seq"]),
        at=row["at"],
        actor=row["actor"],
        action=row["action"],
        subject=row["subject"],
        domain=row["domain"],
        cause=row["cause"],
        details=dict(row["details"]),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


class SqlAuditRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def _locked_tip(self) -> tuple[bool, AuditRecord | None]:
        """Lock the tip row (every appender queues here) and return the record it points to."""
        tip = self._conn.execute(
            sa.select(audit_tip.c.seq).where(audit_tip.c.id == 1).with_for_update()
        ).first()
        if tip is None or tip.seq == 0:
            return tip is not None, None
        row = self._conn.execute(
            sa.select(audit_records).where(audit_records.c.seq == tip.seq)
        ).mappings().first()
        return True, _record(row) if row else None

    def append(self, entries: list[AuditEntry], now: float) -> list[AuditRecord]:
        if not entries:
            return []
        had_tip, prev = self._locked_tip()
        records = []
        for entry in entries:
            prev = chain.link(
                prev,
                at=now,
                actor=entry.actor,
                action=entry.action,
                subject=entry.subject,
                domain=entry.domain,
                cause=entry.cause,
                details=entry.details or {},
            )
            records.append(prev)
        self._conn.execute(audit_records.insert(), [chain.record_to_dict(r) for r in records])
        last = records[-1]
        if had_tip:
            self._conn.execute(audit_tip.update().where(audit_tip.c.id == 1)
                               .values(seq=last.seq, hash=last.hash))
        else:
            self._conn.execute(audit_tip.insert().values(id=1, seq=last.seq, hash=last.hash))
        return records

    def query(self, q: AuditQuery) -> list[AuditRecord]:
        query = sa.select(audit_records).where(audit_records.c.seq > q.after_seq)
        if q.subject:
            query = query.where(audit_records.c.subject == q.subject)
        if q.action:
            if q.action.endswith("*") or "." not in q.action:
                query = query.where(audit_records.c.action.like(q.action.rstrip("*").rstrip(".") + "%"))
            else:
                query = query.where(audit_records.c.action == q.action)
        if q.since is not None:
            query = query.where(audit_records.c.at >= q.since)
        query = query.order_by(audit_records.c.seq).limit(q.limit)
        return [_record(r) for r in self._conn.execute(query).mappings()]

    def iter_all(self, batch: int = 1000) -> Iterator[AuditRecord]:
        after = 0
        while True:
            rows = self._conn.execute(
                sa.select(audit_records).where(audit_records.c.seq > after)
                .order_by(audit_records.c.seq).limit(batch)
            ).mappings().all()
            if not rows:
                return
            for row in rows:
                yield _record(row)
            after = int(rows[-1]["seq"])

    def tip(self) -> tuple[int, str]:
        row = self._conn.execute(sa.select(audit_tip.c.seq, audit_tip.c.hash)).first()
        return (int(row.seq), row.hash) if row else (0, chain.GENESIS)

    def add_head(self, head: SignedHead) -> None:
        self._conn.execute(audit_heads.insert().values(**chain.head_to_dict(head)))

    def heads(self) -> list[SignedHead]:
        rows = self._conn.execute(sa.select(audit_heads).order_by(audit_heads.c.seq)).mappings()
        return [chain.head_from_dict(dict(r)) for r in rows]

    def last_head(self) -> SignedHead | None:
        row = self._conn.execute(
            sa.select(audit_heads).order_by(audit_heads.c.seq.desc()).limit(1)
        ).mappings().first()
        return chain.head_from_dict(dict(row)) if row else None

    def add_coordinator_key(self, key_id: str, public_key_b64: str, now: float) -> None:
        exists = self._conn.execute(
            sa.select(coordinator_keys.c.key_id).where(coordinator_keys.c.key_id == key_id)
        ).first()
        if not exists:
            self._conn.execute(coordinator_keys.insert().values(
                key_id=key_id, public_key=public_key_b64, created_at=now))

    def coordinator_keys(self) -> dict[str, str]:
        rows = self._conn.execute(sa.select(coordinator_keys.c.key_id, coordinator_keys.c.public_key))
        return {r.key_id: r.public_key for r in rows}
