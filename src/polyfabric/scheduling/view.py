"""The read-only snapshot a scheduling pass plans on.

The coordinator builds a `ClusterView` from its store (nodes, what is allocated on them, the tasks
running there, the concurrency limits) and hands it, with the pending `TaskRequest`s, to
`schedule()`. Nothing here changes during a pass: what the pass takes lives in `CycleState`, and
the plan it returns names the `version` of the view it was made on, so the applier can tell a
stale plan from a fresh one.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from polyfabric.domain.errors import NotFound, ValidationError
from polyfabric.domain.node_states import NodeState
from polyfabric.domain.nodes import Node
from polyfabric.domain.policy import OwnerPolicy
from polyfabric.domain.resources import Resources
from polyfabric.domain.vivaldi import Coordinate

__all__ = [
    "ClusterView",
    "ConcurrencyLimits",
    "NodeView",
    "RunningTask",
    "TaskRequest",
    "Usage",
]

_ONE_SLOT = Resources(slots=1)
_NOTHING = Resources()


def _check_resources(owner: str, resources: Resources) -> None:
    if min(resources.cpu_millis, resources.memory_bytes, resources.disk_bytes, resources.gpus,
           resources.slots) < 0:
        raise ValidationError(f"{owner}: resources cannot be negative ({resources})")


@dataclass(frozen=True, slots=True)
class RunningTask:
    """A task already placed on a node: it holds resources and counts against the limits."""

    task_id: str
    workflow_id: str
    domain: str
    priority: int
    resources: Resources
    semaphore: str | None
    node_id: str
    preemptible: bool = True
    group: str | None = None  # the spread group (job/task) topology scorers count siblings by


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """A task waiting for a node.

    `submitted_seq` breaks priority ties (earlier first), so the order never depends on dict or
    set iteration. `constraints` are labels a node must carry with exactly these values;
    `excluded_nodes` are nodes that declined or failed this task and must not get it again.
    """

    task_id: str
    workflow_id: str
    domain: str
    priority: int
    submitted_seq: int
    resources: Resources = _ONE_SLOT
    semaphore: str | None = None
    constraints: Mapping[str, str] = field(default_factory=dict)
    excluded_nodes: frozenset[str] = frozenset()
    # Topology (read by TASK scorers only): the nodes an upstream task ran on (`locality:
    # near(...)`), the label to spread a group across (`spread: zone`) and the group, and
    # preferred labels with weights (`affinity`).
    near: frozenset[str] = frozenset()
    spread: str | None = None
    group: str | None = None
    affinity: tuple[tuple[str, str, float], ...] = ()
    # Policies and negotiation (filters/policy.py): tasks with equal `policy_class` have equal
    # `attributes` (the job and the task as policies see them, the task's `requires` and `rank`).
    policy_class: Hashable = None
    attributes: Any = field(default=None, compare=False)
    rank_key: Hashable = None  # tasks with a `rank:` over nodes: the rank scorer's class key

    def __post_init__(self) -> None:
        _check_resources(f"task {self.task_id}", self.resources)


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as the scheduler sees it.

    `allocated` is authoritative for capacity (it may include reservations that are not tasks);
    `running` is what preemption may evict and what the limits count. `max_tasks` caps how many
    tasks run here at once; None falls back to `ConcurrencyLimits.per_node`. `owner` is the node
    owner's policy as its agent advertised it (the `policy` and `policy_share` filters read it).
    """

    id: str
    name: str
    domain: str
    state: NodeState
    labels: Mapping[str, str]
    capacity: Resources
    allocated: Resources = _NOTHING
    running: tuple[RunningTask, ...] = ()
    max_tasks: int | None = None
    coords: Coordinate | None = None  # measured network coordinates (Vivaldi), when reported
    # What the node's owner accepts, as its agent advertised it (domain/policy.py `OwnerPolicy`):
    # the scheduler offers the node only what this would accept; the agent still answers each offer.
    owner: OwnerPolicy | None = None

    def __post_init__(self) -> None:
        _check_resources(f"node {self.name}", self.capacity)
        if self.max_tasks is not None and self.max_tasks < 0:
            raise ValidationError(f"node {self.name}: max_tasks cannot be negative")

    @property
    def free(self) -> Resources:
        """What is left of the capacity before this pass takes anything."""
        return self.capacity - self.allocated

    @classmethod
    def of(
        cls,
        node: Node,
        *,
        allocated: Resources = _NOTHING,
        running: Iterable[RunningTask] = (),
        max_tasks: int | None = None,
    ) -> NodeView:
        """The view of a domain `Node` plus what the store knows runs on it."""
        return cls(node.id, node.name, node.domain, node.state, dict(node.labels), node.capacity,
                   allocated, tuple(running), max_tasks)


