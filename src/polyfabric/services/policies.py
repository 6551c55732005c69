"""Policies as a use case: apply (a new version each time, audited), list, show, remove, test.

The evaluation itself is pure (domain/policy.py); placement runs inside the scheduler as the
`policy` filter (scheduling/filters/policy.py) and admission in the runtime's submit path. This
service keeps the store's current versions and hands them to the runtime whenever they change.

Who may change what: a network policy needs an admin (`domain.manage`); a `domain:NAME` policy an
operator of that domain (`policy.manage` in NAME). Anyone who may read policies sees all of them
(a domain's operators should know what rules apply to their jobs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from polyfabric.domain.access import Principal, authorize
from polyfabric.domain.errors import NotFound, ValidationError
from polyfabric.domain.jobs import WorkflowSpec
from polyfabric.domain.policy import (
    Decision,
    Policy,
    admission,
    advertised_owner_policy,
    combine,
    compile_rule,
    job_context,
    node_context,
    parse_policy,
    placement,
    share_limits,
    task_context,
)
from polyfabric.scheduling.filters.policy import PolicyAttributes
from polyfabric.services.context import ServiceContext
from polyfabric.services.ports import AuditEntry
from polyfabric.workflow.spec import parse_workflow

__all__ = ["PolicyService", "attributes_of", "job_variables", "policy_out"]


def job_variables(spec: WorkflowSpec, *, job_id: str, domain: str, submitted_by: str = "",
                  priority: int | None = None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The `job` map policies see, and each workflow task's `task` map, from a parsed workflow."""
    prio = spec.priority if priority is None else priority
    tasks: dict[str, dict[str, Any]] = {}
    for name, task in spec.tasks.items():
        r = task.resources
        tasks[name] = task_context(
            name=name, labels=task.labels, command=task.command, function=task.function, cpu=r.cpu_millis,
            memory=r.memory_bytes, gpus=r.gpus, slots=r.slots, timeout_s=task.timeout_s,
            priority=task.priority if task.priority is not None else prio, domain=domain)
    job = job_context(id=job_id, name=spec.name, domain=domain, priority=prio, labels=spec.labels,
                      submitted_by=submitted_by, tasks=list(tasks.values()))
    return job, tasks


def attributes_of(spec: WorkflowSpec, job: Mapping[str, Any], tasks: Mapping[str, Mapping[str, Any]],
                  name: str) -> PolicyAttributes:
    """What the scheduler's policy plugins read of task `name` (the task's requires/rank, else the job's)."""
    task = spec.tasks[name]
    requires = task.requires or spec.requires
    rank = task.rank or spec.rank
    return PolicyAttributes(job=job, task=tasks[name],
                            requires=compile_rule(requires, "requires") if requires else None,
                            rank=compile_rule(rank, "rank") if rank else None)


def policy_out(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": row["name"], "version": row["version"], "kind": row["kind"], "scope": row["scope"],
            "mode": row["mode"], "removed": row["removed"], "created_by": row["created_by"],
            "created_at": row["created_at"], "document": row["document"]}


