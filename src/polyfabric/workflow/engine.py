"""The pure workflow engine: a run's state, and what to do next when something happens.

    run = WorkflowRun(spec)                       # or WorkflowRun.restore(spec, params, records, flags)
    commands = run.handle(Started(), now)         # -> [EnqueueTask(...), ...]
    commands = run.handle(TaskFinished("work[3]", attempt=1, status="succeeded", result=7), now)
    changes = run.drain_changes()                 # the records to persist, O(what changed)

The engine performs no I/O and keeps no clock: the caller (the coordinator) applies the commands,
persists the changed records in the same transaction, and feeds back what the scheduler and the
agents report. Every decision is deterministic in (records, flags, event, now), so a coordinator
that restarts rebuilds the run from its records and carries on exactly where it was.

Model
    A task is an *instance* ("split"), or for a foreach task one instance per item ("work[0]",
    "work[1]", ...), expanded when its dependencies are done. An instance is WAITING (not handed
    out: its task is not active yet, or a cap holds it), in flight (READY, or LEASED/RUNNING as
    the coordinator records it), or terminal. Each hand-out is a new attempt number; a report
    for any other attempt is stale and ignored.

Rules
    * A task is activated when all its dependencies are terminal: its trigger rule, then `when`,
      decide whether it runs or is skipped; then `foreach` is evaluated. A skip is terminal and
      flows downstream through the children's trigger rules.
    * Released instances are capped by the task's `max_parallel` and the workflow's (counting
      everything handed out and not reported back). Free slots go to the task with the highest
      priority, then the earliest in topological order, and within a task to the lowest item
      index; so a restored run releases in the same order as the original.
    * A failed attempt with retries left goes back to the queue with `not_before` = now + backoff.
      A preemption requeues at once and uses up no retry. Expression errors are not retried.
    * A foreach task succeeds when all its items succeeded (fails if any failed, after retries);
      over an empty list it succeeds with result []. Seen downstream, its result is the list of
      its items' results in item order.
    * The run finishes when every task is terminal: succeeded if all tasks succeeded or were
      skipped, otherwise failed (cancelled if it was cancelled).
    * Pause stops new releases (what is in flight goes on); Cancel cancels what is queued and
      asks for in-flight instances to be cancelled (CancelTasks), then waits for their reports.
    * RetryFailed (on a finished run) re-runs failed and cancelled instances and every task that
      was skipped or cancelled downstream of them; succeeded results are kept.

Cost: handling an event touches only the instances and tasks it affects (heaps, counters), never
a scan of the whole run, except for the rare operator events (Cancel, RetryFailed, SetPriority).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from polyfabric.domain.errors import Conflict, InternalFault, ValidationError
from polyfabric.domain.jobs import TaskSpec, TriggerRule, WorkflowSpec, WorkflowState
from polyfabric.domain.resources import Resources
from polyfabric.domain.task_states import IN_FLIGHT, TERMINAL, TaskState
from polyfabric.workflow.expressions import NO_ITEM, ExpressionError, Expressions, Renderer, Scope

__all__ = [
    "Cancel",
    "CancelTasks",
    "Changes",
    "Command",
    "EnqueueTask",
    "Event",
    "FailTask",
    "InstanceRecord",
    "Pause",
    "PriorityChanged",
    "Resume",
    "RetryFailed",
    "RunFlags",
    "SetPriority",
    "SkipTask",
    "Snapshot",
    "Started",
    "TaskFinished",
    "TaskInstance",
    "TaskPreempted",
    "WorkflowFinished",
    "WorkflowRun",
    "instance_key",
    "parse_instance_key",
]

S = TaskState
_FINISH_STATES = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})


def instance_key(task: str, index: int | None) -> str:
    """'split' for a plain task, 'work[3]' for item 3 of a foreach task."""
    return task if index is None else f"{task}[{index}]"


def parse_instance_key(key: str) -> tuple[str, int | None]:
    """The inverse of `instance_key`; raise ValidationError for a malformed key."""
    if key.endswith("]"):
        name, sep, index = key[:-1].partition("[")
        if not sep or not index.isdigit() or (len(index) > 1 and index[0] == "0"):
            raise ValidationError(f"{key!r} is not a task instance key (e.g. split, work[3])")
        return name, int(index)
    return key, None


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """Begin the run: activate the tasks without dependencies."""


@dataclass(frozen=True, slots=True)
class TaskFinished:
    """An attempt ended. `status` is succeeded, failed or cancelled; `result` is the task's
    JSON-like result (kept only on success); `error` says why it failed."""

    key: str
    attempt: int
    status: TaskState
    result: Any = None
    error: str | None = None

    def __post_init__(self) -> None:
        try:
            status = TaskState(self.status)
        except ValueError:
            status = None
        if status not in _FINISH_STATES:
            raise ValidationError(
                f"task {self.key}: a finished attempt is succeeded, failed or cancelled, not {self.status!r}"
            )
        object.__setattr__(self, "status", status)


@dataclass(frozen=True, slots=True)
class TaskPreempted:
    """The attempt was taken off its node (not a failure): it is queued again at once."""

    key: str
    attempt: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Pause:
    """Release no new instances; in-flight ones go on."""


@dataclass(frozen=True, slots=True)
class Resume:
    """Release instances again."""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel the run: nothing new starts; in-flight instances are asked to stop."""

    reason: str = "cancelled by request"


