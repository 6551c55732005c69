"""The configuration manager: versioned documents by scope, canary rollouts, acknowledgements, drift.

Every `publish` is a new version (one global, increasing number) of the document at one scope.
Which version of each scope applies to a node (newest first, skipping what does not apply):

- `rolled_back`: never; the version before it at the same scope applies again;
- `canary`: only to its canary nodes (chosen at publish: the first N nodes it applies to, by id)
  until `promote` makes it `active`;
- `halted` (an agent reported it could not apply a configuration: the newest document in it that
  the node had not run yet is halted): only to nodes that already acknowledged it; the rollout goes
  no further and `promote` is refused until a newer version or a rollback;
- `active`: to every node its scope covers.

A node's desired configuration is the merge (domain/configdoc.py) of the applicable version of
every scope that covers it, broad to narrow; its desired *version* is the highest of those
version numbers. The agent fetches it (`POST /v1/agent/config`, signed), applies it, and
acknowledges the version it runs in its next call, or reports that it could not. Publish,
promote, rollback, acknowledgement, failure and halt are all audited.
"""

from __future__ import annotations

import difflib
import json
import threading
import time
from typing import Any

from polyfabric.domain.access import Principal, Role, authorize
from polyfabric.domain.configdoc import Scope, merge, parse_document, parse_scope
from polyfabric.domain.errors import Conflict, NotFound, NotPermitted, ValidationError
from polyfabric.services.context import ServiceContext
from polyfabric.services.ports import AuditEntry, UnitOfWork

__all__ = ["ConfigService", "applicable_versions", "flatten"]

_LIVE_STATES = ("canary", "active", "halted")


def applicable_versions(docs: list[dict[str, Any]], node_id: str, domain: str, labels: dict[str, str],
                        acked_docs: list[int]) -> list[dict[str, Any]]:
    """The document rows that apply to one node, broad to narrow (scope rank, then version)."""
    by_scope: dict[str, list[dict[str, Any]]] = {}
    for row in docs:
        by_scope.setdefault(row["scope"], []).append(row)
    chosen: list[tuple[int, int, dict[str, Any]]] = []
    acked = set(acked_docs or ())
    for scope_text, rows in by_scope.items():
        scope = parse_scope(scope_text)
        if not scope.applies(node_id, domain, labels):
            continue
        for row in sorted(rows, key=lambda r: -r["version"]):
            state = row["state"]
            if state == "rolled_back":
                continue
            if state == "canary" and node_id not in (row["canary_nodes"] or []):
                continue
            if state == "halted" and row["version"] not in acked:
                continue
            chosen.append((scope.rank, row["version"], row))
            break
    return [row for _, _, row in sorted(chosen, key=lambda item: (item[0], item[1]))]


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _doc_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"version": row["version"], "scope": row["scope"], "state": row["state"], "document": row["document"],
            "canary_nodes": row["canary_nodes"], "comment": row["comment"], "published_by": row["published_by"],
            "published_at": row["published_at"], "halted_reason": row["halted_reason"],
            "changed_at": row["changed_at"]}


_CACHE_S = 1.0  # agents call every few seconds: the documents are read at most once a second


