"""Elastic node pools: create and inspect them, and the autoscaler pass that sizes them.

The decision itself is pure (`domain/pools.plan_scaling`); this service gathers its inputs (the
pool, its members and their nodes, the tasks that wait, the domain's quota), carries it out
through a provider (`providers/`: local processes or SSH), and records it: every change of a
pool's size is an audit record (`pool.scaled`) with the demand signal that caused it, and the
last decision (target, reason, signal) stays on the pool for `pool ls|show`.

How a started agent becomes a member's node: it joins with a single-use join token made for it
and the label `pool-member=<member id>`; the pass links the first node carrying that label.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from polyfabric.domain.access import ALL_DOMAINS, Principal, Role, authorize
from polyfabric.domain.errors import Conflict, NotFound, ValidationError
from polyfabric.domain.node_states import NodeState, Trigger
from polyfabric.domain.pools import (
    MemberState,
    PoolMember,
    PoolSpec,
    ScalingDecision,
    WaitingTask,
    plan_scaling,
    validate_pool,
)
from polyfabric.domain.resources import Resources
from polyfabric.services.context import ServiceContext
from polyfabric.services.domains import ensure_domain
from polyfabric.services.ports import AuditEntry, AuditQuery

__all__ = ["AgentLaunch", "PoolProvider", "PoolService"]

log = logging.getLogger("polyfabric.pools")

MEMBER_LABEL = "pool-member"
POOL_LABEL = "pool"
_SYSTEM = Principal("system", "autoscaler", "autoscaler", Role.ADMIN, (ALL_DOMAINS,))


@dataclass(frozen=True)
class AgentLaunch:
    """Everything a provider needs to start one member's agent."""

    pool: str
    member_id: str
    join_token: str
    coordinator_urls: tuple[str, ...]
    labels: dict[str, str]
    slots: int
    capacity: Resources
    provider_config: dict[str, Any] = field(default_factory=dict)
    host_load: dict[str, int] = field(default_factory=dict)  # ssh: live members per host

    def agent_args(self, data_dir: object) -> list[str]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        args = ["--coordinator", ",".join(self.coordinator_urls), "--data-dir", str(data_dir),
                "--name", f"{self.pool}-{self.member_id}", "--labels", labels, "--slots", str(self.slots),
                "--cpu", f"{self.capacity.cpu_millis}m", "--memory", str(self.capacity.memory_bytes),
                "--gpus", str(self.capacity.gpus)]
        return args + [str(a) for a in self.provider_config.get("agent_args", [])]


class PoolProvider(Protocol):
    name: str

    def start(self, launch: AgentLaunch) -> dict[str, Any]: ...
    def stop(self, handle: dict[str, Any], grace_s: float = 5.0, config: dict[str, Any] | None = None) -> None: ...


def _spec(row: dict[str, Any]) -> PoolSpec:
    return PoolSpec(
        name=row["name"], domain=row["domain"], provider=row["provider"], min_nodes=row["min_nodes"],
        max_nodes=row["max_nodes"], labels=dict(row["labels"] or {}), idle_s=row["idle_s"],
        scale_up_after_s=row["scale_up_after_s"], start_timeout_s=row["start_timeout_s"], slots=row["slots"],
        capacity=Resources(cpu_millis=int(row["cpu_millis"]), memory_bytes=int(row["memory_bytes"]),
                           gpus=int(row["gpus"]), slots=int(row["slots"])),
        paused=bool(row["paused"]))