@dataclass(frozen=True, slots=True)
class RetryFailed:
    """On a finished run: re-run what failed or was cancelled, and what was skipped because of it.
    `only_failed` (`job retry --from-failed`): start from the failed tasks only; a task cancelled
    on its own (not downstream of a failure) stays cancelled."""

    only_failed: bool = False


@dataclass(frozen=True, slots=True)
class SetPriority:
    """Change the workflow's priority (tasks with their own priority keep it)."""

    priority: int


Event = Started | TaskFinished | TaskPreempted | Pause | Resume | Cancel | RetryFailed | SetPriority


# -- commands ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskInstance:
    """One attempt of one instance, ready for the scheduler: every template already rendered."""

    key: str
    task: str
    index: int | None
    attempt: int
    command: tuple[str, ...] | None
    function: str | None
    args: dict[str, Any]
    env: dict[str, str]
    resources: Resources
    priority: int
    not_before: float
    timeout_s: float | None = None
    semaphore: str | None = None
    workdir: str | None = None


@dataclass(frozen=True, slots=True)
class EnqueueTask:
    """Queue this attempt for scheduling, not before `instance.not_before`."""

    instance: TaskInstance


@dataclass(frozen=True, slots=True)
class CancelTasks:
    """Stop these in-flight instances (dequeue or kill) and report each with TaskFinished."""

    keys: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class SkipTask:
    """The task will not run (its trigger rule or `when` said so); `key` is the task name."""

    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class FailTask:
    """The engine itself failed a task or instance (an expression error), without running it."""

    key: str
    error: str


@dataclass(frozen=True, slots=True)
class PriorityChanged:
    """Re-prioritize these in-flight instances."""

    keys: tuple[str, ...]
    priority: int


@dataclass(frozen=True, slots=True)
class WorkflowFinished:
    """Every task is terminal. `result` maps each final task (one nothing depends on) that
    succeeded to its result."""

    status: WorkflowState
    result: dict[str, Any] = field(default_factory=dict)


Command = EnqueueTask | CancelTasks | SkipTask | FailTask | PriorityChanged | WorkflowFinished


# -- persistence -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """What is persisted per instance. A foreach task also has a record under its own name,
    holding the task's status (waiting, running, or terminal) and its error, if any."""

    key: str
    status: TaskState
    attempt: int = 0
    result: Any = None
    error: str | None = None
    failures: int = 0
    not_before: float = 0.0
    item: Any = None


@dataclass(frozen=True, slots=True)
class RunFlags:
    """The run-wide state persisted beside the records. `priority` None: the spec's."""

    started: bool = False
    paused: bool = False
    cancelled: bool = False
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    instances: tuple[InstanceRecord, ...]
    flags: RunFlags


