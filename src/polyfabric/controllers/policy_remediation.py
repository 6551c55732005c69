"""The policy remediation controller: applies `remediation` policies' `cordon` and `quarantine`.

`domain.policy.remediation` says which remediation policies a node violates; the scheduler
enforces `action: block` by itself. This controller (leader only, every second) applies the
two actions that change the node's state:

* `cordon`: an Active node that violates goes to CORDONED (trigger `policy`).
* `quarantine`: an Active or Cordoned node that violates goes to QUARANTINED (trigger `policy`),
  and its attempts are queued again elsewhere ("evicted", like the lifecycle controller's).
  Quarantine wins when several policies are violated.

Each transition is audited with actor `system:policy` and a cause naming the scope, policy,
version and reason; its details carry `policy`, `version`, `scope`, `action`. A `mode: dry-run`
policy only audits what it would have done (`policy.dry_run`, once per node and policy version).

Cheap: a node is evaluated again only when what the rules see of it (name, domain, labels,
capacity, state) or the policy set changed; rules that read `now` are evaluated every pass. An
operator who uncordons a node that still violates gets it cordoned again: a policy is law until
it (or the node's labels) changes; try a rule with `mode: dry-run` first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from polyfabric.domain.node_states import NodeState, Trigger
from polyfabric.domain.policy import Evaluator, Finding, Policy, node_context, remediation
from polyfabric.services.context import ServiceContext
from polyfabric.services.nodes import NodeService
from polyfabric.services.ports import AuditEntry

__all__ = ["ACTOR", "PolicyRemediationController", "RemediationPass"]

log = logging.getLogger("polyfabric.remediation")

ACTOR = "system:policy"
_ACTS = ("cordon", "quarantine")
_TARGET = {"cordon": NodeState.CORDONED, "quarantine": NodeState.QUARANTINED}
_FROM = {"cordon": frozenset({NodeState.ACTIVE}),
         "quarantine": frozenset({NodeState.ACTIVE, NodeState.CORDONED})}


@dataclass
class RemediationPass:
    evaluated: int = 0
    acted: list[tuple[str, str, str]] = field(default_factory=list)  # (node, action, policy ref)
    would: list[tuple[str, str, str]] = field(default_factory=list)  # dry-run: (node, action, policy ref)


class PolicyRemediationController:
    name = "policy-remediation"

    def __init__(self, ctx: ServiceContext, nodes: NodeService, runtime: Any, *, period: float = 1.0) -> None:
        self._ctx = ctx
        self._nodes = nodes
        self._runtime = runtime
        self.period = period
        self._policy_key: tuple[tuple[str, int, str, str], ...] = ()
        self._seen: dict[str, tuple[Any, ...]] = {}  # node -> fingerprint last evaluated
        self._audited: set[tuple[str, str, int]] = set()  # dry-run (node, policy, version) already audited

    def _policies(self) -> list[Policy]:
        current = self._runtime.current_policies() if hasattr(self._runtime, "current_policies") else []
        return [p for p in current if p.kind == "remediation" and p.action in _ACTS]

    def run_once(self) -> RemediationPass:
        done = RemediationPass()
        policies = self._policies()
        key = tuple(sorted((p.name, p.version, p.mode, p.action) for p in policies))
        if key != self._policy_key:
            self._policy_key = key
            self._seen.clear()
        if not policies:
            return done
        timed = any("now" in rule.variables for p in policies for rule in (p.when, p.allow) if rule is not None)
        now = self._ctx.clock.now()
        ev = Evaluator()
        for node in self._all_nodes():
            if node.revoked or node.state in (NodeState.RETIRED, NodeState.PENDING):
                continue
            cap = node.capacity
            fingerprint = (node.name, node.domain, tuple(sorted(node.labels.items())), cap.cpu_millis,
                           cap.memory_bytes, cap.gpus, cap.slots, node.state)
            if not timed and self._seen.get(node.id) == fingerprint:
                continue
            self._seen[node.id] = fingerprint
            done.evaluated += 1
            variables = node_context(id=node.id, name=node.name, domain=node.domain, labels=node.labels,
                                     state=node.state.value, cpu=cap.cpu_millis, memory=cap.memory_bytes,
                                     gpus=cap.gpus, slots=cap.slots)
            violated = remediation(policies, variables, now, ev)
            if not violated:
                continue
            enforced = [(p, f) for p, f in violated if not p.dry_run]
            dry = [(p, f) for p, f in violated if p.dry_run]
            if dry:
                self._audit_dry_run(node.id, node.domain, node.state, dry, now, done)
            if enforced:
                self._act(node.id, node.state, enforced, done)
        return done

    def _all_nodes(self) -> list[Any]:
        out: list[Any] = []
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            after = None
            while True:
                batch = uow.nodes.list(after=after, limit=2000)
                out.extend(batch)
                if len(batch) < 2000:
                    return out
                after = batch[-1].name

    @staticmethod
    def _pick(violated: list[tuple[Policy, Finding]]) -> tuple[Policy, Finding]:
        """The strongest action (quarantine over cordon); among equals the widest scope first."""
        order = {"network": 0}
        return min(violated, key=lambda pf: (0 if pf[0].action == "quarantine" else 1,
                                             order.get(pf[1].scope, 1), pf[1].scope, pf[1].policy))

    @staticmethod
    def _cause(policy: Policy, finding: Finding) -> str:
        return (f"{policy.scope} policy {policy.name} v{policy.version} ({policy.action}): "
                f"{finding.reason or 'the node violates it'}")

    def _act(self, node_id: str, state: NodeState, violated: list[tuple[Policy, Finding]],
             done: RemediationPass) -> None:
        policy, finding = self._pick(violated)
        action = policy.action
        if state not in _FROM[action]:
            return  # not Active (Down, Draining, already remediated, ...): decided again when its state changes
        details = {"rule": "policy", "policy": policy.name, "version": policy.version, "scope": policy.scope,
                   "action": action, "reason": finding.reason,
                   "violated": [f"{p.name} v{p.version}" for p, _f in violated]}
        cause = self._cause(policy, finding)
        node = self._nodes.system_transition(node_id, _TARGET[action], expect=_FROM[action], trigger=Trigger.POLICY,
                                             cause=cause, actor=ACTOR, extra=details)
        if node is None:
            self._seen.pop(node_id, None)  # changed meanwhile: decide again on fresh state
            return
        log.warning("node %s %s by %s", node_id, "cordoned" if action == "cordon" else "quarantined", cause)
        done.acted.append((node_id, action, policy.ref))
        self._seen[node_id] = (*self._seen.get(node_id, ())[:-1], node.state)
        if action == "quarantine":
            self._runtime.node_lost(node_id, f"node {node_id} was quarantined: {cause}", status="evicted",
                                    actor=ACTOR, action="task.evicted")

    def _audit_dry_run(self, node_id: str, domain: str, state: NodeState, violated: list[tuple[Policy, Finding]],
                       now: float, done: RemediationPass) -> None:
        fresh = [(p, f) for p, f in violated if (node_id, p.name, p.version) not in self._audited]
        if not fresh:
            return
        entries = []
        for policy, finding in fresh:
            would = "would " + policy.action if state in _FROM[policy.action] else \
                f"would {policy.action} once Active"
            entries.append(AuditEntry(
                actor=ACTOR, action="policy.dry_run", subject=f"node:{node_id}", domain=domain,
                cause=f"{would}: {self._cause(policy, finding)}",
                details={"kind": "remediation", "node": node_id, "policy": policy.name, "version": policy.version,
                         "scope": policy.scope, "action": policy.action, "reason": finding.reason,
                         "state": state.value, "would_deny": [finding.to_dict()]}))
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)
            uow.audit.append(entries, now)
            uow.commit()
        for policy, _f in fresh:
            self._audited.add((node_id, policy.name, policy.version))
            done.would.append((node_id, policy.action, policy.ref))
