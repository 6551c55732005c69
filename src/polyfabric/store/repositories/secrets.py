"""Secrets at rest: only ciphertext and wrapped data keys (security/sealing.py) reach these rows."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.store.tables import secrets

__all__ = ["SqlSecretRepository"]

_META = [c for c in secrets.c if c.name not in ("wrapped_key", "ciphertext")]


class SqlSecretRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, domain: str, name: str) -> dict[str, Any] | None:
        row = self._conn.execute(sa.select(secrets).where(secrets.c.domain == domain, secrets.c.name == name)
                                 ).mappings().first()
        return dict(row) if row else None

    def list(self, domains: tuple[str, ...] | None) -> list[dict[str, Any]]:
        """Metadata only: the ciphertext columns are not even read."""
        query = sa.select(*_META).order_by(secrets.c.domain, secrets.c.name)
        if domains is not None:
            query = query.where(secrets.c.domain.in_(domains))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def put(self, row: dict[str, Any]) -> None:
        updated = self._conn.execute(
            secrets.update().where(secrets.c.domain == row["domain"], secrets.c.name == row["name"])
            .values(**{k: v for k, v in row.items() if k not in ("domain", "name", "created_at", "created_by")}))
        if not updated.rowcount:
            self._conn.execute(secrets.insert().values(**row))

    def delete(self, domain: str, name: str) -> bool:
        result = self._conn.execute(secrets.delete().where(secrets.c.domain == domain, secrets.c.name == name))
        return bool(result.rowcount)

    def wrapped_keys(self) -> list[tuple[str, str, str, bytes]]:
        """(domain, name, key id, wrapped data key) of every secret, locked for re-wrapping."""
        query = sa.select(secrets.c.domain, secrets.c.name, secrets.c.key_id, secrets.c.wrapped_key)
        if self._conn.dialect.name == "postgresql":
            query = query.with_for_update()
        return [(r[0], r[1], r[2], bytes(r[3])) for r in self._conn.execute(query)]

    def rewrap(self, domain: str, name: str, key_id: str, wrapped: bytes) -> None:
        self._conn.execute(secrets.update().where(secrets.c.domain == domain, secrets.c.name == name)
                           .values(key_id=key_id, wrapped_key=wrapped))