def pool_out(row: dict[str, Any], members: list[dict[str, Any]]) -> dict[str, Any]:
    """A pool as the API shows it (the provider config without anything secret: it holds none)."""
    alive = [m for m in members if MemberState(m["state"]).alive]
    counts: dict[str, int] = {}
    for m in members:
        counts[m["state"]] = counts.get(m["state"], 0) + 1
    return {
        "name": row["name"], "domain": row["domain"], "provider": row["provider"], "min": row["min_nodes"],
        "max": row["max_nodes"], "labels": row["labels"], "idle_s": row["idle_s"],
        "scale_up_after_s": row["scale_up_after_s"], "start_timeout_s": row["start_timeout_s"],
        "slots": row["slots"], "cpu_millis": row["cpu_millis"], "memory_bytes": row["memory_bytes"],
        "gpus": row["gpus"], "paused": row["paused"], "size": len(alive), "target": row["target"],
        "reason": row["last_reason"], "signal": row["last_signal"], "decided_at": row["last_decision_at"],
        "members_by_state": counts, "hosts": list((row["provider_config"] or {}).get("hosts") or []),
        "created_at": row["created_at"], "created_by": row["created_by"],
    }


def member_out(row: dict[str, Any]) -> dict[str, Any]:
    handle = row["handle"] or {}
    return {"id": row["id"], "pool": row["pool"], "state": row["state"], "node_id": row["node_id"],
            "started_at": row["started_at"], "updated_at": row["updated_at"], "idle_since": row["idle_since"],
            "host": handle.get("host", "local"), "pid": handle.get("pid"), "error": row["error"]}