@dataclass(frozen=True, slots=True)
class Changes:
    """Records changed (upsert) and removed since the last `drain_changes()`, and the flags."""

    records: tuple[InstanceRecord, ...]
    deleted: tuple[str, ...]
    flags: RunFlags


# -- internal state ----------------------------------------------------------------------------


class _Inst:
    __slots__ = ("attempt", "error", "failures", "index", "item", "key", "not_before", "pos", "result",
                 "status", "task")

    def __init__(self, task: _Task, pos: int, index: int | None, item: Any) -> None:
        self.task = task
        self.pos = pos
        self.index = index
        self.key = instance_key(task.name, index)
        self.item = item
        self.status = S.WAITING
        self.attempt = 0
        self.failures = 0
        self.result: Any = None
        self.error: str | None = None
        self.not_before = 0.0


class _Task:
    __slots__ = ("cancelled", "cap", "children", "deps", "done", "error", "failed", "foreach",
                 "in_heap", "inflight", "items", "name", "order", "pending", "queue", "render_args",
                 "render_command", "render_env", "result", "sort_key", "spec", "status")

    def __init__(self, spec: TaskSpec, order: int) -> None:
        self.spec = spec
        self.name = spec.name
        self.order = order
        self.foreach = spec.is_foreach
        self.cap = spec.max_parallel
        self.deps: list[_Task] = []
        self.children: list[_Task] = []
        self.pending = 0
        self.status = S.WAITING
        self.error: str | None = None
        self.result: Any = None
        self.items: list[_Inst] = []
        self.queue: list[int] = []  # heap of positions in `items` waiting for release
        self.inflight = 0
        self.done = 0
        self.failed = 0
        self.cancelled = 0
        self.in_heap = False
        self.sort_key = 0
        self.render_command: Renderer = _nothing
        self.render_args: Renderer = _nothing
        self.render_env: Renderer = _nothing


def _nothing(scope: Scope) -> Any:
    return {}


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