class ConfigService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._cache: tuple[float, list[dict[str, Any]]] | None = None

    def _docs(self, uow: UnitOfWork) -> list[dict[str, Any]]:
        """The documents, cached for a second (this coordinator's own changes drop the cache)."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache
        if cached is not None and now - cached[0] < _CACHE_S:
            return cached[1]
        docs = uow.config.docs()
        with self._lock:
            self._cache = (now, docs)
        return docs

    def _changed(self) -> None:
        with self._lock:
            self._cache = None

    # -- who may act on a scope --------------------------------------------------------------

    def _authorize_scope(self, uow: UnitOfWork, principal: Principal, scope: Scope) -> str | None:
        """The domain the scope belongs to (None for network/selector, which need an admin)."""
        if scope.kind == "domain":
            authorize(principal, "config.manage", scope.target)
            return scope.target
        if scope.kind == "node":
            node = uow.nodes.get(scope.target) or uow.nodes.by_name(scope.target)
            if node is None:
                raise NotFound(f"no node {scope.target!r}")
            authorize(principal, "config.manage", node.domain)
            return node.domain
        authorize(principal, "config.manage")
        if principal.role is not Role.ADMIN or "*" not in principal.domains:
            raise NotPermitted(f"publishing at scope {scope.text} needs an admin token for all domains")
        return None

    # -- publishing ---------------------------------------------------------------------------

    def publish(self, principal: Principal, document: Any, scope_text: str, *, canary: int | None = None,
                comment: str = "") -> dict[str, Any]:
        scope = parse_scope(scope_text)
        doc = parse_document(document)
        if canary is not None and canary < 1:
            raise ValidationError(f"--canary must be at least 1, got {canary}")
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            domain = self._authorize_scope(uow, principal, scope)
            if scope.kind == "node":
                node = uow.nodes.get(scope.target) or uow.nodes.by_name(scope.target)
                assert node is not None
                scope = Scope("node", node.id)
            uow.config.lock_versions()
            docs = uow.config.docs()
            pending = [d for d in docs if d["scope"] == scope.text and d["state"] == "canary"]
            if pending:
                raise Conflict(f"version {pending[-1]['version']} at scope {scope.text} is still a canary: "
                               "promote it or roll it back first")
            version = uow.config.last_version() + 1
            canary_nodes = None
            if canary is not None:
                covered = sorted(n.id for n in uow.nodes.list(limit=1_000_000)
                                 if n.state.value != "retired" and scope.applies(n.id, n.domain, n.labels))
                if not covered:
                    raise ValidationError(f"scope {scope.text} covers no node: nothing to canary")
                canary_nodes = covered[:canary]
            row = {"version": version, "scope": scope.text, "document": doc.to_dict(),
                   "state": "canary" if canary_nodes is not None else "active", "canary_nodes": canary_nodes,
                   "comment": comment, "published_by": principal.actor, "published_at": now,
                   "halted_reason": None, "changed_at": now}
            uow.config.add_doc(row)
            uow.audit.append([AuditEntry(
                actor=principal.actor, action="config.published", subject=f"config:{version}", domain=domain,
                cause=comment or "operator request",
                details={"version": version, "scope": scope.text, "canary_nodes": canary_nodes,
                         "fields": sorted(flatten(doc.to_dict()))})], now)
            uow.commit()
        self._changed()
        return _doc_out(row)

    def promote(self, principal: Principal, version: int | None = None) -> dict[str, Any]:
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            docs = uow.config.docs()
            if version is None:
                canaries = [d for d in docs if d["state"] == "canary"]
                halted = [d for d in docs if d["state"] == "halted"]
                if not canaries:
                    hint = f" (version {halted[-1]['version']} is halted: {halted[-1]['halted_reason']})" \
                        if halted else ""
                    raise Conflict(f"no canary rollout to promote{hint}")
                if len(canaries) > 1:
                    raise ValidationError("several canaries are in flight: name the version "
                                          f"({', '.join(str(d['version']) for d in canaries)})")
                row = canaries[0]
            else:
                row = uow.config.doc(version)
                if row is None:
                    raise NotFound(f"no configuration version {version}")
            if row["state"] == "halted":
                raise Conflict(f"version {row['version']} is halted ({row['halted_reason']}): "
                               "publish a fixed document or roll it back")
            if row["state"] != "canary":
                raise Conflict(f"version {row['version']} is {row['state']}, not a canary")
            domain = self._authorize_scope(uow, principal, parse_scope(row["scope"]))
            uow.config.update_doc(row["version"], state="active", changed_at=now)
            uow.audit.append([AuditEntry(
                actor=principal.actor, action="config.promoted", subject=f"config:{row['version']}", domain=domain,
                cause="operator request", details={"version": row["version"], "scope": row["scope"]})], now)
            uow.commit()
            self._changed()
            row = uow.config.doc(row["version"])
        assert row is not None
        return _doc_out(row)

    def rollback(self, principal: Principal, version: int | None = None, reason: str = "") -> dict[str, Any]:
        """Withdraw a version (default: the newest live one): the version before it at its scope
        applies again, to every node that had it."""
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            docs = uow.config.docs()
            if version is None:
                live = [d for d in docs if d["state"] in _LIVE_STATES]
                if not live:
                    raise Conflict("no configuration version to roll back")
                row = live[-1]
            else:
                row = uow.config.doc(version)
                if row is None:
                    raise NotFound(f"no configuration version {version}")
                if row["state"] == "rolled_back":
                    raise Conflict(f"version {version} is already rolled back")
            domain = self._authorize_scope(uow, principal, parse_scope(row["scope"]))
            previous = [d["version"] for d in docs if d["scope"] == row["scope"] and d["version"] < row["version"]
                        and d["state"] in ("active", "halted")]
            uow.config.update_doc(row["version"], state="rolled_back", changed_at=now)
            uow.audit.append([AuditEntry(
                actor=principal.actor, action="config.rolled_back", subject=f"config:{row['version']}",
                domain=domain, cause=reason or "operator request",
                details={"version": row["version"], "scope": row["scope"], "was": row["state"],
                         "now_applies": previous[-1] if previous else None})], now)
            uow.commit()
            self._changed()
            out = uow.config.doc(row["version"])
        assert out is not None
        return {**_doc_out(out), "now_applies": previous[-1] if previous else None}

    # -- reading ------------------------------------------------------------------------------

    def list(self, principal: Principal) -> list[dict[str, Any]]:
        authorize(principal, "config.read")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            return [_doc_out(r) for r in uow.config.docs()]

    def get(self, principal: Principal, version: int) -> dict[str, Any]:
        authorize(principal, "config.read")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            row = uow.config.doc(version)
        if row is None:
            raise NotFound(f"no configuration version {version}")
        return _doc_out(row)

    def diff(self, principal: Principal, v1: int, v2: int) -> dict[str, Any]:
        a, b = self.get(principal, v1), self.get(principal, v2)
        fa, fb = flatten(a["document"]), flatten(b["document"])
        changes = [{"field": f, "old": fa.get(f), "new": fb.get(f)}
                   for f in sorted(set(fa) | set(fb)) if fa.get(f) != fb.get(f)]
        text = "".join(difflib.unified_diff(
            json.dumps(a["document"], indent=2, sort_keys=True).splitlines(keepends=True),
            json.dumps(b["document"], indent=2, sort_keys=True).splitlines(keepends=True),
            fromfile=f"v{v1} ({a['scope']})", tofile=f"v{v2} ({b['scope']})"))
        return {"from": v1, "to": v2, "from_scope": a["scope"], "to_scope": b["scope"], "changes": changes,
                "unified": text}

    def status(self, principal: Principal) -> list[dict[str, Any]]:
        """Per node: desired and acknowledged version (drift when they differ), and any failure."""
        authorize(principal, "config.read")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            docs = uow.config.docs()
            states = uow.config.node_states()
            nodes = [n for n in uow.nodes.list(limit=1_000_000) if n.state.value != "retired"]
        out = []
        for node in nodes:
            if not principal.has_domain(node.domain):
                continue
            state = states.get(node.id) or {}
            layers = applicable_versions(docs, node.id, node.domain, node.labels, state.get("acked_docs") or [])
            desired = max((r["version"] for r in layers), default=0)
            acked = state.get("acked_version")
            out.append({"node_id": node.id, "name": node.name, "domain": node.domain, "state": node.state.value,
                        "desired_version": desired, "desired_docs": [r["version"] for r in layers],
                        "acked_version": acked, "acked_docs": state.get("acked_docs") or [],
                        "acked_at": state.get("acked_at"), "drift": desired != (acked or 0),
                        "applied": state.get("applied") or {}, "error": state.get("error"),
                        "error_version": state.get("error_version")})
        return out

    # -- the agent side -----------------------------------------------------------------------

    def agent_sync(self, node_id: str, acked: dict[str, Any] | None, failed: dict[str, Any] | None,
                   ) -> dict[str, Any]:
        """Record what the agent runs (or could not apply), answer what it should run. Every agent
        calls this every few seconds: when nothing changed it only reads (no write lock taken)."""
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            node = uow.nodes.get(node_id)
            if node is None:
                raise NotFound(f"node {node_id} is not registered")
            state = uow.config.node_state(node_id)
            same = failed is None and state is not None and acked is not None and (
                int(acked.get("version") or 0), sorted(int(v) for v in acked.get("docs") or []),
                acked.get("applied") or {}) == (state["acked_version"], state["acked_docs"], state["applied"])
            if same:
                layers = applicable_versions(self._docs(uow), node_id, node.domain, node.labels,
                                             state["acked_docs"] or [])
                return {"version": max((r["version"] for r in layers), default=0),
                        "docs": [r["version"] for r in layers], "config": merge(r["document"] for r in layers)}
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            node = uow.nodes.get(node_id)
            if node is None:
                raise NotFound(f"node {node_id} is not registered")
            state = uow.config.node_state(node_id) or {
                "node_id": node_id, "acked_version": None, "acked_docs": [], "acked_at": None, "applied": {},
                "error": None, "error_version": None, "updated_at": now}
            entries: list[AuditEntry] = []
            changed = False
            if acked is not None:
                version, docs_acked = int(acked.get("version") or 0), sorted(int(v) for v in acked.get("docs") or [])
                applied = acked.get("applied") or {}
                if (version, docs_acked, applied) != (state["acked_version"], state["acked_docs"], state["applied"]):
                    if version != state["acked_version"]:
                        entries.append(AuditEntry(
                            actor=f"node:{node_id}", action="config.acknowledged", subject=f"node:{node_id}",
                            domain=node.domain, cause="the agent applied its configuration",
                            details={"version": version, "docs": docs_acked}))
                    state.update(acked_version=version, acked_docs=docs_acked, applied=applied, acked_at=now)
                    if state["error_version"] is not None and version >= state["error_version"]:
                        state.update(error=None, error_version=None)
                    changed = True
            if failed is not None:
                version = int(failed.get("version") or 0)
                error = str(failed.get("error") or "unknown error")[:2000]
                if (version, error) != (state["error_version"], state["error"]):
                    state.update(error=error, error_version=version)
                    changed = True
                    entries.append(AuditEntry(
                        actor=f"node:{node_id}", action="config.apply_failed", subject=f"node:{node_id}",
                        domain=node.domain, cause=error, details={"version": version,
                                                                  "docs": failed.get("docs") or []}))
                    # The suspect: the newest document in what failed that this node never ran (one
                    # per report; if the node still fails without it, its next report names the next).
                    had = set(state["acked_docs"] or [])
                    suspects = sorted((int(v) for v in failed.get("docs") or [] if int(v) not in had), reverse=True)
                    for doc_version in suspects[:1]:
                        row = uow.config.doc(doc_version)
                        if row is None or row["state"] not in ("canary", "active"):
                            continue
                        reason = f"node {node_id} ({node.name}) could not apply version {version}: {error}"
                        uow.config.update_doc(row["version"], state="halted", halted_reason=reason, changed_at=now)
                        entries.append(AuditEntry(
                            actor="system:config", action="config.halted", subject=f"config:{row['version']}",
                            domain=node.domain, cause=reason,
                            details={"version": row["version"], "scope": row["scope"], "node": node_id}))
            if changed:
                state["updated_at"] = now
                uow.config.put_node_state(state)
            if entries:
                uow.audit.append(entries, now)
            docs = uow.config.docs()
            layers = applicable_versions(docs, node_id, node.domain, node.labels, state["acked_docs"] or [])
            if changed or entries:
                uow.commit()
                if any(e.action == "config.halted" for e in entries):
                    self._changed()
        return {"version": max((r["version"] for r in layers), default=0),
                "docs": [r["version"] for r in layers],
                "config": merge(r["document"] for r in layers)}
