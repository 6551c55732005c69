"""The plugin contract: verdicts, the plugin protocols, and the per-pass tallies they read.

A plugin has one job. A `Gate` decides whether a task may start at all now (concurrency limits,
later quotas); a `Filter` decides whether one node can take one task; a `Scorer` ranks the nodes
that can; a `VictimFilter` says which running tasks preemption may evict for a task. They are
pure: they read the task, the node and the `CycleState`, and return a value.

`Scope` is the promise a plugin makes about what it reads, which is what lets the pipeline reuse
its work (Nomad's computed node classes, kube-scheduler's equivalence cache):

    NODE      the task's equivalence class and the node view only: decided once per class and
              node for the whole pass.
    CYCLE     also this node's tallies in the cycle (free resources, task count): re-asked when
              the node changes. Tallies only grow in a pass, so a CYCLE filter must be monotone:
              a node it turned down stays turned down for the rest of the pass.
    VOLATILE  anything (other nodes' tallies, the task's workflow, ...): asked afresh for every
              decision. Topology plugins (spread across zones, affinity) live here.

A plugin that reads task fields beyond the class key (domain, resources, constraints, excluded
nodes) must also define `task_key(task) -> Hashable`; the pipeline adds it to the class key.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from polyfabric.domain.resources import Resources
from polyfabric.scheduling.view import ClusterView, ConcurrencyLimits, NodeView, RunningTask, TaskRequest

__all__ = [
    "PASS",
    "CycleState",
    "Filter",
    "Gate",
    "Scope",
    "Scorer",
    "Status",
    "Verdict",
    "VictimFilter",
    "task_class_key",
]


class Status(StrEnum):
    """What a verdict means for the task on this node (kube-scheduler's status codes)."""

    PASS = "pass"
    NOT_NOW = "not_now"  # may fit later: resources or a limit are busy; preemption may help
    NEVER = "never"  # cannot fit on this node as it is: too small, wrong labels, not schedulable
    ERROR = "error"  # the plugin could not decide (bad input); treated as a refusal, reported


class Scope(StrEnum):
    """What a plugin reads, and so how long the pipeline may reuse its answer (see module doc)."""

    NODE = "node"
    CYCLE = "cycle"
    VOLATILE = "volatile"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One plugin's answer. `reason` is for people and names this node's numbers; `summary` is
    the short form the pipeline counts nodes by ("cpu exhausted"); it defaults to the reason."""

    status: Status
    plugin: str = ""
    reason: str = ""
    summary: str = ""

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    @property
    def key(self) -> str:
        """What unplaced-task explanations group nodes by."""
        return self.summary or self.reason or f"{self.plugin}: {self.status}"


PASS = Verdict(Status.PASS)
"""The one passing verdict plugins return; it carries no reason."""


class Filter(Protocol):
    """Can this node take this task? Returns PASS, or a refusal that says why."""

    name: str
    scope: Scope

    def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict: ...


class Scorer(Protocol):
    """How good is this (feasible) node for this task: 0 (worst) to 100 (best)."""

    name: str
    scope: Scope

    def score(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> float: ...


class Gate(Protocol):
    """May this task start anywhere right now? Checked before any node is looked at."""

    name: str

    def admit(self, task: TaskRequest, cycle: CycleState) -> Verdict: ...


class VictimFilter(Protocol):
    """May preemption evict `victim` on `node` to make room for `task`? (Policy hook.)"""

    name: str

    def allows(self, task: TaskRequest, victim: RunningTask, node: NodeView) -> bool: ...


def task_class_key(task: TaskRequest) -> Hashable:
    """The fields that decide feasibility and score for the built-in plugins: tasks with equal
    keys get the same answers from every NODE and CYCLE plugin, so work is shared among them."""
    constraints = task.constraints
    return (
        task.domain,
        task.resources,
        tuple(sorted(constraints.items())) if constraints else (),
        task.excluded_nodes,
    )


class CycleState:
    """The tallies of one scheduling pass: what the plan has taken so far, per node and per limit.

    Everything only grows during a pass (placements and preemption reservations consume; evicted
    tasks keep counting until the applier has stopped them), which is what makes CYCLE verdicts
    safe to keep. `version(node_id)` changes whenever a node's tallies change. `scratch` is for
    plugins that want to keep per-pass data (key it by plugin name).
    """

    __slots__ = (
        "_free",
        "_nodes",
        "_tasks",
        "_version",
        "by_domain",
        "by_semaphore",
        "by_workflow",
        "limits",
        "preempted",
        "scratch",
        "total",
        "view",
    )

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self.limits: ConcurrencyLimits = view.limits
        self._nodes = {node.id: node for node in view.nodes}
        self._free: dict[str, Resources] = {}
        self._tasks: dict[str, int] = dict(view.usage.by_node)
        self._version: dict[str, int] = {}
        self.total = view.usage.total
        self.by_domain: dict[str, int] = dict(view.usage.by_domain)
        self.by_workflow: dict[str, int] = dict(view.usage.by_workflow)
        self.by_semaphore: dict[str, int] = dict(view.usage.by_semaphore)
        self.preempted: set[str] = set()
        self.scratch: dict[str, Any] = {}

    # -- reading -------------------------------------------------------------------------------

    def free(self, node_id: str) -> Resources:
        """Capacity − allocated − what this plan has taken on the node."""
        free = self._free.get(node_id)
        if free is None:
            node = self._nodes[node_id]
            free = self._free[node_id] = node.capacity - node.allocated
        return free

    def planned(self, node_id: str) -> Resources:
        """What this plan has taken on the node (placements and preemption reservations)."""
        node = self._nodes[node_id]
        return node.capacity - node.allocated - self.free(node_id)

    def task_count(self, node_id: str) -> int:
        """Tasks running on the node plus tasks this plan placed there."""
        return self._tasks.get(node_id, 0)

    def task_cap(self, node: NodeView) -> int | None:
        """The most tasks the node may run at once (its own cap, else the per-node default)."""
        return node.max_tasks if node.max_tasks is not None else self.limits.per_node

    def version(self, node_id: str) -> int:
        return self._version.get(node_id, 0)

    def usage_counts(self) -> Mapping[str, Any]:
        """A copy of the limit counters, for explanations and tests."""
        return {
            "total": self.total,
            "by_domain": dict(self.by_domain),
            "by_workflow": dict(self.by_workflow),
            "by_semaphore": dict(self.by_semaphore),
        }

    # -- changing (the pipeline's job, not the plugins') ---------------------------------------

    def count(self, task: TaskRequest) -> None:
        """Count the task against the global, domain, workflow and semaphore limits."""
        self.total += 1
        self.by_domain[task.domain] = self.by_domain.get(task.domain, 0) + 1
        self.by_workflow[task.workflow_id] = self.by_workflow.get(task.workflow_id, 0) + 1
        if task.semaphore is not None:
            self.by_semaphore[task.semaphore] = self.by_semaphore.get(task.semaphore, 0) + 1

    def commit(self, task: TaskRequest, node_id: str) -> None:
        """The plan places `task` on the node."""
        self._free[node_id] = self.free(node_id) - task.resources
        self._tasks[node_id] = self._tasks.get(node_id, 0) + 1
        self._version[node_id] = self._version.get(node_id, 0) + 1
        self.count(task)

    def reserve(
        self, task: TaskRequest, node_id: str, resources: Resources, victims: tuple[str, ...]
    ) -> None:
        """The plan evicts `victims` for `task`: hold the part of the task's needs the victims do
        not free, and count the task against the limits, so nothing later in the pass takes them."""
        self._free[node_id] = self.free(node_id) - resources
        self._version[node_id] = self._version.get(node_id, 0) + 1
        self.preempted.update(victims)
        self.count(task)

    @contextmanager
    def released(self, node_id: str, resources: Resources, tasks: int) -> Iterator[None]:
        """What-if: the node as if `resources` and `tasks` were freed (preemption's re-check)."""
        free, count, version = self.free(node_id), self._tasks.get(node_id, 0), self.version(node_id)
        self._free[node_id] = free + resources
        self._tasks[node_id] = count - tasks
        self._version[node_id] = -1 - version
        try:
            yield
        finally:
            self._free[node_id] = free
            self._tasks[node_id] = count
            self._version[node_id] = version