class WorkflowRun:
    """The state of one workflow run, advanced only by `handle(event, now)`."""

    def __init__(
        self,
        spec: WorkflowSpec,
        params: dict[str, Any] | None = None,
        *,
        expressions: Expressions | None = None,
    ) -> None:
        self.spec = spec
        self.params: dict[str, Any] = dict(spec.params if params is None else params)
        self.expressions = expressions if expressions is not None else Expressions()
        self.started = False
        self.paused = False
        self.cancelled = False
        self._priority: int | None = None
        self._tasks: dict[str, _Task] = {}
        self._order: list[_Task] = []
        for position, name in enumerate(spec.order):
            task = _Task(spec.tasks[name], position)
            self._tasks[name] = task
            self._order.append(task)
        for task in self._order:
            task.deps = [self._tasks[d] for d in task.spec.depends_on]
            task.pending = len(task.deps)
            for dep in task.deps:
                dep.children.append(task)
            task.sort_key = -self._effective_priority(task)
        self._insts: dict[str, _Inst] = {}
        for task in self._order:
            if not task.foreach:
                inst = _Inst(task, 0, None, NO_ITEM)
                task.items = [inst]
                self._insts[inst.key] = inst
        self._views: dict[str, dict[str, Any]] = {}
        self._terminal = 0
        self._inflight = 0
        self._heap: list[tuple[int, int]] = []  # (sort_key, order) of tasks with queued instances
        self._activate_queue: deque[_Task] = deque()
        self._out: list[Command] = []
        self._now = 0.0
        # A new run's first `drain_changes()` holds every record; a restored run starts clean.
        self._dirty: dict[str, None] = dict.fromkeys(
            [t.name for t in self._order if t.foreach] + list(self._insts)
        )
        self._deleted: dict[str, None] = {}
        self._compile_all()

    def _compile_all(self) -> None:
        """Compile every expression and template up front (once per workflow, cached)."""
        ex = self.expressions
        for task in self._order:
            spec = task.spec
            try:
                if spec.when is not None:
                    ex.compile(spec.when)
                if isinstance(spec.foreach, str):
                    ex.compile(spec.foreach)
                task.render_command = ex.renderer(list(spec.command or ()), text=True)
                task.render_args = ex.renderer(spec.args)
                task.render_env = ex.renderer(spec.env, text=True)
            except ExpressionError as exc:
                raise ValidationError(f"task {task.name!r}: {exc.message}") from None

    # -- public view -----------------------------------------------------------------------------

    @property
    def priority(self) -> int:
        return self.spec.priority if self._priority is None else self._priority

    @property
    def finished(self) -> bool:
        return self._terminal == len(self._order)

    @property
    def inflight(self) -> int:
        """Instances handed out and not reported back."""
        return self._inflight

    @property
    def state(self) -> WorkflowState:
        if self.finished:
            return self._final_status()
        if self.cancelled:
            return WorkflowState.CANCELLING
        if not self.started:
            return WorkflowState.PENDING
        return WorkflowState.PAUSED if self.paused else WorkflowState.RUNNING

    @property
    def flags(self) -> RunFlags:
        return RunFlags(self.started, self.paused, self.cancelled, self._priority)

    def task_status(self, name: str) -> TaskState:
        """waiting (not activated), running (activated), or terminal."""
        return self._task(name).status

    def task_result(self, name: str) -> Any:
        """The result downstream tasks see (None until the task is terminal)."""
        view = self._views.get(name)
        return None if view is None else view["result"]

    def task_inflight(self, name: str) -> int:
        return self._task(name).inflight

    def instance(self, key: str) -> InstanceRecord | None:
        inst = self._insts.get(key)
        if inst is None:
            task = self._tasks.get(key)
            return self._task_record(task) if task is not None else None
        return self._record(inst)

    def instance_keys(self, name: str) -> list[str]:
        return [inst.key for inst in self._task(name).items]

    def in_flight(self) -> list[str]:
        """Keys of every instance handed out and not reported back (a scan: for tests and UIs)."""
        return [i.key for t in self._order for i in t.items if i.status in IN_FLIGHT]

    def _task(self, name: str) -> _Task:
        try:
            return self._tasks[name]
        except KeyError:
            raise ValidationError(f"workflow {self.spec.name!r} has no task {name!r}") from None

    # -- persistence -----------------------------------------------------------------------------

    def _record(self, inst: _Inst) -> InstanceRecord:
        return InstanceRecord(
            key=inst.key,
            status=inst.status,
            attempt=inst.attempt,
            result=inst.result,
            error=inst.error,
            failures=inst.failures,
            not_before=inst.not_before,
            item=None if inst.item is NO_ITEM else inst.item,
        )

    def _task_record(self, task: _Task) -> InstanceRecord:
        if not task.foreach:
            return self._record(task.items[0])
        return InstanceRecord(key=task.name, status=task.status, error=task.error)

    def snapshot(self) -> Snapshot:
        """Every record, in topological order (a foreach task's own record before its items)."""
        records: list[InstanceRecord] = []
        for task in self._order:
            if task.foreach:
                records.append(self._task_record(task))
            records.extend(self._record(inst) for inst in task.items)
        return Snapshot(tuple(records), self.flags)

    def drain_changes(self) -> Changes:
        """The records changed since the last call: persist them with the commands' effects."""
        records = []
        for key in self._dirty:
            inst = self._insts.get(key)
            if inst is not None:
                records.append(self._record(inst))
            elif key in self._tasks:
                records.append(self._task_record(self._tasks[key]))
        changes = Changes(tuple(records), tuple(self._deleted), self.flags)
        self._dirty.clear()
        self._deleted.clear()
        return changes

    def _touch(self, inst: _Inst) -> None:
        self._dirty[inst.key] = None

    def _touch_task(self, task: _Task) -> None:
        if task.foreach:
            self._dirty[task.name] = None

    @classmethod
    def restore(
        cls,
        spec: WorkflowSpec,
        params: dict[str, Any] | None,
        instances: list[InstanceRecord] | tuple[InstanceRecord, ...],
        flags: RunFlags,
        *,
        expressions: Expressions | None = None,
    ) -> WorkflowRun:
        """Rebuild a run from its persisted records and flags; it emits nothing by itself."""
        run = cls(spec, params, expressions=expressions)
        run.started, run.paused, run.cancelled = flags.started, flags.paused, flags.cancelled
        run._priority = flags.priority
        items: dict[str, dict[int, InstanceRecord]] = {}
        task_records: dict[str, InstanceRecord] = {}
        for rec in instances:
            try:
                name, index = parse_instance_key(rec.key)
            except ValidationError:
                raise InternalFault(f"workflow {spec.name!r}: bad instance key {rec.key!r}") from None
            task = run._tasks.get(name)
            if task is None or (index is not None and not task.foreach):
                raise InternalFault(f"workflow {spec.name!r}: record {rec.key!r} matches no task")
            if index is None:
                task_records[name] = rec
            else:
                items.setdefault(name, {})[index] = rec
        for task in run._order:
            task.sort_key = -run._effective_priority(task)
            if task.foreach:
                found = items.get(task.name, {})
                if sorted(found) != list(range(len(found))):
                    raise InternalFault(f"workflow {spec.name!r}: items of {task.name!r} are not 0..n-1")
                task.items = []
                for index in range(len(found)):
                    inst = _Inst(task, index, index, found[index].item)
                    run._load(inst, found[index])
                    task.items.append(inst)
                    run._insts[inst.key] = inst
                own = task_records.get(task.name)
                task.status = S(own.status) if own is not None else S.WAITING
                task.error = own.error if own is not None else None
            else:
                inst = task.items[0]
                if task.name in task_records:
                    run._load(inst, task_records[task.name])
                if inst.status in TERMINAL:
                    task.status = inst.status
                elif inst.status in IN_FLIGHT or (run.started and all(d.status in TERMINAL for d in task.deps)):
                    task.status = S.RUNNING
                else:
                    task.status = S.WAITING
            run._rebuild_task(task)
        run._dirty.clear()
        return run

    def _load(self, inst: _Inst, rec: InstanceRecord) -> None:
        inst.status = S(rec.status)
        inst.attempt = rec.attempt
        inst.result = rec.result
        inst.error = rec.error
        inst.failures = rec.failures
        inst.not_before = rec.not_before

    def _rebuild_task(self, task: _Task) -> None:
        """Derive counters, queue, heap entry and view of one task from its records."""
        task.queue, task.inflight, task.done, task.failed, task.cancelled = [], 0, 0, 0, 0
        if task.status is S.WAITING:
            task.pending = sum(1 for d in task.deps if d.status not in TERMINAL)
            return
        task.pending = 0
        for inst in task.items:
            if inst.status in IN_FLIGHT:
                task.inflight += 1
            elif inst.status in TERMINAL:
                self._count_done(task, inst.status)
            elif task.status is S.RUNNING:
                task.queue.append(inst.pos)
        self._inflight += task.inflight
        if task.queue:
            self._push(task)
        if task.status in TERMINAL:
            self._terminal += 1
            task.result = self._result_of(task)
            self._views[task.name] = {"status": task.status.value, "result": task.result}

    # -- the one door ----------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Command]:
        """Apply one event; return the commands to carry out, in order."""
        self._out = []
        self._now = now
        was_finished = self.finished
        if isinstance(event, TaskFinished):
            self._on_finished(event)
        elif isinstance(event, TaskPreempted):
            self._on_preempted(event)
        elif isinstance(event, Started):
            self._on_started()
        elif isinstance(event, Pause):
            if not self.finished and not self.paused:
                self.paused = True
        elif isinstance(event, Resume):
            self.paused = False
        elif isinstance(event, Cancel):
            self._on_cancel(event.reason)
        elif isinstance(event, RetryFailed):
            self._on_retry_failed(event)
        elif isinstance(event, SetPriority):
            self._on_set_priority(event.priority)
        else:
            raise ValidationError(f"unknown workflow event {event!r}")
        self._settle()
        if self.finished and not was_finished:
            self._out.append(WorkflowFinished(self._final_status(), self._final_result()))
        out, self._out = self._out, []
        return out

    def _settle(self) -> None:
        """Activate what became activatable and hand out what the caps allow, until stable."""
        while True:
            while self._activate_queue:
                task = self._activate_queue.popleft()
                if task.status is S.WAITING and task.pending == 0:
                    self._activate(task)
            self._release()
            if not self._activate_queue:
                return

    # -- events ----------------------------------------------------------------------------------

    def _on_started(self) -> None:
        if self.started:
            return
        self.started = True
        if self.cancelled:
            return
        for task in self._order:
            if not task.deps and task.status is S.WAITING:
                self._activate_queue.append(task)

    def _on_finished(self, event: TaskFinished) -> None:
        inst = self._insts.get(event.key)
        if inst is None or inst.status not in IN_FLIGHT or inst.attempt != event.attempt:
            return  # stale or duplicate report: that attempt is already accounted for
        task = inst.task
        self._leave_flight(inst)
        if (
            event.status is S.FAILED
            and not self.cancelled
            and task.spec.retry.allows(inst.failures + 1)
        ):
            inst.failures += 1
            inst.error = event.error
            inst.result = None
            inst.not_before = self._now + task.spec.retry.delay(inst.failures)
            self._requeue(inst)
            return
        result = event.result if event.status is S.SUCCEEDED else None
        self._instance_terminal(inst, event.status, result, event.error)

    def _on_preempted(self, event: TaskPreempted) -> None:
        inst = self._insts.get(event.key)
        if inst is None or inst.status not in IN_FLIGHT or inst.attempt != event.attempt:
            return
        self._leave_flight(inst)
        if self.cancelled:
            self._instance_terminal(inst, S.CANCELLED, None, "preempted after the workflow was cancelled")
            return
        inst.not_before = self._now
        self._requeue(inst)

    def _on_cancel(self, reason: str) -> None:
        if self.finished or self.cancelled:
            return
        self.cancelled = True
        inflight: list[str] = []
        for task in self._order:
            if task.status is S.WAITING:
                self._close_unrun(task, S.CANCELLED)
            elif task.status is S.RUNNING:
                for pos in task.queue:
                    inst = task.items[pos]
                    inst.status = S.CANCELLED
                    inst.error = reason
                    self._touch(inst)
                    self._count_done(task, S.CANCELLED)
                task.queue = []
                inflight.extend(i.key for i in task.items if i.status in IN_FLIGHT)
                if task.done == len(task.items):
                    self._complete(task)
            task.in_heap = False
        self._heap = []
        if inflight:
            self._out.append(CancelTasks(tuple(inflight), reason))

    def _on_retry_failed(self, event: RetryFailed) -> None:
        if not self.finished:
            raise Conflict(
                f"workflow {self.spec.name!r} is still {self.state}; retry-failed applies to a finished run"
            )
        starts = (S.FAILED,) if event.only_failed else (S.FAILED, S.CANCELLED)
        roots = [t for t in self._order if t.status in starts]
        if not roots:
            raise Conflict(f"workflow {self.spec.name!r}: nothing to retry, no task failed"
                           + ("" if event.only_failed else " or was cancelled"))
        # The roots, and everything downstream of them that did not succeed (a succeeded task
        # keeps its result, but what lies beyond it is still looked at).
        seen = {t.name for t in roots}
        stack = list(roots)
        while stack:
            for child in stack.pop().children:
                if child.name not in seen:
                    seen.add(child.name)
                    stack.append(child)
        reset = {name for name in seen if self._tasks[name].status is not S.SUCCEEDED}
        self.cancelled = False
        for task in self._order:
            if task.name not in reset:
                continue
            self._terminal -= 1
            self._views.pop(task.name, None)
            task.status, task.error, task.result = S.WAITING, None, None
            self._touch_task(task)
            for inst in task.items:
                if inst.status is not S.SUCCEEDED:
                    inst.status, inst.failures, inst.error, inst.result = S.WAITING, 0, None, None
                    self._touch(inst)
        for task in self._order:
            if task.name in reset:
                task.pending = sum(1 for d in task.deps if d.status not in TERMINAL)
                if task.pending == 0:
                    self._activate_queue.append(task)

    def _on_set_priority(self, priority: int) -> None:
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValidationError(f"a priority is an integer, got {priority!r}")
        self._priority = priority
        for task in self._order:
            task.sort_key = -self._effective_priority(task)
        self._heap = [(t.sort_key, t.order) for t in self._order if t.in_heap]
        heapq.heapify(self._heap)
        keys = tuple(
            i.key for t in self._order if t.spec.priority is None for i in t.items if i.status in IN_FLIGHT
        )
        if keys:
            self._out.append(PriorityChanged(keys, priority))

    # -- activation ------------------------------------------------------------------------------

    def _activate(self, task: _Task) -> None:
        """All dependencies are terminal: run, skip or fail the task (trigger rule, when, foreach)."""
        if self.cancelled:
            self._close_unrun(task, S.CANCELLED)
            return
        spec = task.spec
        if spec.trigger is TriggerRule.ALL_SUCCESS:
            bad = next((d for d in task.deps if d.status is not S.SUCCEEDED), None)
            if bad is not None:
                self._skip(task, f"dependency {bad.name!r} {bad.status} (trigger all_success)")
                return
        elif (
            spec.trigger is TriggerRule.ONE_SUCCESS
            and task.deps
            and not any(d.status is S.SUCCEEDED for d in task.deps)
        ):
            self._skip(task, "no dependency succeeded (trigger one_success)")
            return
        scope = Scope(self.params, self._views)
        if spec.when is not None:
            try:
                go = self.expressions.evaluate_bool(spec.when, scope)
            except ExpressionError as exc:
                self._fail_unrun(task, f"when: {exc.message}")
                return
            if not go:
                self._skip(task, f"when {spec.when!r} is false")
                return
        if task.foreach:
            if isinstance(spec.foreach, str):
                try:
                    values = self.expressions.evaluate_list(spec.foreach, scope)
                except ExpressionError as exc:
                    self._fail_unrun(task, f"foreach: {exc.message}")
                    return
            else:
                values = list(spec.foreach or ())
            self._expand(task, values)
        task.status = S.RUNNING
        self._touch_task(task)
        task.queue, task.done, task.failed, task.cancelled = [], 0, 0, 0
        for inst in task.items:
            if inst.status in TERMINAL:
                self._count_done(task, inst.status)
            else:
                task.queue.append(inst.pos)
        if task.done == len(task.items):
            self._complete(task)
        elif task.queue:
            self._push(task)

    def _expand(self, task: _Task, values: list[Any]) -> None:
        """Bind items to instances; a retried run keeps an instance (and its attempt count) per
        index, and keeps an item's success when the item itself is unchanged."""
        old = task.items
        new: list[_Inst] = []
        for index, value in enumerate(values):
            if index < len(old):
                inst = old[index]
                if not (inst.status is S.SUCCEEDED and _same(inst.item, value)):
                    inst.status, inst.result, inst.error, inst.failures = S.WAITING, None, None, 0
                    inst.item = value
                    self._touch(inst)
            else:
                inst = _Inst(task, index, index, value)
                self._insts[inst.key] = inst
                self._deleted.pop(inst.key, None)
                self._touch(inst)
            new.append(inst)
        for inst in old[len(values):]:
            del self._insts[inst.key]
            self._dirty.pop(inst.key, None)
            self._deleted[inst.key] = None
        task.items = new

    def _skip(self, task: _Task, reason: str) -> None:
        self._close_unrun(task, S.SKIPPED)
        self._out.append(SkipTask(task.name, reason))

    def _fail_unrun(self, task: _Task, error: str) -> None:
        task.error = error
        self._close_unrun(task, S.FAILED, error)
        self._out.append(FailTask(task.name, error))

    def _close_unrun(self, task: _Task, status: TaskState, error: str | None = None) -> None:
        """End a task that was never activated (or failed activating)."""
        for inst in task.items:
            if inst.status not in TERMINAL:
                inst.status, inst.error = status, error
                self._touch(inst)
        self._close(task, status)

    def _complete(self, task: _Task) -> None:
        status = S.FAILED if task.failed else S.CANCELLED if task.cancelled else S.SUCCEEDED
        self._close(task, status)

    def _close(self, task: _Task, status: TaskState) -> None:
        task.status = status
        task.queue = []
        task.result = self._result_of(task)
        self._touch_task(task)
        self._views[task.name] = {"status": status.value, "result": task.result}
        self._terminal += 1
        for child in task.children:
            child.pending -= 1
            if child.pending == 0 and child.status is S.WAITING:
                self._activate_queue.append(child)

    def _result_of(self, task: _Task) -> Any:
        if task.status is S.SKIPPED:
            return None
        if task.foreach:
            return [inst.result for inst in task.items]
        return task.items[0].result

    # -- instances -------------------------------------------------------------------------------

    def _push(self, task: _Task) -> None:
        if not task.in_heap:
            task.in_heap = True
            heapq.heappush(self._heap, (task.sort_key, task.order))

    def _release(self) -> None:
        """Hand out queued instances while the caps allow: highest priority, earliest task first."""
        heap, cap = self._heap, self.spec.max_parallel
        while heap and not self.paused and not self.cancelled:
            if cap is not None and self._inflight >= cap:
                return
            task = self._order[heap[0][1]]
            if task.status is not S.RUNNING or not task.queue or (
                task.cap is not None and task.inflight >= task.cap
            ):
                heapq.heappop(heap)
                task.in_heap = False
                continue
            self._enqueue(task.items[heapq.heappop(task.queue)])

    def _enqueue(self, inst: _Inst) -> None:
        task, spec = inst.task, inst.task.spec
        scope = Scope(self.params, self._views, inst.item)
        try:
            command = tuple(task.render_command(scope)) if spec.command is not None else None
            args = task.render_args(scope)
            env = task.render_env(scope)
        except ExpressionError as exc:
            error = f"rendering failed: {exc.message}"
            self._instance_terminal(inst, S.FAILED, None, error)
            self._out.append(FailTask(inst.key, error))
            return
        inst.attempt += 1
        inst.status = S.READY
        inst.not_before = max(inst.not_before, self._now)
        task.inflight += 1
        self._inflight += 1
        self._touch(inst)
        self._out.append(
            EnqueueTask(
                TaskInstance(
                    key=inst.key,
                    task=task.name,
                    index=inst.index,
                    attempt=inst.attempt,
                    command=command,
                    function=spec.function,
                    args=args,
                    env=env,
                    resources=spec.resources,
                    priority=self._effective_priority(task),
                    not_before=inst.not_before,
                    timeout_s=spec.timeout_s,
                    semaphore=spec.semaphore,
                    workdir=spec.workdir,
                )
            )
        )

    def _leave_flight(self, inst: _Inst) -> None:
        task = inst.task
        task.inflight -= 1
        self._inflight -= 1
        if task.queue:
            self._push(task)

    def _requeue(self, inst: _Inst) -> None:
        inst.status = S.WAITING
        self._touch(inst)
        heapq.heappush(inst.task.queue, inst.pos)
        self._push(inst.task)

    def _instance_terminal(self, inst: _Inst, status: TaskState, result: Any, error: str | None) -> None:
        task = inst.task
        inst.status, inst.result, inst.error = status, result, error
        self._touch(inst)
        self._count_done(task, status)
        if task.done == len(task.items) and task.status is S.RUNNING:
            self._complete(task)

    @staticmethod
    def _count_done(task: _Task, status: TaskState) -> None:
        task.done += 1
        if status is S.FAILED:
            task.failed += 1
        elif status is S.CANCELLED:
            task.cancelled += 1

    def _effective_priority(self, task: _Task) -> int:
        return task.spec.priority if task.spec.priority is not None else self.priority

    # -- the end ---------------------------------------------------------------------------------

    def _final_status(self) -> WorkflowState:
        if self.cancelled:
            return WorkflowState.CANCELLED
        statuses = {t.status for t in self._order}
        if S.FAILED in statuses:
            return WorkflowState.FAILED
        if S.CANCELLED in statuses:
            return WorkflowState.CANCELLED
        return WorkflowState.SUCCEEDED

    def _final_result(self) -> dict[str, Any]:
        return {
            t.name: t.result for t in self._order if not t.children and t.status is S.SUCCEEDED
        }
