"""Node use cases: join, hello, heartbeat, lifecycle actions by operators, revocation, reads.

Every lifecycle change goes through `domain.node_states.transition` and is written in the same
transaction as its audit record. Heartbeats take the fast path through the in-memory liveness
table and touch the database only when they change the node's state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from polyfabric.domain.access import Principal, authorize
from polyfabric.domain.errors import Conflict, NotAuthenticated, NotFound, NotPermitted, ValidationError
from polyfabric.domain.ids import NODE_ID_RE, node_id_from_public_key, validate_node_name
from polyfabric.domain.node_states import (
    LIVE_STATES,
    NodeState,
    NodeTransition,
    Trigger,
    operator_target,
    transition,
)
from polyfabric.domain.nodes import Node
from polyfabric.domain.resources import Resources
from polyfabric.services.context import ServiceContext
from polyfabric.services.liveness import NodeLiveness
from polyfabric.services.ports import AuditEntry, UnitOfWork
from polyfabric.services.tokens import TokenService

__all__ = ["NodeService", "Registration", "transition_entry"]

_MAX_LABELS = 64


@dataclass(frozen=True, slots=True)
class Registration:
    """What an agent declares when it joins."""

    public_key: bytes
    name: str
    labels: dict[str, str]
    capacity: Resources
    facts: dict[str, Any] = field(default_factory=dict)
    agent_version: str = ""


def transition_entry(event: NodeTransition, domain: str) -> AuditEntry:
    return AuditEntry(
        actor=event.actor, action="node.transition", subject=f"node:{event.node_id}", domain=domain,
        cause=event.cause,
        details={"from": event.from_state.value, "to": event.to_state.value, "trigger": event.trigger.value},
    )


def _validate_labels(labels: dict[str, str]) -> None:
    if len(labels) > _MAX_LABELS:
        raise ValidationError(f"too many labels: {len(labels)} (at most {_MAX_LABELS})")
    for key, value in labels.items():
        if not key or len(key) > 63 or not all(c.isalnum() or c in "._-/" for c in key):
            raise ValidationError(f"label key {key!r} is invalid: use 1-63 letters, digits and . _ - /")
        if len(value) > 63 or not all(c.isalnum() or c in "._-" for c in value):
            raise ValidationError(f"label {key}={value!r}: the value must be up to 63 letters, digits, . _ -")


class NodeService:
    def __init__(self, ctx: ServiceContext, tokens: TokenService) -> None:
        self._ctx = ctx
        self._tokens = tokens
        # Told when a node's declaration changed what the scheduler sees of it (labels, capacity,
        # its owner's advertised policy): the runtime reads the nodes again on its next pass.
        self.on_declared: Callable[[str], None] | None = None

    # -- start-up ---------------------------------------------------------------------------

    def load_liveness(self) -> int:
        """Fill the in-memory table from the store; every live node gets a fresh grace period."""
        now = self._ctx.clock.now()
        count = 0
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            after = None
            while True:
                batch = uow.nodes.list(after=after, limit=2000)
                if not batch:
                    break
                for node in batch:
                    self._ctx.liveness.put(self._liveness_entry(node, now, uow))
                    count += 1
                after = batch[-1].name
        return count

    def _liveness_entry(self, node: Node, now: float, uow: UnitOfWork) -> NodeLiveness:
        return NodeLiveness(
            node_id=node.id, domain=node.domain, public_key=node.public_key, state=node.state,
            revoked=node.revoked, last_seen=now, telemetry=node.telemetry, health=node.health,
            health_ok=all(h.get("ok", True) for h in node.health), conditions=node.conditions,
            down_times=uow.nodes.down_times(node.id),
        )

    # -- agent side -------------------------------------------------------------------------

    def register(self, reg: Registration, join_token: str) -> Node:
        """Join a node. All or nothing: a bad token or a clash creates nothing."""
        node_id = node_id_from_public_key(reg.public_key)
        validate_node_name(reg.name)
        _validate_labels(reg.labels)
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            existing = uow.nodes.get(node_id)
            if existing is not None:
                if existing.revoked:
                    raise NotPermitted(f"node {node_id} was revoked and cannot join again")
                raise Conflict(f"node {node_id} is already registered (as {existing.name!r}); "
                               "a restarted agent reconnects with its key, no join token needed")
            holder = uow.nodes.by_name(reg.name)
            if holder is not None:
                raise Conflict(f"the name {reg.name!r} is taken by node {holder.id}, which has another key")
            token = self._tokens.check_join(uow, join_token, now)
            node = Node(
                id=node_id, name=reg.name, domain=token.domain, public_key=reg.public_key,
                labels=dict(reg.labels), capacity=reg.capacity, state=NodeState.PENDING,
                state_since=now, registered_at=now, agent_version=reg.agent_version,
            )
            uow.nodes.add(node, reg.facts, token.id)
            actor = f"node:{node_id}"
            uow.audit.append([
                AuditEntry(actor=actor, action="token.used", subject=f"token:{token.id}", domain=token.domain,
                           cause="node registration", details={"node": node_id}),
                AuditEntry(actor=actor, action="node.registered", subject=f"node:{node_id}",
                           domain=token.domain, cause=f"joined with token {token.id}",
                           details={"name": reg.name, "labels": reg.labels,
                                    "capacity": reg.capacity.to_dict(), "agent_version": reg.agent_version}),
            ], now)
            uow.commit()
        self._ctx.liveness.put(NodeLiveness(node.id, node.domain, node.public_key, node.state, False, now))
        return node

    def resolve_key(self, node_id: str) -> bytes | None:
        """The public key a node signs with; None for unknown nodes. Revoked nodes are refused."""
        entry = self._ctx.liveness.get(node_id)
        if entry is None:
            if not NODE_ID_RE.match(node_id):
                return None
            with self._ctx.store.unit_of_work(readonly=True) as uow:
                node = uow.nodes.get(node_id)
                if node is None:
                    return None
                entry = self._liveness_entry(node, self._ctx.clock.now(), uow)
            self._ctx.liveness.put(entry)
        if entry.revoked:
            raise NotAuthenticated(f"node {node_id} was revoked")
        return entry.public_key

    def hello(self, node_id: str, reg: Registration) -> Node:
        """A known agent (re)connects: refresh what it declares; labels and capacity may change."""
        _validate_labels(reg.labels)
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            node = self._get(uow, node_id)
            changes: dict[str, Any] = {}
            if node.labels != reg.labels:
                changes["labels"] = dict(reg.labels)
            if node.capacity != reg.capacity:
                changes["capacity"] = reg.capacity
            if node.agent_version != reg.agent_version:
                changes["agent_version"] = reg.agent_version
            if changes:
                uow.nodes.update(node.with_changes(**changes), expected_version=node.version)
                uow.audit.append([AuditEntry(
                    actor=f"node:{node_id}", action="node.updated", subject=f"node:{node_id}",
                    domain=node.domain, cause="agent reconnected with a changed declaration",
                    details={k: (v.to_dict() if isinstance(v, Resources) else v) for k, v in changes.items()},
                )], now)
            advertised = reg.facts.get("owner_policy")
            owner_changed = uow.nodes.facts(node_id).get("owner_policy") != advertised
            if owner_changed:
                # What the node's owner accepts changed (issue 6): the scheduler follows it.
                uow.audit.append([AuditEntry(
                    actor=f"node:{node_id}", action="node.owner_policy", subject=f"node:{node_id}",
                    domain=node.domain, cause="the agent advertised its owner's policy",
                    details={"owner_policy": advertised})], now)
            uow.nodes.set_facts(node_id, reg.facts)
            uow.commit()
            node = self._get(uow, node_id)
        if (changes or owner_changed) and self.on_declared is not None:
            self.on_declared(node_id)
        return node

    def heartbeat(self, node_id: str, telemetry: dict[str, Any],
                  health: list[dict[str, Any]] | None) -> NodeLiveness:
        """Fast path: update memory. The caller runs `settle()` when `needs_settle` says so."""
        now = self._ctx.clock.now()
        entry = self._ctx.liveness.beat(node_id, now, telemetry, health)
        if entry is None:
            raise NotFound(f"node {node_id} is not registered")
        if entry.revoked:
            raise NotAuthenticated(f"node {node_id} was revoked")
        return entry

    @staticmethod
    def needs_settle(entry: NodeLiveness) -> bool:
        """A heartbeat from a Pending or Down node changes its state: that must be written now."""
        return entry.state in (NodeState.PENDING, NodeState.DOWN)

    def settle(self, node_id: str) -> Node:
        """Apply the state change a heartbeat implies (Pending -> Active, Down -> back).
        A concurrent change of the same node (an operator action) is retried on fresh state."""
        for attempt in range(3):
            try:
                return self._settle(node_id)
            except Conflict:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _settle(self, node_id: str) -> Node:
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            node = self._get(uow, node_id)
            if node.state == NodeState.PENDING:
                target, cause = NodeState.ACTIVE, "first heartbeat received"
            elif node.state == NodeState.DOWN:
                target = node.resume_state if node.resume_state in LIVE_STATES else NodeState.ACTIVE
                cause = "heartbeats resumed"
            else:
                self._ctx.liveness.set_state(node_id, node.state)
                return node
            assert target is not None
            event = transition(node_id, node.state, target, trigger=Trigger.HEALTH if node.state ==
                               NodeState.DOWN else Trigger.SYSTEM, cause=cause, actor="system:health", now=now)
            node = self._apply(uow, node, event)
            uow.commit()
        return node

    # -- health controller ------------------------------------------------------------------

    def mark_down(self, node_id: str, silence: float) -> Node | None:
        """The failure detector's verdict: silent past the bound. Idempotent."""
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)  # a leader-only write (services/leadership.py)
            node = uow.nodes.get(node_id)
            if node is None or node.state not in (*LIVE_STATES, NodeState.PENDING):
                if node is not None:
                    self._ctx.liveness.set_state(node_id, node.state)
                return None
            event = transition(
                node_id, node.state, NodeState.DOWN, trigger=Trigger.HEALTH, actor="system:health",
                cause=f"no heartbeat for {silence:.1f}s (Down bound {self._ctx.detector.down_after:g}s)",
                now=now,
            )
            node = self._apply(uow, node, event)
            times = [*uow.nodes.down_times(node_id), now][-20:]
            uow.nodes.set_down_times(node_id, times)
            uow.commit()
        entry = self._ctx.liveness.get(node_id)
        if entry is not None:
            entry.down_times = times
        return node

    def save_conditions(self, changes: list[tuple[str, list[dict[str, Any]], list[str]]]) -> None:
        """Persist recomputed conditions; audit the ones whose status flipped."""
        if not changes:
            return
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            entries = []
            for node_id, conditions, flipped in changes:
                node = uow.nodes.get(node_id)
                if node is None:
                    continue
                uow.nodes.set_conditions(node_id, conditions, self._health_of(node_id))
                if flipped:
                    entries.append(AuditEntry(
                        actor="system:health", action="node.condition", subject=f"node:{node_id}",
                        domain=node.domain, cause="; ".join(flipped),
                        details={"conditions": {c["type"]: c["status"] for c in conditions}},
                    ))
            uow.audit.append(entries, now)
            uow.commit()

    def _health_of(self, node_id: str) -> list[dict[str, Any]]:
        entry = self._ctx.liveness.get(node_id)
        return entry.health if entry else []

    def flush_liveness(self) -> int:
        rows = self._ctx.liveness.take_dirty()
        if rows:
            with self._ctx.store.unit_of_work() as uow:
                uow.nodes.record_liveness(rows)
                uow.commit()
        return len(rows)

    # -- operator side ----------------------------------------------------------------------

    def act(self, principal: Principal, ref: str, verb: str, reason: str,
            deadline_s: float | None = None) -> Node:
        """cordon / uncordon / suspend / resume / drain / retire / quarantine, by an operator.

        `deadline_s` (drain only): after that many seconds the attempts still on the node are moved
        to other nodes. Draining a node that is already Draining sets (or replaces) its deadline."""
        target = operator_target(verb)
        if deadline_s is not None and (verb != "drain" or not math.isfinite(deadline_s) or deadline_s < 0):
            raise ValidationError("a deadline is a number of seconds >= 0, and only `drain` takes one")
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)  # a leader-only write (services/leadership.py)
            node = self._find(uow, ref)
            authorize(principal, "node.manage", node.domain)
            if node.revoked:
                raise Conflict(f"node {node.id} was revoked")
            extra: dict[str, Any] = {"action": verb}
            if deadline_s is not None:
                extra["deadline_s"] = deadline_s
            if verb == "drain" and node.state == NodeState.DRAINING and deadline_s is not None:
                updated = node.with_changes(drain_deadline=now + deadline_s)
                uow.nodes.update(updated, expected_version=node.version)
                uow.audit.append([AuditEntry(
                    actor=principal.actor, action="node.drain_deadline", subject=f"node:{node.id}",
                    domain=node.domain, cause=reason or "operator set a drain deadline",
                    details={"deadline": now + deadline_s, "deadline_s": deadline_s})], now)
                uow.commit()
                return updated.with_changes(version=node.version + 1)
            event = transition(node.id, node.state, target, trigger=Trigger.OPERATOR,
                               cause=reason or f"operator {verb}", actor=principal.actor, now=now)
            node = self._apply(uow, node, event, extra=extra,
                               drain_deadline=now + deadline_s if deadline_s is not None else None)
            uow.commit()
        return node

    # -- the lifecycle controller (quarantine, probation, drain completion) ------------------

    def system_transition(self, node_id: str, target: NodeState, *, expect: Collection[NodeState],
                          trigger: Trigger, cause: str, actor: str,
                          extra: dict[str, Any] | None = None) -> Node | None:
        """A transition the coordinator decides by itself, only if the node is still in one of the
        `expect`ed states (an operator may have acted since the decision). None: nothing done."""
        now = self._ctx.clock.now()
        try:
            with self._ctx.store.unit_of_work() as uow:
                self._ctx.leadership.fence(uow)  # a leader-only write (services/leadership.py)
                node = uow.nodes.get(node_id)
                if node is None or node.revoked or node.state not in expect:
                    if node is not None:
                        self._ctx.liveness.set_state(node_id, node.state)
                    return None
                event = transition(node_id, node.state, target, trigger=trigger, cause=cause, actor=actor,
                                   now=now)
                node = self._apply(uow, node, event, extra=extra)
                uow.commit()
        except Conflict:
            return None  # changed meanwhile: the next pass decides again on fresh state
        return node

    def peek(self, node_id: str) -> Node | None:
        """One node as stored (no authorization: for the controllers)."""
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            return uow.nodes.get(node_id)

    def in_state(self, state: NodeState) -> list[Node]:
        """Every node in one state (the store's state index; for the controllers)."""
        out: list[Node] = []
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            after = None
            while True:
                batch = uow.nodes.list(state=state.value, after=after, limit=2000)
                out.extend(batch)
                if len(batch) < 2000:
                    return out
                after = batch[-1].name

    def revoke(self, principal: Principal, ref: str, reason: str) -> Node:
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)  # a leader-only write (services/leadership.py)
            node = self._find(uow, ref)
            authorize(principal, "node.manage", node.domain)
            if node.revoked:
                raise Conflict(f"node {node.id} is already revoked")
            entries = [AuditEntry(actor=principal.actor, action="node.revoked", subject=f"node:{node.id}",
                                  domain=node.domain, cause=reason or "operator revoked the node")]
            changes: dict[str, Any] = {"revoked": True}
            if node.state != NodeState.RETIRED:
                event = transition(node.id, node.state, NodeState.RETIRED, trigger=Trigger.OPERATOR,
                                   cause=reason or "revoked", actor=principal.actor, now=now)
                entries.append(transition_entry(event, node.domain))
                changes.update(state=NodeState.RETIRED, state_since=now)
            uow.nodes.update(node.with_changes(**changes), expected_version=node.version)
            node = node.with_changes(**changes)
            uow.audit.append(entries, now)
            uow.commit()
        self._ctx.liveness.set_state(node.id, node.state, revoked=True)
        return node

    def _apply(self, uow: UnitOfWork, node: Node, event: NodeTransition,
               extra: dict[str, Any] | None = None, drain_deadline: float | None = None) -> Node:
        resume = node.state if event.to_state == NodeState.DOWN else None
        changes: dict[str, Any] = {"state": event.to_state, "state_since": event.at, "resume_state": resume}
        if event.to_state == NodeState.DRAINING and event.from_state != NodeState.DOWN:
            changes["drain_deadline"] = drain_deadline
        elif event.to_state not in (NodeState.DRAINING, NodeState.DOWN):
            changes["drain_deadline"] = None  # a deadline lives as long as the drain (Down included)
        if event.to_state == NodeState.QUARANTINED:
            changes["quarantine"] = {"trigger": event.trigger.value, "reason": event.cause, "by": event.actor,
                                     "at": event.at, "released_at": None, "released_by": None}
        elif event.from_state == NodeState.QUARANTINED and node.quarantine:
            changes["quarantine"] = {**node.quarantine, "released_at": event.at, "released_by": event.actor}
        updated = node.with_changes(**changes)
        uow.nodes.update(updated, expected_version=node.version)
        entry = transition_entry(event, node.domain)
        if extra:
            entry = AuditEntry(entry.actor, entry.action, entry.subject, entry.cause, entry.domain,
                               {**(entry.details or {}), **extra})
        uow.audit.append([entry], event.at)
        self._ctx.liveness.set_state(node.id, event.to_state)
        return updated.with_changes(version=node.version + 1)

    # -- reads ------------------------------------------------------------------------------

    def get(self, principal: Principal, ref: str) -> tuple[Node, dict[str, Any]]:
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            node = self._find(uow, ref)
            authorize(principal, "node.read", node.domain)
            facts = uow.nodes.facts(node.id)
        return self._fresh(node), facts

    def list(self, principal: Principal, *, state: str | None = None, domain: str | None = None,
             label: dict[str, str] | None = None, after: str | None = None, limit: int = 500) -> list[Node]:
        authorize(principal, "node.read", domain)
        if state is not None and state not in NodeState.__members__.values():
            raise ValidationError(f"unknown node state {state!r}; states: "
                                  f"{', '.join(s.value for s in NodeState)}")
        scope = None if "*" in principal.domains else principal.domains
        out: list[Node] = []
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            cursor = after
            while len(out) < limit:
                batch = uow.nodes.list(state=state, domain=domain, domains=scope, after=cursor, limit=limit,
                                       labels=label or None)
                if not batch:
                    break
                out.extend(n for n in batch if not label or all(n.labels.get(k) == v for k, v in label.items()))
                cursor = batch[-1].name
                if len(batch) < limit:
                    break
        return [self._fresh(n) for n in out[:limit]]

    def _fresh(self, node: Node) -> Node:
        """Overlay what memory knows that the store has not been told yet."""
        entry = self._ctx.liveness.get(node.id)
        if entry is None or entry.heartbeats == 0:
            return node
        return node.with_changes(last_heartbeat_at=entry.last_seen, telemetry=entry.telemetry,
                                 health=entry.health, conditions=entry.conditions or node.conditions)

    def _find(self, uow: UnitOfWork, ref: str) -> Node:
        node = uow.nodes.get(ref) if NODE_ID_RE.match(ref) else None
        node = node or uow.nodes.by_name(ref)
        if node is None:
            raise NotFound(f"no node with id or name {ref!r}")
        return node

    def _get(self, uow: UnitOfWork, node_id: str) -> Node:
        node = uow.nodes.get(node_id)
        if node is None:
            raise NotFound(f"node {node_id} is not registered")
        return node
