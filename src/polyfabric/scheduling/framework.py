"""The plugin contract: verdicts, the plugin protocols, and the per-pass tallies they read.

A plugin has one job. A `Gate` decides whether a task may start at all now (concurrency limits,
later quotas); a `Filter` decides whether one node can take one task; a `Scorer` ranks the nodes
that can; a `VictimFilter` says which running tasks preemption may evict for a task. They are
pure: they read the task, the node and the `CycleState`, and return a value.

`Scope` is the promise a plugin makes about what it reads, which is what lets the pipeline reuse
its work (Nomad's computed node classes, kube-scheduler's equivalence cache):

    NODE   the node view only, not the task: asked once per node per pass (node state).
    CLASS  the node view and the task fields it names in `task_fields`: asked once per task class
           and node per pass (labels).
    CYCLE  CLASS plus this node's tallies in the cycle (free resources, task count): re-asked
           whenever the node changes. Tallies only grow during a pass, so a CYCLE filter must be
           monotone: a node it refused stays refused for the rest of the pass (capacity).
    TASK   anything: the task's own fields (excluded nodes), other nodes' tallies (topology
           spread, affinity): asked afresh for every task, on its few best candidates.

Tasks are grouped into classes by the `TaskRequest` fields their CLASS and CYCLE plugins read,
which each such plugin names in `task_fields` (capacity: resources; labels: constraints; the task
cap: none). A plugin that does not say gets the safe default, `DEFAULT_TASK_FIELDS`.

A CYCLE filter that refuses every node whose free resources do not cover some amount may say so
with `requires(task) -> Resources`; the pipeline then skips such nodes without asking them (the
capacity filter does).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, Protocol

from polyfabric.domain.errors import ValidationError
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
    "DEFAULT_TASK_FIELDS",
    "class_key_function",
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
    CLASS = "class"
    CYCLE = "cycle"
    TASK = "task"


class Verdict:
    """One plugin's answer, immutable. `reason` is for people and names this node's numbers;
    `summary` is the short form explanations count nodes by ("cpu exhausted").

    A filter on a hot path may pass `detail`, a function that builds the reason, instead of the
    reason itself: most refusals are never read by anyone, so their text is built on first read.
    """

    __slots__ = ("_detail", "_reason", "plugin", "status", "summary")

    status: Status
    plugin: str
    summary: str
    _reason: str
    _detail: Callable[[], str] | None

    def __init__(
        self,
        status: Status,
        plugin: str = "",
        reason: str = "",
        summary: str = "",
        *,
        detail: Callable[[], str] | None = None,
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "status", status)
        setattr_(self, "plugin", plugin)
        setattr_(self, "summary", summary)
        setattr_(self, "_reason", reason)
        setattr_(self, "_detail", detail if not reason else None)

    @property
    def reason(self) -> str:
        if self._detail is not None:
            object.__setattr__(self, "_reason", self._detail())
            object.__setattr__(self, "_detail", None)
        return self._reason

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    @property
    def key(self) -> str:
        """What unplaced-task explanations group nodes by: the summary, else the reason."""
        return self.summary or self.reason or f"{self.plugin}: {self.status}"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Verdict is immutable (tried to set {name})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Verdict):
            return NotImplemented
        return (self.status, self.plugin, self.reason, self.summary) == (
            other.status, other.plugin, other.reason, other.summary)

    def __hash__(self) -> int:
        return hash((self.status, self.plugin, self.reason, self.summary))

    def __repr__(self) -> str:
        return (f"Verdict(status={self.status.value!r}, plugin={self.plugin!r}, reason={self.reason!r}, "
                f"summary={self.summary!r})")


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


DEFAULT_TASK_FIELDS = ("domain", "resources", "constraints", "excluded_nodes")
"""What a CLASS or CYCLE plugin is assumed to read of a task when it does not say."""

_TASK_FIELDS = frozenset(TaskRequest.__dataclass_fields__)


def _resources_key(task: TaskRequest) -> Hashable:
    r = task.resources
    return (r.cpu_millis, r.memory_bytes, r.disk_bytes, r.gpus, r.slots)


def _field_key(name: str) -> Callable[[TaskRequest], Hashable]:
    if name == "resources":
        return _resources_key

    def key(task: TaskRequest) -> Hashable:
        value = getattr(task, name)
        if isinstance(value, Mapping):
            return tuple(sorted(value.items())) if value else ()
        return value  # type: ignore[no-any-return]

    return key


def class_key_function(fields: Iterable[str]) -> Callable[[TaskRequest], Hashable]:
    """Map a task to its equivalence-class key over `fields`: tasks with equal keys get equal
    answers from every plugin that reads only those fields, so they share that work."""
    names = sorted(set(fields))
    unknown = [name for name in names if name not in _TASK_FIELDS]
    if unknown:
        raise ValidationError(f"a plugin reads task fields that do not exist: {', '.join(unknown)}")
    parts = [_field_key(name) for name in names]
    if not parts:
        return lambda task: ()
    if len(parts) == 1:
        return parts[0]
    return lambda task: tuple([part(task) for part in parts])


class CycleState:
    """The tallies of one scheduling pass: what the plan has taken so far, per node and per limit.

    Everything only grows during a pass (placements and preemption reservations consume; evicted
    tasks keep counting until the applier has stopped them), which is what makes CYCLE verdicts
    safe to keep. `version(node_id)` changes whenever a node's tallies change. `scratch` is for
    plugins that want to keep per-pass data (key it by plugin name).
    """

    __slots__ = (
        "_foreign",
        "_free",
        "_nodes",
        "_placed",
        "_tasks",
        "_version",
        "_where",
        "by_domain",
        "by_semaphore",
        "by_workflow",
        "limits",
        "now",
        "preempted",
        "scratch",
        "total",
        "view",
    )

    def __init__(self, view: ClusterView, *, now: float = 0.0) -> None:
        self.view = view
        self.now = now  # the caller's clock reading for the pass; plugins never read a clock
        self.limits: ConcurrencyLimits = view.limits
        self._nodes = {node.id: node for node in view.nodes}
        self._free: dict[str, Resources] = {}
        self._tasks: dict[str, int] = dict(view.usage.by_node)
        self._placed: dict[str, list[TaskRequest]] = {}
        self._foreign: dict[str, tuple[int, int]] = {}  # node id -> (placed tasks counted, CPU)
        self._version: dict[str, int] = {}
        self._where: dict[str, str] = {}
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

    def placed_on(self, node_id: str) -> tuple[TaskRequest, ...]:
        """The tasks this plan placed on the node so far (topology plugins read these)."""
        return tuple(self._placed.get(node_id, ()))

    def foreign_cpu(self, node_id: str) -> int:
        """CPU that tasks of other domains than the node's hold on it: the running ones plus what
        this plan placed there. Kept incrementally: only placements made since the last call are
        added (tallies only grow during a pass)."""
        placed = self._placed.get(node_id, ())
        hit = self._foreign.get(node_id)
        if hit is None:
            node = self._nodes[node_id]
            domain = node.domain
            seen, total = 0, sum(t.resources.cpu_millis for t in node.running if t.domain != domain)
        else:
            seen, total = hit
            if seen == len(placed):
                return total
            domain = self._nodes[node_id].domain
        for task in placed[seen:]:
            if task.domain != domain:
                total += task.resources.cpu_millis
        self._foreign[node_id] = (len(placed), total)
        return total

    def node_of(self, task_id: str) -> str | None:
        """Where this plan placed the task, if it did (topology spread counts siblings by it)."""
        return self._where.get(task_id)

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
        self._where[task.task_id] = node_id
        placed = self._placed.get(node_id)
        if placed is None:
            self._placed[node_id] = [task]
        else:
            placed.append(task)
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
