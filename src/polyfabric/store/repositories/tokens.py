"""Join tokens and API tokens. Only hashes are stored; the token itself is shown once."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.services.ports import ApiTokenRow, JoinTokenRow
from polyfabric.store.tables import api_tokens, join_tokens

__all__ = ["SqlTokenRepository"]


def _join(row: sa.RowMapping) -> JoinTokenRow:
    return JoinTokenRow(**dict(row))


def _api(row: sa.RowMapping) -> ApiTokenRow:
    data = dict(row)
    data["domains"] = tuple(data["domains"])
    return ApiTokenRow(**data)


class SqlTokenRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add_join(self, row: JoinTokenRow) -> None:
        self._conn.execute(join_tokens.insert().values(**_fields(row)))

    def add_api(self, row: ApiTokenRow) -> None:
        values = _fields(row)
        values["domains"] = list(row.domains)
        self._conn.execute(api_tokens.insert().values(**values))

    def join_by_hash(self, token_hash: str) -> JoinTokenRow | None:
        row = self._conn.execute(
            sa.select(join_tokens).where(join_tokens.c.token_hash == token_hash)
        ).mappings().first()
        return _join(row) if row else None

    def api_by_hash(self, token_hash: str) -> ApiTokenRow | None:
        row = self._conn.execute(
            sa.select(api_tokens).where(api_tokens.c.token_hash == token_hash)
        ).mappings().first()
        return _api(row) if row else None

    def consume_join(self, token_id: str) -> bool:
        """Use the token once; False when it was used up meanwhile (atomic compare-and-set)."""
        result = self._conn.execute(
            join_tokens.update()
            .where(join_tokens.c.id == token_id)
            .where(sa.or_(join_tokens.c.uses_allowed.is_(None),
                          join_tokens.c.uses < join_tokens.c.uses_allowed))
            .values(uses=join_tokens.c.uses + 1)
        )
        return result.rowcount == 1

    def list_join(self, domains: tuple[str, ...] | None) -> list[JoinTokenRow]:
        query = sa.select(join_tokens).order_by(join_tokens.c.created_at)
        if domains is not None:
            query = query.where(join_tokens.c.domain.in_(domains))
        return [_join(r) for r in self._conn.execute(query).mappings()]

    def list_api(self) -> list[ApiTokenRow]:
        query = sa.select(api_tokens).order_by(api_tokens.c.created_at)
        return [_api(r) for r in self._conn.execute(query).mappings()]

    def revoke(self, token_id: str, now: float) -> str | None:
        """Revoke a join or API token by id; returns its kind ('join'/'api') or None if unknown."""
        for kind, table in (("join", join_tokens), ("api", api_tokens)):
            result = self._conn.execute(
                table.update().where(table.c.id == token_id).where(table.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if result.rowcount:
                return kind
            exists = self._conn.execute(sa.select(table.c.id).where(table.c.id == token_id)).first()
            if exists:
                return kind
        return None

    def count_api(self) -> int:
        return int(self._conn.execute(sa.select(sa.func.count()).select_from(api_tokens)).scalar_one())


def _fields(row: object) -> dict[str, object]:
    return {name: getattr(row, name) for name in row.__slots__}  # type: ignore[attr-defined]
