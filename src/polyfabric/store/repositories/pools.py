"""Pools, their members and per-domain node quotas (rows as plain dicts)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.store.tables import domain_quotas, nodes, pool_members, pools

__all__ = ["SqlPoolRepository"]

_GONE_STATES = ("retired",)


class SqlPoolRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # -- pools ------------------------------------------------------------------------------

    def add(self, row: dict[str, Any]) -> None:
        self._conn.execute(pools.insert().values(**row))

    def get(self, name: str, *, for_update: bool = False) -> dict[str, Any] | None:
        query = sa.select(pools).where(pools.c.name == name)
        if for_update:
            query = query.with_for_update()
        row = self._conn.execute(query).mappings().first()
        return dict(row) if row is not None else None

    def list(self, domains: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        query = sa.select(pools).order_by(pools.c.name)
        if domains is not None:
            query = query.where(pools.c.domain.in_(domains))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def update(self, name: str, **values: Any) -> None:
        self._conn.execute(pools.update().where(pools.c.name == name).values(**values))

    def delete(self, name: str) -> None:
        self._conn.execute(pool_members.delete().where(pool_members.c.pool == name))
        self._conn.execute(pools.delete().where(pools.c.name == name))

    # -- members ----------------------------------------------------------------------------

    def add_member(self, row: dict[str, Any]) -> None:
        self._conn.execute(pool_members.insert().values(**row))

    def update_member(self, member_id: str, **values: Any) -> None:
        self._conn.execute(pool_members.update().where(pool_members.c.id == member_id).values(**values))

    def members(self, pool: str | None = None, *, states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        query = sa.select(pool_members).order_by(pool_members.c.started_at, pool_members.c.id)
        if pool is not None:
            query = query.where(pool_members.c.pool == pool)
        if states is not None:
            query = query.where(pool_members.c.state.in_(states))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    # -- quotas -----------------------------------------------------------------------------

    def quota(self, domain: str) -> int | None:
        value = self._conn.execute(
            sa.select(domain_quotas.c.max_nodes).where(domain_quotas.c.domain == domain)).scalar()
        return int(value) if value is not None else None

    def quotas(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn.execute(sa.select(domain_quotas).order_by(domain_quotas.c.domain))
                .mappings()]

    def set_quota(self, domain: str, max_nodes: int | None, now: float, by: str) -> None:
        self._conn.execute(domain_quotas.delete().where(domain_quotas.c.domain == domain))
        if max_nodes is not None:
            self._conn.execute(domain_quotas.insert().values(domain=domain, max_nodes=max_nodes, updated_at=now,
                                                             updated_by=by))

    def domain_nodes(self, domain: str) -> int:
        """Nodes of a domain that count against its quota: registered, not retired, not revoked."""
        query = (sa.select(sa.func.count()).select_from(nodes)
                 .where(nodes.c.domain == domain, nodes.c.revoked.is_(False), nodes.c.state.not_in(_GONE_STATES)))
        return int(self._conn.execute(query).scalar() or 0)

    def nodes_labelled(self, key: str, values: list[str]) -> dict[str, tuple[str, str]]:
        """label value -> (node id, state) of the nodes whose `key` label is one of `values`."""
        if not values:
            return {}
        wanted = set(values)
        out: dict[str, tuple[str, str]] = {}
        query = sa.select(nodes.c.id, nodes.c.labels, nodes.c.state, nodes.c.revoked)
        for row in self._conn.execute(query):
            value = (row.labels or {}).get(key)
            if value in wanted:
                out[value] = (row.id, "revoked" if row.revoked else row.state)
        return out