class PoolService:
    """Pools for operators (create, list, show, pause, resume, resize, rm, quotas) and the
    autoscaler's pass (`autoscale_once`, run by the leader's AutoscalerController)."""

    def __init__(self, ctx: ServiceContext, *, waiting: Callable[[float], list[tuple[str, str, Resources,
                                                                                     dict[str, str]]]],
                 attempts_on: Callable[[str], int], nodes: Any, tokens: Any,
                 released_at: Callable[[str], float | None] = lambda node_id: None) -> None:
        self._ctx = ctx
        self._waiting = waiting
        self._attempts_on = attempts_on
        self._released_at = released_at
        self._nodes = nodes  # NodeService: system transitions (drain)
        self._tokens = tokens  # TokenService: a single-use join token per member
        self.providers: dict[str, PoolProvider] = {}
        self.coordinator_urls: tuple[str, ...] = ()
        self._first_seen: dict[str, float] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # pool -> (consecutive failed starts, retry after)
        self._lock = threading.Lock()

    # -- operators ----------------------------------------------------------------------------

    def create(self, principal: Principal, *, name: str, domain: str, provider: str, min_nodes: int,
               max_nodes: int, labels: dict[str, str], idle_s: float, scale_up_after_s: float,
               start_timeout_s: float, slots: int, cpu_millis: int, memory_bytes: int, gpus: int,
               provider_config: dict[str, Any]) -> dict[str, Any]:
        authorize(principal, "pool.manage", domain)
        for key, value in labels.items():
            if key in (MEMBER_LABEL,) or any(c in f"{key}{value}" for c in ",="):
                raise ValidationError(f"pool label {key}={value!r} is not allowed (reserved key, or ',' / '=')")
        labels = {**labels, POOL_LABEL: name}
        spec = PoolSpec(name=name, domain=domain, provider=provider, min_nodes=min_nodes, max_nodes=max_nodes,
                        labels=labels, idle_s=idle_s, scale_up_after_s=scale_up_after_s,
                        start_timeout_s=start_timeout_s, slots=slots,
                        capacity=Resources(cpu_millis=cpu_millis, memory_bytes=memory_bytes, gpus=gpus, slots=slots))
        validate_pool(spec)
        if cpu_millis <= 0 or memory_bytes <= 0 or gpus < 0:
            raise ValidationError("--cpu and --memory must be positive, --gpus >= 0")
        if provider == "ssh" and not provider_config.get("hosts"):
            raise ValidationError("an ssh pool needs --hosts HOST[:PORT],...")
        if provider not in self.providers:
            raise ValidationError(f"provider {provider!r} is not available on this coordinator")
        now = self._ctx.clock.now()
        row = {"name": name, "domain": domain, "provider": provider, "min_nodes": min_nodes, "max_nodes": max_nodes,
               "labels": labels, "idle_s": idle_s, "scale_up_after_s": scale_up_after_s,
               "start_timeout_s": start_timeout_s, "slots": slots, "cpu_millis": cpu_millis,
               "memory_bytes": memory_bytes, "gpus": gpus, "provider_config": provider_config, "paused": False,
               "target": min_nodes, "last_reason": "created", "last_signal": {}, "last_decision_at": None,
               "created_at": now, "created_by": principal.actor}
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)
            if uow.pools.get(name) is not None:
                raise Conflict(f"pool {name!r} exists")
            entries = ensure_domain(uow, domain, principal, now)
            uow.pools.add(row)
            entries.append(AuditEntry(actor=principal.actor, action="pool.created", subject=f"pool:{name}",
                                      domain=domain, cause="operator request",
                                      details={k: v for k, v in row.items() if k not in ("last_signal",)}))
            uow.audit.append(entries, now)
            uow.commit()
        return pool_out(row, [])

    def list(self, principal: Principal) -> list[dict[str, Any]]:
        authorize(principal, "pool.read")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            rows = [r for r in uow.pools.list() if principal.has_domain(r["domain"])]
            members = uow.pools.members()
        by_pool: dict[str, list[dict[str, Any]]] = {}
        for m in members:
            by_pool.setdefault(m["pool"], []).append(m)
        return [pool_out(r, by_pool.get(r["name"], [])) for r in rows]

    def show(self, principal: Principal, name: str) -> dict[str, Any]:
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            row = uow.pools.get(name)
            if row is None or not principal.has_domain(row["domain"]):
                authorize(principal, "pool.read")
                raise NotFound(f"no pool {name!r}")
            authorize(principal, "pool.read", row["domain"])
            members = uow.pools.members(name)
            events = uow.audit.query(AuditQuery(subject=f"pool:{name}", action="pool.scaled", limit=10_000))[-20:]
        out = pool_out(row, members)
        out["members"] = [member_out(m) for m in members]
        out["decisions"] = [_decision_out(e) for e in events]
        return out

    def update(self, principal: Principal, name: str, *, paused: bool | None = None, min_nodes: int | None = None,
               max_nodes: int | None = None, idle_s: float | None = None) -> dict[str, Any]:
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)
            row = uow.pools.get(name, for_update=True)
            if row is None:
                raise NotFound(f"no pool {name!r}")
            authorize(principal, "pool.manage", row["domain"])
            changes: dict[str, Any] = {}
            if paused is not None:
                changes["paused"] = paused
            if min_nodes is not None:
                changes["min_nodes"] = min_nodes
            if max_nodes is not None:
                changes["max_nodes"] = max_nodes
            if idle_s is not None:
                changes["idle_s"] = idle_s
            if not changes:
                raise ValidationError("nothing to change")
            validate_pool(replace(_spec(row), **{"min_nodes": changes.get("min_nodes", row["min_nodes"]),
                                                  "max_nodes": changes.get("max_nodes", row["max_nodes"]),
                                                  "idle_s": changes.get("idle_s", row["idle_s"])}))
            uow.pools.update(name, **changes)
            action = {True: "pool.paused", False: "pool.resumed"}.get(paused, "pool.updated") \
                if set(changes) == {"paused"} else "pool.updated"
            uow.audit.append([AuditEntry(actor=principal.actor, action=action, subject=f"pool:{name}",
                                         domain=row["domain"], cause="operator request", details=changes)], now)
            members = uow.pools.members(name)
            uow.commit()
        row.update(changes)
        return pool_out(row, members)

    def remove(self, principal: Principal, name: str) -> None:
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)
            row = uow.pools.get(name, for_update=True)
            if row is None:
                raise NotFound(f"no pool {name!r}")
            authorize(principal, "pool.manage", row["domain"])
            alive = [m for m in uow.pools.members(name) if MemberState(m["state"]).alive]
            if alive:
                raise Conflict(f"pool {name!r} still has {len(alive)} node(s): scale it to zero first "
                               f"(polyfabric pool set {name} --min 0 --max 0) and wait until they retire")
            uow.pools.delete(name)
            uow.audit.append([AuditEntry(actor=principal.actor, action="pool.removed", subject=f"pool:{name}",
                                         domain=row["domain"], cause="operator request", details={})], now)
            uow.commit()

    def set_quota(self, principal: Principal, domain: str, max_nodes: int | None) -> dict[str, Any]:
        authorize(principal, "quota.manage", domain)
        if max_nodes is not None and max_nodes < 0:
            raise ValidationError("--max-nodes must be >= 0")
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)
            entries = ensure_domain(uow, domain, principal, now)
            uow.pools.set_quota(domain, max_nodes, now, principal.actor)
            entries.append(AuditEntry(actor=principal.actor, action="domain.quota_set", subject=f"domain:{domain}",
                                      domain=domain, cause="operator request", details={"max_nodes": max_nodes}))
            uow.audit.append(entries, now)
            uow.commit()
            used = uow.pools.domain_nodes(domain)
        return {"domain": domain, "max_nodes": max_nodes, "nodes": used}

    def quotas(self, principal: Principal) -> list[dict[str, Any]]:
        authorize(principal, "pool.read")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            rows = [r for r in uow.pools.quotas() if principal.has_domain(r["domain"])]
            return [{"domain": r["domain"], "max_nodes": r["max_nodes"], "nodes": uow.pools.domain_nodes(r["domain"]),
                     "updated_at": r["updated_at"], "updated_by": r["updated_by"]} for r in rows]

    # -- the autoscaler ---------------------------------------------------------------------

    def autoscale_once(self) -> list[ScalingDecision]:
        """One pass over every pool (leader only). Returns the decisions that changed something."""
        with self._lock:
            return self._autoscale()

    def _autoscale(self) -> list[ScalingDecision]:
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            rows = uow.pools.list()
            if not rows:
                self._first_seen.clear()
                return []
            members = uow.pools.members(states=tuple(s.value for s in MemberState if s.alive))
            unlinked = [m["id"] for m in members if m["node_id"] is None]
            linked = uow.pools.nodes_labelled(MEMBER_LABEL, unlinked)
            node_states = {}
            for m in members:
                node_id = m["node_id"] or linked.get(m["id"], (None, None))[0]
                if node_id is not None:
                    node = uow.nodes.get(node_id)
                    node_states[m["id"]] = (node_id, ("revoked" if node.revoked else node.state.value)
                                            if node is not None else "gone")
            quotas = {r["domain"]: (uow.pools.quota(r["domain"]), uow.pools.domain_nodes(r["domain"])) for r in rows}
        waiting = self._waiting_now(now)
        by_pool: dict[str, list[dict[str, Any]]] = {}
        for m in members:
            by_pool.setdefault(m["pool"], []).append(m)
        decided = []
        for row in rows:
            decision = self._one_pool(row, by_pool.get(row["name"], []), node_states, waiting, quotas, now)
            if decision is not None and decision.changes:
                decided.append(decision)
        return decided

    def _waiting_now(self, now: float) -> list[WaitingTask]:
        tasks = self._waiting(now)
        seen = self._first_seen
        current = set()
        out = []
        for task_id, domain, resources, constraints in tasks:
            current.add(task_id)
            first = seen.setdefault(task_id, now)
            out.append(WaitingTask(task_id, domain, resources, constraints, now - first))
        for gone in set(seen) - current:
            del seen[gone]
        return out

    def _one_pool(self, row: dict[str, Any], members: list[dict[str, Any]],
                  node_states: dict[str, tuple[str, str]], waiting: list[WaitingTask],
                  quotas: dict[str, tuple[int | None, int]], now: float) -> ScalingDecision | None:
        spec = _spec(row)
        provider = self.providers.get(spec.provider)
        view: list[PoolMember] = []
        for m in members:
            state = MemberState(m["state"])
            node_id, node_state = node_states.get(m["id"], (m["node_id"], None))
            changes: dict[str, Any] = {}
            if node_id is not None and m["node_id"] is None:
                changes["node_id"] = node_id
            if state is MemberState.STARTING and node_state == NodeState.ACTIVE.value:
                state = MemberState.ACTIVE
                changes["state"] = state.value
                self._failures.pop(spec.name, None)
            if node_state in (NodeState.RETIRED.value, "revoked", "gone") and state.alive:
                self._stop(provider, m, row)
                state = MemberState.STOPPED if state is MemberState.DRAINING else MemberState.FAILED
                changes.update(state=state.value, error=None if state is MemberState.STOPPED
                               else f"its node became {node_state}")
            alive = getattr(provider, "alive", None)
            if state.alive and alive is not None and m["handle"] and not alive(m["handle"]):
                # Its process is gone (crashed, killed): a failed member, replaced by the next decision.
                state = MemberState.FAILED
                changes.update(state=state.value, error="its agent process exited")
                self._failed_start(spec.name, now)
            attempts = self._attempts_on(node_id) if node_id is not None else 0
            idle_since = m["idle_since"]
            if node_state == NodeState.ACTIVE.value and attempts == 0:
                released = self._released_at(node_id) if node_id is not None else None
                if idle_since is None:
                    idle_since = now
                    changes["idle_since"] = now
                elif released is not None and released > idle_since:
                    # It worked between two looks (a task placed and ended within a second):
                    # idle only since that attempt ended.
                    idle_since = changes["idle_since"] = released
            elif idle_since is not None:
                idle_since = None
                changes["idle_since"] = None
            if changes:
                self._save_member(m["id"], changes, now)
            if state.alive:
                view.append(PoolMember(id=m["id"], state=state, started_at=m["started_at"], node_id=node_id,
                                       node_active=node_state == NodeState.ACTIVE.value, attempts=attempts,
                                       idle_since=idle_since))
        quota, used = quotas.get(spec.domain, (None, 0))
        quota_left = None if quota is None else max(quota - used, 0)
        decision = plan_scaling(spec, view, waiting, now=now, quota_left=quota_left)
        failures, retry_at = self._failures.get(spec.name, (0, 0.0))
        if decision.add and now < retry_at:  # a provider that keeps failing is not hammered
            decision = replace(decision, add=0, target=decision.target - decision.add,
                               reason=f"{decision.reason}; held back {retry_at - now:.0f}s more after "
                                      f"{failures} failed start(s)")
        if decision.changes:
            self._carry_out(spec, row, decision, {m["id"]: m for m in members}, now)
        if decision.changes or decision.reason != row["last_reason"] or decision.target != row["target"]:
            with self._ctx.store.unit_of_work() as uow:
                self._ctx.leadership.fence(uow)
                uow.pools.update(spec.name, target=decision.target, last_reason=decision.reason,
                                 last_signal=dict(decision.signal), last_decision_at=now)
                if decision.changes:
                    uow.audit.append([AuditEntry(
                        actor="system:autoscaler", action="pool.scaled", subject=f"pool:{spec.name}",
                        domain=spec.domain, cause=decision.reason,
                        details={"add": decision.add, "drain": list(decision.drain),
                                 "gave_up": list(decision.give_up), "target": decision.target,
                                 "signal": dict(decision.signal)})], now)
                uow.commit()
        return decision

    def _carry_out(self, spec: PoolSpec, row: dict[str, Any], decision: ScalingDecision,
                   members: dict[str, dict[str, Any]], now: float) -> None:
        provider = self.providers.get(spec.provider)
        for member_id in decision.give_up:
            self._failed_start(spec.name, now)
            self._stop(provider, members[member_id], row)
            self._save_member(member_id, {"state": MemberState.FAILED.value,
                                          "error": f"did not come up within {spec.start_timeout_s:g}s"}, now)
        for member_id in decision.drain:
            node_id = members[member_id]["node_id"]
            if node_id is None:
                continue
            done = self._nodes.system_transition(
                node_id, NodeState.DRAINING, expect={NodeState.ACTIVE}, trigger=Trigger.DEMAND,
                cause=f"autoscaler: {decision.reason}", actor="system:autoscaler",
                extra={"pool": spec.name, "member": member_id})
            if done is not None:
                self._save_member(member_id, {"state": MemberState.DRAINING.value}, now)
        if decision.add and provider is not None:
            hosts: dict[str, int] = {}
            for m in members.values():
                if MemberState(m["state"]).alive and (m["handle"] or {}).get("host"):
                    hosts[m["handle"]["host"]] = hosts.get(m["handle"]["host"], 0) + 1
            for _ in range(decision.add):
                self._start_member(provider, spec, row, hosts, now)

    def _start_member(self, provider: PoolProvider, spec: PoolSpec, row: dict[str, Any], hosts: dict[str, int],
                      now: float) -> None:
        member_id = self._ctx.ids.new_id("pm")
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)
            uow.pools.add_member({"id": member_id, "pool": spec.name, "state": MemberState.STARTING.value,
                                  "node_id": None, "handle": {}, "started_at": now, "updated_at": now,
                                  "idle_since": None, "error": None})
            uow.commit()
        try:
            issued = self._tokens.create_join(_SYSTEM, domain=spec.domain, ttl_s=spec.start_timeout_s + 60, uses=1,
                                              description=f"pool {spec.name} member {member_id}")
            launch = AgentLaunch(pool=spec.name, member_id=member_id, join_token=issued.token,
                                 coordinator_urls=self.coordinator_urls,
                                 labels={**spec.labels, MEMBER_LABEL: member_id}, slots=spec.slots,
                                 capacity=spec.capacity, provider_config=dict(row["provider_config"] or {}),
                                 host_load=dict(hosts))
            handle = provider.start(launch)
        except Exception as exc:  # a provider's failure is the pool's news, not the loop's
            log.warning("pool %s: starting a node failed: %s", spec.name, exc)
            self._failed_start(spec.name, now)
            self._save_member(member_id, {"state": MemberState.FAILED.value, "error": str(exc)[:500]}, now,
                              audit=("pool.start_failed", spec, str(exc)[:500]))
            return
        if handle.get("host"):
            hosts[handle["host"]] = hosts.get(handle["host"], 0) + 1
        self._save_member(member_id, {"handle": handle}, now)

    def _failed_start(self, pool: str, now: float) -> None:
        """Back off exponentially (5 s, 10 s, ... 5 min) after consecutive failed starts."""
        failures = self._failures.get(pool, (0, 0.0))[0] + 1
        self._failures[pool] = (failures, now + min(5.0 * 2 ** (failures - 1), 300.0))

    def _stop(self, provider: PoolProvider | None, member: dict[str, Any], row: dict[str, Any]) -> None:
        if provider is None or not member["handle"]:
            return
        try:
            provider.stop(member["handle"], 5.0, dict(row["provider_config"] or {}))
        except Exception as exc:
            log.warning("pool %s: stopping member %s failed: %s", row["name"], member["id"], exc)

    def _save_member(self, member_id: str, changes: dict[str, Any], now: float,
                     audit: tuple[str, PoolSpec, str] | None = None) -> None:
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)
            uow.pools.update_member(member_id, updated_at=now, **changes)
            if audit is not None:
                action, spec, error = audit
                uow.audit.append([AuditEntry(actor="system:autoscaler", action=action, subject=f"pool:{spec.name}",
                                             domain=spec.domain, cause=error, details={"member": member_id})], now)
            uow.commit()


def _decision_out(record: Any) -> dict[str, Any]:
    return {"seq": record.seq, "at": record.at, "cause": record.cause, "details": record.details}
