"""Policy versions (each apply adds one; `rm` adds a tombstone) and the decisions that name them.

A decision's findings are stored once per distinct list (`policy_finding_sets`, by the SHA-256 of
their JSON text): a pass places thousands of tasks and most carry the same few findings (~400
bytes each inline: most of the pass's bytes, and of the database's growth). A placement's findings
are a column of its attempt (`task_attempts.findings_set`, since revision 0015: a row per placement
here cost a pass of 10,000 placements ~0.1 s); admissions and offers declined are rows here.
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from polyfabric.store.engine import json_dumps
from polyfabric.store.repositories.bulk import insert_many
from polyfabric.store.tables import policy_decisions, policy_finding_sets, policy_versions, task_attempts, tasks

_IN_CHUNK = 500  # digests per IN (...) lookup

__all__ = ["SqlPolicyRepository"]


class SqlPolicyRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def latest_version(self, name: str) -> int:
        value = self._conn.execute(
            sa.select(sa.func.max(policy_versions.c.version)).where(policy_versions.c.name == name)).scalar()
        return int(value or 0)

    def add_version(self, row: dict[str, Any]) -> None:
        self._conn.execute(policy_versions.insert().values(**row))

    def versions(self, name: str) -> list[dict[str, Any]]:
        query = (sa.select(policy_versions).where(policy_versions.c.name == name)
                 .order_by(policy_versions.c.version))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def current(self) -> list[dict[str, Any]]:
        """The newest version of every policy that is not removed, by name."""
        newest = (sa.select(policy_versions.c.name, sa.func.max(policy_versions.c.version).label("v"))
                  .group_by(policy_versions.c.name).subquery())
        query = (sa.select(policy_versions)
                 .join(newest, sa.and_(policy_versions.c.name == newest.c.name,
                                       policy_versions.c.version == newest.c.v))
                 .where(policy_versions.c.removed.is_(False))
                 .order_by(policy_versions.c.name))
        return [dict(r) for r in self._conn.execute(query).mappings()]

    def add_decisions(self, rows: list[dict[str, Any]]) -> None:
        """Rows of {job_id, task_id, attempt, node_id, kind, allowed, findings, at}; rows may share
        one `findings` list (it is encoded once)."""
        if not rows:
            return
        ids = self.finding_set_ids([r["findings"] for r in rows])
        insert_many(self._conn, policy_decisions, [
            {"job_id": r["job_id"], "task_id": r["task_id"], "attempt": r["attempt"], "node_id": r["node_id"],
             "kind": r["kind"], "allowed": r["allowed"], "findings_set": ids[id(r["findings"])],
             "at": r["at"]} for r in rows])

    def finding_set_ids(self, lists: list[Any]) -> dict[int, int]:
        """id(findings list) -> the id of its stored set, added where new. Lists equal in content
        share a set; the same list object may come many times (it is encoded once)."""
        digests: dict[int, str] = {}  # id(findings) -> the digest of its JSON text
        sets: dict[str, Any] = {}  # digest -> findings
        for findings in lists:
            if id(findings) not in digests:
                digest = digests[id(findings)] = hashlib.sha256(json_dumps(findings).encode()).hexdigest()
                sets[digest] = findings
        if not sets:
            return {}
        ids = self._finding_sets(sets)
        return {ident: ids[digest] for ident, digest in digests.items()}

    def _finding_sets(self, sets: dict[str, Any]) -> dict[str, int]:
        """The id of each set (digest -> findings), added where it is new. Safe with concurrent
        writers: an insert that meets the same digest does nothing, and the lookup after it sees
        the other writer's row once that commits."""
        found = self._set_ids(list(sets))
        missing = [d for d in sets if d not in found]
        if missing:
            dialect = postgresql if self._conn.dialect.name == "postgresql" else sqlite
            self._conn.execute(
                dialect.insert(policy_finding_sets).on_conflict_do_nothing(index_elements=["digest"]),
                [{"digest": d, "findings": sets[d]} for d in missing])
            found.update(self._set_ids(missing))
        return found

    def _set_ids(self, digests: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        table = policy_finding_sets
        for i in range(0, len(digests), _IN_CHUNK):
            query = sa.select(table.c.digest, table.c.id).where(table.c.digest.in_(digests[i:i + _IN_CHUNK]))
            out.update({digest: ident for digest, ident in self._conn.execute(query)})
        return out

    def decisions(self, *, job_id: str, task_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        d, sets = policy_decisions, policy_finding_sets
        query = (sa.select(*(c for c in d.c if c.name != "findings_set"),
                           sets.c.findings.label("set_findings"))
                 .select_from(d.outerjoin(sets, sets.c.id == d.c.findings_set))
                 .where(d.c.job_id == job_id))
        if task_id is not None:
            query = query.where(d.c.task_id == task_id)
        query = query.order_by(d.c.id).limit(limit)
        out = []
        for r in self._conn.execute(query).mappings():
            row = dict(r)
            shared = row.pop("set_findings")
            if row["findings"] is None:  # rows since revision 0014; older ones hold them inline
                row["findings"] = shared
            out.append(row)
        # Placements since revision 0015: their attempts name the findings.
        a = task_attempts
        query = (sa.select(a.c.task_id, a.c.attempt, a.c.node_id, a.c.leased_at, sets.c.findings)
                 .select_from(a.join(tasks, tasks.c.id == a.c.task_id).join(sets, sets.c.id == a.c.findings_set))
                 .where(tasks.c.job_id == job_id))
        if task_id is not None:
            query = query.where(a.c.task_id == task_id)
        query = query.order_by(a.c.leased_at, a.c.task_id, a.c.attempt).limit(limit)
        placed = [{"id": None, "job_id": job_id, "task_id": r.task_id, "attempt": r.attempt, "node_id": r.node_id,
                   "kind": "placement", "allowed": True, "findings": r.findings, "at": r.leased_at}
                  for r in self._conn.execute(query)]
        if placed:  # in time order; a placement before what its node then answered
            order = {"admission": 0, "placement": 1}
            out = sorted(out + placed, key=lambda r: (r["at"], order.get(r["kind"], 2)))[:limit]
        return out