class PolicyService:
    def __init__(self, ctx: ServiceContext, runtime: Any) -> None:
        self._ctx = ctx
        self._runtime = runtime

    # -- reading -------------------------------------------------------------------------------

    def current(self) -> list[Policy]:
        """The compiled current version of every policy (what the runtime enforces)."""
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            rows = uow.policies.current()
        return [parse_policy(r["document"], version=r["version"]) for r in rows]

    def list(self, principal: Principal) -> list[dict[str, Any]]:
        authorize(principal, "policy.read")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            return [policy_out(r) for r in uow.policies.current()]

    def show(self, principal: Principal, name: str) -> dict[str, Any]:
        authorize(principal, "policy.read")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            versions = uow.policies.versions(name)
        if not versions:
            raise NotFound(f"no policy named {name!r} (see 'polyfabric policy ls')")
        out = policy_out(versions[-1])
        out["versions"] = [{k: v for k, v in policy_out(r).items() if k != "document"} for r in versions]
        return out

    # -- changing ------------------------------------------------------------------------------

    def _authorize_scope(self, principal: Principal, scope: str) -> None:
        if scope.startswith("domain:"):
            authorize(principal, "policy.manage", scope[7:])
        else:
            authorize(principal, "domain.manage")  # a network policy binds every domain: admins only

    def apply(self, principal: Principal, document: Any) -> dict[str, Any]:
        policy = parse_policy(document)
        self._authorize_scope(principal, policy.scope)
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            if policy.domain is not None and uow.domains.get(policy.domain) is None:
                raise NotFound(f"scope {policy.scope}: domain {policy.domain!r} does not exist")
            previous = uow.policies.versions(policy.name)
            if previous and previous[-1]["scope"] != policy.scope and not previous[-1]["removed"]:
                self._authorize_scope(principal, previous[-1]["scope"])
            version = (previous[-1]["version"] if previous else 0) + 1
            row = {"name": policy.name, "version": version, "kind": policy.kind, "scope": policy.scope,
                   "mode": policy.mode, "document": dict(document), "removed": False,
                   "created_by": principal.actor, "created_at": now}
            uow.policies.add_version(row)
            uow.audit.append([AuditEntry(
                actor=principal.actor, action="policy.applied", subject=f"policy:{policy.name}",
                domain=policy.domain, cause=f"policy {policy.name} v{version} applied",
                details={"version": version, "kind": policy.kind, "scope": policy.scope, "mode": policy.mode,
                         "document": dict(document)})], now)
            uow.commit()
        self.reload()
        return policy_out(row)

    def remove(self, principal: Principal, name: str, reason: str = "") -> dict[str, Any]:
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            versions = uow.policies.versions(name)
            if not versions or versions[-1]["removed"]:
                raise NotFound(f"no policy named {name!r} (see 'polyfabric policy ls')")
            last = versions[-1]
            self._authorize_scope(principal, last["scope"])
            row = {**last, "version": last["version"] + 1, "removed": True, "created_by": principal.actor,
                   "created_at": now}
            uow.policies.add_version(row)
            uow.audit.append([AuditEntry(
                actor=principal.actor, action="policy.removed", subject=f"policy:{name}",
                domain=last["scope"][7:] if last["scope"].startswith("domain:") else None,
                cause=reason or f"policy {name} removed", details={"version": row["version"]})], now)
            uow.commit()
        self.reload()
        return policy_out(row)

    def reload(self) -> None:
        """Hand the current versions to the runtime (new passes and submits use them)."""
        if self._runtime is not None and hasattr(self._runtime, "set_policies"):
            self._runtime.set_policies(self.current())

    # -- testing -------------------------------------------------------------------------------

    def test(self, principal: Principal, *, policies: list[Any] | None, workflow: Any,
             params: dict[str, Any] | None, domain: str, nodes: list[str] | None = None,
             include_current: bool = True) -> dict[str, Any]:
        """Evaluate policies (the given documents, plus the current ones unless overridden by name)
        against a job and nodes, submitting nothing: the admission decision and, per task and
        node, the placement decision, each with its reasons."""
        authorize(principal, "policy.test")
        given = [parse_policy(doc, version=0) for doc in (policies or [])]
        named = {p.name for p in given}
        active = [p for p in (self.current() if include_current else []) if p.name not in named]
        candidates = [*active, *given]
        spec = parse_workflow(workflow, params or {})
        now = self._ctx.clock.now()
        job, tasks = job_variables(spec, job_id="j-test", domain=domain, submitted_by=principal.actor)
        admitted = admission(candidates, job, now)
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            if nodes:
                found = []
                for ref in nodes:
                    node = uow.nodes.get(ref) or uow.nodes.by_name(ref)
                    if node is None:
                        raise NotFound(f"no node {ref!r}")
                    found.append(node)
            else:
                found = uow.nodes.list(limit=1000)
            advertised = uow.nodes.owner_policies()
        out_nodes = []
        for node in found:
            owner = advertised_owner_policy(advertised.get(node.id))  # what the scheduler follows too
            variables = node_context(id=node.id, name=node.name, domain=node.domain, labels=node.labels,
                                     state=node.state.value, cpu=node.capacity.cpu_millis,
                                     memory=node.capacity.memory_bytes, gpus=node.capacity.gpus,
                                     slots=node.capacity.slots)
            counts = share_limits(candidates) or (owner is not None and owner.max_cpu_share is not None)
            foreign_cpu, total_cpu = self._held_cpu(node.id, node.domain) if counts else (0, 0)
            per_task = {}
            for name in spec.tasks:
                attrs = attributes_of(spec, job, tasks, name)
                decision = placement(candidates, job, tasks[name], variables, now, foreign_cpu=foreign_cpu,
                                     total_cpu=total_cpu)
                if owner is not None:  # the node owner's advertised policy, as its agent would answer
                    decision = combine([*decision.denies, *decision.would_deny, *decision.allowed_by,
                                        owner.decide(job, tasks[name], variables, now, foreign_cpu=foreign_cpu)])
                entry = decision.to_dict()
                if attrs.requires is not None and decision.allowed:
                    from polyfabric.domain.policy import Evaluator, time_context

                    ok, problem = Evaluator().bind(job=job, task=tasks[name], node=variables,
                                                   now=time_context(now)).truth(attrs.requires)
                    if not ok:
                        entry["allowed"] = False
                        entry["reasons"] = [f"the task requires {attrs.requires.source}: "
                                            + ("false on this node" if ok is False else problem)]
                per_task[name] = entry
            out_nodes.append({"node_id": node.id, "name": node.name, "domain": node.domain,
                              "foreign_cpu": foreign_cpu, "cpu_held": total_cpu, "tasks": per_task})
        return {"policies": [p.ref if p.version else f"{p.name} (given)" for p in candidates],
                "admission": admitted.to_dict(), "nodes": out_nodes}

    def _held_cpu(self, node_id: str, node_domain: str) -> tuple[int, int]:
        """The CPU (millicores) that attempts of other domains than the node's hold on it now
        (leased or running), and that all attempts hold there (`foreign_only: false`), as the
        scheduler's `policy_share` filter counts them; 0 where this coordinator does not know (it
        holds no runtime, or is not the leader)."""
        held = getattr(self._runtime, "assignments_on", None)
        if held is None:
            return 0, 0
        foreign = total = 0
        for a in held(node_id):
            cpu = int(a.get("cpu_millis") or 0)
            total += cpu
            if a.get("domain") != node_domain:
                foreign += cpu
        return foreign, total


def describe(decision: Decision) -> str:
    return decision.describe()


def check_document(document: Any) -> None:
    """Raise a ValidationError for a body that is not a policy map."""
    if not isinstance(document, Mapping):
        raise ValidationError("the policy must be a map (a YAML document with name, kind, scope, allow)")