def _limit_map(name: str, values: Mapping[str, int]) -> None:
    for key, value in values.items():
        if value < 0:
            raise ValidationError(f"{name} limit for {key!r} cannot be negative: {value}")


@dataclass(frozen=True, slots=True)
class ConcurrencyLimits:
    """How many tasks may run at once: overall, per domain, per node, per workflow, per semaphore.

    None or a missing key means no limit. `per_node` is the default for nodes that do not declare
    `max_tasks`. A semaphore a task names but that is not listed here is unbounded.
    """

    global_max: int | None = None
    per_domain: Mapping[str, int] = field(default_factory=dict)
    per_node: int | None = None
    per_workflow: Mapping[str, int] = field(default_factory=dict)
    semaphores: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in (("global", self.global_max), ("per-node", self.per_node)):
            if value is not None and value < 0:
                raise ValidationError(f"the {name} limit cannot be negative: {value}")
        _limit_map("domain", self.per_domain)
        _limit_map("workflow", self.per_workflow)
        _limit_map("semaphore", self.semaphores)


@dataclass(frozen=True, slots=True)
class Usage:
    """How many tasks run now, counted the ways the limits count them."""

    total: int
    by_domain: Mapping[str, int]
    by_workflow: Mapping[str, int]
    by_semaphore: Mapping[str, int]
    by_node: Mapping[str, int]

    @classmethod
    def of(cls, nodes: Iterable[NodeView]) -> Usage:
        total = 0
        by_domain: dict[str, int] = {}
        by_workflow: dict[str, int] = {}
        by_semaphore: dict[str, int] = {}
        by_node: dict[str, int] = {}
        for node in nodes:
            by_node[node.id] = len(node.running)
            for task in node.running:
                total += 1
                by_domain[task.domain] = by_domain.get(task.domain, 0) + 1
                by_workflow[task.workflow_id] = by_workflow.get(task.workflow_id, 0) + 1
                if task.semaphore is not None:
                    by_semaphore[task.semaphore] = by_semaphore.get(task.semaphore, 0) + 1
        return cls(total, by_domain, by_workflow, by_semaphore, by_node)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Every node, the limits, and the usage derived from what runs; `version` names the snapshot."""

    nodes: tuple[NodeView, ...]
    version: int = 0
    limits: ConcurrencyLimits = ConcurrencyLimits()
    usage: Usage = field(init=False, repr=False, compare=False)
    _by_id: Mapping[str, NodeView] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nodes = tuple(self.nodes)
        by_id = {node.id: node for node in nodes}
        if len(by_id) != len(nodes):
            seen: set[str] = set()
            dupes = sorted({n.id for n in nodes if n.id in seen or seen.add(n.id)})  # type: ignore[func-returns-value]
            raise ValidationError(f"a cluster view lists nodes more than once: {', '.join(dupes)}")
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "usage", Usage.of(nodes))

    def node(self, node_id: str) -> NodeView:
        try:
            return self._by_id[node_id]
        except KeyError:
            raise NotFound(f"node {node_id} is not in cluster view {self.version}") from None

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id
