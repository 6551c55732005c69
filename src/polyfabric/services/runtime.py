"""The job runtime: the coordinator's live state of every active workflow run.

It owns, for the jobs that are not finished: the pure workflow engines (`workflow.engine`), the
queue of ready tasks, and the assignments (leased or running attempts) on each node. Everything
that changes it goes through one lock and ends in one transaction that writes the engine's changed
records, the task rows, attempts, change events and audit records together, so the store always
holds a state the runtime can be rebuilt from (`load()` after a restart).

    submit ──▶ engine(Started) ──▶ EnqueueTask ──▶ queue ──schedule_once()──▶ leased on a node
    agent lease poll ◀── assignments of that node            agent report ──▶ started / finished
    finished ──▶ engine(TaskFinished) ──▶ more EnqueueTask, SkipTask, WorkflowFinished ...

Fencing: each hand-out is an attempt with a number from the engine; a report is accepted only for
the task's current attempt on the node it was given to. Anything else is refused and audited.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from polyfabric.domain.access import Principal, authorize
from polyfabric.domain.errors import Conflict, NotFound, NotPermitted, Unavailable, ValidationError
from polyfabric.domain.jobs import WorkflowState
from polyfabric.domain.node_states import NodeState
from polyfabric.domain.policy import OwnerPolicy, Policy, advertised_owner_policy
from polyfabric.domain.policy import admission as admission_decision
from polyfabric.domain.resources import Resources
from polyfabric.domain.task_states import TERMINAL, TaskState
from polyfabric.observability import metrics as obs
from polyfabric.scheduling.fairshare import FairShare
from polyfabric.scheduling.fairshare import order as fair_share_order
from polyfabric.scheduling.filters.policy import OwnerRankScorer, PolicyFilter
from polyfabric.scheduling.framework import Status
from polyfabric.scheduling.pipeline import schedule
from polyfabric.scheduling.registry import default_profile, with_owner_rank, with_policies, with_topology
from polyfabric.scheduling.view import ClusterView, ConcurrencyLimits, NodeView, RunningTask, TaskRequest
from polyfabric.services.context import ServiceContext
from polyfabric.services.deferred import DeferredCalls
from polyfabric.services.ledger import ledger_row
from polyfabric.services.manifests import manifest_row
from polyfabric.services.policies import attributes_of, job_variables
from polyfabric.services.ports import AuditEntry, UnitOfWork
from polyfabric.workflow.engine import (
    Cancel,
    CancelTasks,
    EnqueueTask,
    FailTask,
    InstanceRecord,
    Pause,
    PriorityChanged,
    Resume,
    RetryFailed,
    RunFlags,
    SetPriority,
    SkipTask,
    Started,
    TaskFinished,
    TaskPreempted,
    WorkflowFinished,
    WorkflowRun,
    parse_instance_key,
)
from polyfabric.workflow.expressions import Expressions
from polyfabric.workflow.spec import parse_workflow

__all__ = ["Assignment", "JobRuntime", "Notifier", "QueuedTask"]

_NOTHING = Resources()

log = logging.getLogger("polyfabric.runtime")

Notifier = Callable[[str], None]
"""Called with "node:ID", "job:ID" or "task:ID" when something a long-poll may wait for changed."""

S = TaskState
_FINAL_JOB = {WorkflowState.SUCCEEDED.value, WorkflowState.FAILED.value, WorkflowState.CANCELLED.value}
_TASK_COLUMNS = ("status", "attempt", "failures", "preemptions", "not_before", "priority", "payload", "node_id",
                 "result", "error", "exit_code", "started_at", "finished_at", "item")


@dataclass
class QueuedTask:
    """A ready task waiting for a node."""

    task_id: str
    job_id: str
    key: str
    attempt: int
    priority: int
    queue_seq: int
    resources: Resources
    semaphore: str | None
    not_before: float
    domain: str
    excluded: set[str] = field(default_factory=set)


@dataclass
class Assignment:
    """An attempt handed to a node: leased (sent, not started yet) or running."""

    task_id: str
    job_id: str
    key: str
    attempt: int
    node_id: str
    resources: Resources
    priority: int
    semaphore: str | None
    domain: str
    status: str = "leased"
    cancel_reason: str | None = None
    preempted_by: str | None = None
    committed: bool = True  # False until the commit that made it is durable: only then is it sent
    cancel_sent_at: float = -1e18
    offered_at: float = 0.0  # when the lease (an offer: the node accepts or declines) was made
    # Checkpoints (services/checkpoints.py): the attempt was asked to checkpoint and stop (a drain
    # deadline passed); since when; when the ask was last sent to the node.
    checkpoint_asked: str | None = None
    checkpoint_asked_at: float = 0.0
    checkpoint_sent_at: float = -1e18
    # What the scheduler's view shows of it (`JobRuntime._view`), made again when what it shows
    # changes (priority, preemptible): a pass over 10,000 running tasks would make 10,000 anew.
    seen_as: RunningTask | None = field(default=None, repr=False, compare=False)


@dataclass
class ActiveJob:
    id: str
    name: str
    domain: str
    seq: int
    run: WorkflowRun
    rows: dict[str, dict[str, Any]]
    status: str
    dirty: set[str] = field(default_factory=set)
    new: set[str] = field(default_factory=set)
    deleted: list[str] = field(default_factory=list)
    job_fields: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    flags: dict[str, Any] | None = None  # the run flags as last staged: unchanged flags are not rewritten


@dataclass
class _Pending:
    """Writes staged for the next commit."""

    ticket: int = 0
    at: float = 0.0
    jobs: dict[str, ActiveJob] = field(default_factory=dict)
    new_jobs: list[dict[str, Any]] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    attempts_new: list[dict[str, Any]] = field(default_factory=list)
    attempts_update: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    notify: set[str] = field(default_factory=set)
    assignments: list[Assignment] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # policy decisions (issue 6)
    ledger: list[dict[str, Any]] = field(default_factory=list)  # usage of attempts that ended (services/ledger.py)
    manifests: list[dict[str, Any]] = field(default_factory=list)  # signed result manifests (services/manifests.py)


JOB_NOTIFY_GAP_S = 0.1


class JobRuntime:
    def __init__(self, ctx: ServiceContext, notify: Notifier | None = None, *,
                 rng: random.Random | None = None, plan_on_commit: bool = False) -> None:
        self._ctx = ctx
        # With a scheduler loop running (the coordinator): the committer of a group commit first
        # runs the scheduling pass that the changes in its batch asked for (new ready tasks, freed
        # slots), so that a report's results and the placements they allow are made durable in ONE
        # commit, and leased without waiting for the scheduler thread and a second commit. The
        # loop still runs on its own wake-ups (interventions, a lost node, start-up) and timer.
        self.plan_on_commit = plan_on_commit
        self._plan_due = False  # with plan_on_commit: a change asks the next committer for a pass
        self._last_pass = (0.0, 0.0)  # when the last pass ended and how long it took (perf_counter)
        # Job watchers (the events long-poll) are woken at most every JOB_NOTIFY_GAP_S per job while
        # it runs (the first change at once, later ones gathered); a finished job at once. Each
        # wake costs the watcher a read of the job (its counts by status: a scan of its tasks), so
        # waking on every commit of a 10,000-task job would cost more than running it.
        self._job_notified: dict[str, float] = {}  # "job:ID" -> time.monotonic() of the last wake
        self._job_wake_due: set[str] = set()  # jobs whose held-back wake is queued on `_later`
        self._later = DeferredCalls("polyfabric-job-wakes")
        self._notify = notify or (lambda _key: None)
        self._lock = threading.RLock()
        self._jobs: dict[str, ActiveJob] = {}
        self._queue: dict[str, QueuedTask] = {}
        self._heap: list[tuple[int, int, str]] = []  # (-priority, queue_seq, task_id), lazy deletion
        self._assignments: dict[str, Assignment] = {}  # task_id -> assignment
        self._by_node: dict[str, dict[str, Assignment]] = {}
        self._queue_seq = 0
        self._profile = default_profile()
        # Policies and negotiation (issue 6): the current policy versions (services/policies.py
        # hands them over), what policies see of each (job, task), and the nodes that declined a
        # task (excluded for it until it ends). An offer unanswered for `offer_timeout_s` counts
        # as a decline.
        self._policies: list[Policy] = []
        self._attrs: dict[tuple[str, str], Any] = {}
        self._declined: dict[str, dict[str, str]] = {}
        self.offer_timeout_s = 30.0
        self._profile = with_policies(self._profile, ())
        self._owner_rank = OwnerRankScorer()  # kept across passes: its answers are cached
        self._released_at: dict[str, float] = {}  # node id -> when it last gave up an attempt
        # node id -> what the attempts it holds take, kept with `_by_node` (`_assign`, `_drop`):
        # a pass over 10,000 running tasks would otherwise add them all up again
        self._held: dict[str, Resources] = {}
        self._rng = rng or random.Random()
        self._limits = ConcurrencyLimits()
        self._node_cache: dict[str, tuple[str, str, dict[str, str], Resources, OwnerPolicy | None]] = {}
        self._node_cache_at = -1e18
        self._node_generation = 0  # bumped when a re-read of the nodes finds them changed
        # Tasks the last pass found that no node may take as things stand (every node ruled out
        # for good: NEVER verdicts, no busy node), like Kubernetes' unschedulable queue or Nomad's
        # blocked evaluations: not planned again until what such a verdict rests on changes
        # (`_world`: the nodes, their states, the policies and limits, the minute), instead of
        # being explained anew on every pass. task id -> the queued entry (re-queued: a new one).
        self._parked: dict[str, QueuedTask] = {}
        self._parked_world: tuple[Any, ...] | None = None
        # Leases offered and not yet answered (started or declined): what `_expire_offers` looks
        # at, instead of every attempt held (10,000 running tasks: a scan per pass for nothing).
        self._offers: dict[str, Assignment] = {}
        self._owner_docs: dict[str, OwnerPolicy | None] = {}  # advertised owner policies, parsed
        # id(findings) -> (them, their rows, the dry-run denies among them)
        self._findings_rows: dict[int, tuple[Any, list[dict[str, Any]], list[Any]]] = {}
        self._finding_row: dict[int, tuple[Any, dict[str, Any]]] = {}  # id(finding) -> (it, its row)
        self.pending_reasons: dict[str, str] = {}
        # (task id, attempt) -> node, for attempts that ended here recently: a repeated report of
        # them is acknowledged again, and their late log chunks are still stored.
        self._recent_done: dict[tuple[str, int], str] = {}
        # Called (under the lock: keep it cheap) with (node_id, task_id, attempt, outcome, now) for
        # every attempt that ends on a node: the lifecycle controller's evidence for quarantine.
        self.attempt_listeners: list[Callable[[str, str, int, str, float], None]] = []
        self.wake = threading.Event()
        self._cond = threading.Condition(self._lock)
        self._pending = _Pending()
        self._ticket = 0
        self._committed = 0
        self._failed_upto = 0
        self._committing = False
        self._job_seq = 0
        # Fair share between domains (scheduling/fairshare.py; off by default): the policy and where
        # the domains' (contributed, consumed) balances come from (services/ledger.py, cached).
        self.fair_share = FairShare()
        self.share_balances: Callable[[], dict[str, tuple[float, float]]] = dict
        self._collecting: set[str] = set()  # jobs GC is deleting now: not to be revived meanwhile

    def set_notifier(self, notify: Notifier) -> None:
        self._notify = notify

    # -- start-up ---------------------------------------------------------------------------

    def load(self) -> int:
        """Rebuild the live state of every unfinished job from the store."""
        with self._lock, self._ctx.store.unit_of_work(readonly=True) as uow:
            self._load_limits(uow)
            self._load_policies(uow)
            for job in uow.jobs.active_jobs():
                rows = {r["key"]: r for r in uow.jobs.tasks_of(job["id"])}
                spec = parse_workflow(job["document"], job["params"], expressions=(ex := Expressions()))
                records = [self._record_of(r) for r in rows.values()]
                flags = RunFlags(**job["flags"])
                run = WorkflowRun.restore(spec, dict(spec.params), records, flags, expressions=ex)
                active = ActiveJob(job["id"], job["name"], job["domain"], job["seq"], run, rows, job["status"],
                                   flags=dict(job["flags"]))
                self._jobs[job["id"]] = active
                for row in rows.values():
                    self._queue_seq = max(self._queue_seq, row["queue_seq"])
                    self._restore_row(active, row)
                    if run.cancelled and row["id"] in self._assignments:
                        # The stop request lived in memory only: ask the node again, or the
                        # attempts of a cancelled job would run on until they end by themselves.
                        self._assignments[row["id"]].cancel_reason = "job cancelled (before a coordinator restart)"
        if self._queue:
            self.wake.set()
        return len(self._jobs)

    def _restore_row(self, job: ActiveJob, row: dict[str, Any]) -> None:
        status = row["status"]
        if row["is_group"] or row["payload"] is None:
            return
        payload = row["payload"]
        resources = Resources.from_dict(payload["resources"])
        if status == S.READY.value:
            self._enqueue(QueuedTask(row["id"], job.id, row["key"], row["attempt"], row["priority"], row["queue_seq"],
                                     resources, payload.get("semaphore"), row["not_before"] or 0.0, job.domain))
        elif status in (S.LEASED.value, S.RUNNING.value) and row["node_id"]:
            self._assign(Assignment(row["id"], job.id, row["key"], row["attempt"], row["node_id"], resources,
                                    row["priority"], payload.get("semaphore"), job.domain, status))
        elif status in (S.SUCCEEDED.value, S.FAILED.value, S.CANCELLED.value) and row["node_id"]:
            # Its end was committed before a restart or failover, maybe with the answer lost: the
            # agent sends that report again, a harmless repeat (not a fenced late result to audit).
            self._recent_done[(row["id"], row["attempt"])] = row["node_id"]

    @staticmethod
    def _record_of(row: dict[str, Any]) -> InstanceRecord:
        status = S(row["status"])
        if status in (S.LEASED, S.RUNNING) and not row["is_group"]:
            # The engine sees every handed-out instance as in flight. A foreach task's own record
            # keeps "running" (activated): as READY the task would never complete.
            status = S.READY
        return InstanceRecord(key=row["key"], status=status, attempt=row["attempt"], result=row["result"],
                              error=row["error"], failures=row["failures"], not_before=row["not_before"] or 0.0,
                              item=row["item"])

    def _load_limits(self, uow: UnitOfWork) -> None:
        limits = uow.jobs.limits()
        self._limits = ConcurrencyLimits(global_max=limits["global_max"], per_domain=limits["per_domain"],
                                         per_node=limits["per_node"], semaphores=uow.jobs.semaphores())

    # -- submission and intervention ---------------------------------------------------------

    def submit(self, principal: Principal, document: dict[str, Any], params: dict[str, Any],
               domain: str, *, job_id: str | None = None) -> dict[str, Any]:
        """Start a job. `job_id` chosen by the caller makes the call idempotent (a trigger that
        recorded the id before submitting may submit again after a crash: the job exists once)."""
        authorize(principal, "job.submit", domain)
        if not isinstance(document, dict):
            raise ValidationError("the workflow must be a mapping (a YAML document with name and tasks)")
        expressions = Expressions()
        spec = parse_workflow(document, params, expressions=expressions)
        now = self._ctx.clock.now()
        if job_id is not None:
            with self._lock:
                known = job_id in self._jobs
            if known or self.exists(job_id):
                return self.job_summary(job_id)
        job_id = job_id or self._ctx.ids.new_id("j")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            if uow.domains.get(domain) is None:
                raise NotFound(f"domain {domain!r} does not exist (create it with 'polyfabric domain create')")
        admitted = self._admit(principal, spec, job_id, domain, now)  # a deny raises, audited
        with self._lock:
            self._job_seq = max(self._job_seq, self._stored_job_seq()) + 1
            row = {"id": job_id, "seq": self._job_seq, "name": spec.name, "domain": domain, "status": "running",
                   "priority": spec.priority, "document": document, "params": params, "flags": {},
                   "submitted_by": principal.actor, "submitted_at": now, "started_at": now, "finished_at": None,
                   "result": None, "error": None}
            run = WorkflowRun(spec, dict(spec.params), expressions=expressions)
            job = ActiveJob(job_id, spec.name, domain, self._job_seq, run, {}, "running")
            self._jobs[job_id] = job
            self._apply(job, run.handle(Started(), now), now)
            ticket = self._stage(now, jobs=[job], new_job=row, audit=[AuditEntry(
                actor=principal.actor, action="job.submitted", subject=f"job:{job_id}", domain=domain,
                cause="submitted", details={"name": spec.name, "tasks": len(spec.tasks),
                                            "priority": spec.priority, "params": params})])
            self._pending.decisions.extend(admitted)
        self._await(ticket)
        return self.job_summary(job_id)

    def _stored_job_seq(self) -> int:
        if self._job_seq == 0:
            with self._ctx.store.unit_of_work(readonly=True) as uow:
                return uow.jobs.next_job_seq() - 1
        return self._job_seq

    def intervene(self, principal: Principal, job_id: str, action: str, reason: str,
                  priority: int | None = None, *, from_failed: bool = False) -> dict[str, Any]:
        """`from_failed` (retry): re-run only the failed tasks and what was skipped or cancelled
        downstream of them (RetryFailed.only_failed); succeeded tasks keep their results either way."""
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            row = uow.jobs.get_job(job_id)
            if row is None:
                raise NotFound(f"no job {job_id!r}")
            authorize(principal, "job.manage", row["domain"])
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None and action == "retry" and row["status"] in _FINAL_JOB:
                    if job_id in self._collecting:
                        raise Conflict(f"job {job_id} has expired and is being collected")
                    job = self._revive(uow, row)
        if job is None:
            raise Conflict(f"job {job_id} is {row['status']}: nothing to {action}")
        event: Any
        if action == "pause":
            event = Pause()
        elif action == "resume":
            event = Resume()
        elif action == "cancel":
            event = Cancel(reason=f"cancelled by {principal.actor}" + (f": {reason}" if reason else ""))
        elif action == "retry":
            event = RetryFailed(only_failed=from_failed)
        elif action == "priority":
            if priority is None:
                raise ValidationError("set-priority needs a priority")
            event = SetPriority(priority)
        else:
            raise ValidationError(f"unknown job action {action!r}")
        with self._lock:
            commands = job.run.handle(event, now)
            if action == "retry":
                job.status = "running"
                job.job_fields.update(status="running", finished_at=None, result=None, error=None)
            elif action in ("pause", "resume") and job.status not in _FINAL_JOB:
                job.status = "paused" if action == "pause" else "running"
                job.job_fields["status"] = job.status
            elif action == "priority":
                job.job_fields["priority"] = priority
            # set-priority: the engine's PriorityChanged names the instances whose priority follows
            # the job's (not those that declare their own); _apply re-queues and re-ranks them.
            self._apply(job, commands, now)
            ticket = self._stage(now, jobs=[job], audit=[AuditEntry(
                actor=principal.actor, action=f"job.{action}", subject=f"job:{job_id}", domain=row["domain"],
                cause=reason or f"operator {action}",
                details={"priority": priority} if priority is not None else
                {"from_failed": True} if action == "retry" and from_failed else {})])
        self._await(ticket)
        self.wake.set()
        return self.job_summary(job_id)

    def _revive(self, uow: UnitOfWork, row: dict[str, Any]) -> ActiveJob:
        """Bring a finished job back into memory so that `retry` can continue it."""
        rows = {r["key"]: r for r in uow.jobs.tasks_of(row["id"])}
        ex = Expressions()
        spec = parse_workflow(row["document"], row["params"], expressions=ex)
        run = WorkflowRun.restore(spec, dict(spec.params), [self._record_of(r) for r in rows.values()],
                                  RunFlags(**row["flags"]), expressions=ex)
        job = ActiveJob(row["id"], row["name"], row["domain"], row["seq"], run, rows, row["status"],
                        flags=dict(row["flags"]))
        self._jobs[row["id"]] = job
        self._queue_seq = max([self._queue_seq, *(r["queue_seq"] for r in rows.values())])
        return job

    # -- applying engine commands -------------------------------------------------------------

    def _apply(self, job: ActiveJob, commands: list[Any], now: float) -> None:
        work = deque(commands)
        while work:
            command = work.popleft()
            if isinstance(command, EnqueueTask):
                self._on_enqueue(job, command, now)
            elif isinstance(command, CancelTasks):
                work.extend(self._on_cancel(job, command.keys, command.reason, now))
            elif isinstance(command, PriorityChanged):
                for key in command.keys:
                    row = job.rows.get(key)
                    if row is not None:
                        row["priority"] = command.priority
                        job.dirty.add(key)
                        queued = self._queue.get(row["id"])
                        if queued is not None:
                            queued.priority = command.priority
                            heapq.heappush(self._heap, (-queued.priority, queued.queue_seq, queued.task_id))
                        assignment = self._assignments.get(row["id"])
                        if assignment is not None:  # what preemption compares, as a restart reads it
                            assignment.priority = command.priority
            elif isinstance(command, WorkflowFinished):
                job.status = command.status.value
                job.job_fields.update(status=command.status.value, finished_at=now, result=command.result)
            elif isinstance(command, SkipTask | FailTask):
                pass  # the engine's records carry the outcome; they are written with the changes
        changes = job.run.drain_changes()
        for record in changes.records:
            self._merge_record(job, record, now)
        for key in changes.deleted:
            row = job.rows.pop(key, None)
            if row is not None:
                self._drop(row["id"])
                job.deleted.append(row["id"])
                job.new.discard(key)
                job.dirty.discard(key)
        flags = {"started": changes.flags.started, "paused": changes.flags.paused,
                 "cancelled": changes.flags.cancelled, "priority": changes.flags.priority}
        if flags != job.flags:
            # Only when they changed: an UPDATE of the job row rewrites all of it, the workflow
            # document included (100 kB for a workflow of 1,000 tasks), on every commit.
            job.flags = flags
            job.job_fields["flags"] = flags

    def _merge_record(self, job: ActiveJob, record: InstanceRecord, now: float) -> None:
        row = job.rows.get(record.key)
        if row is None:
            name, index = parse_instance_key(record.key)
            is_group = index is None and job.run.spec.tasks[name].foreach is not None
            self._queue_seq += 1
            row = {"id": self._ctx.ids.new_id("t"), "job_id": job.id, "key": record.key, "task": name,
                   "item_index": index, "is_group": is_group, "status": "", "attempt": 0, "failures": 0,
                   "preemptions": 0, "not_before": None, "priority": job.run.priority, "queue_seq": self._queue_seq,
                   "payload": None, "node_id": None, "result": None, "error": None, "exit_code": None,
                   "started_at": None, "finished_at": None, "item": None}
            job.rows[record.key] = row
            job.new.add(record.key)
        status = record.status.value
        live = self._assignments.get(row["id"])
        if record.status is S.READY and live is not None and live.attempt == record.attempt:
            status = live.status  # handed out: the runtime knows better than "ready"
        if status != row["status"]:
            job.events.append({"job_id": job.id, "task_id": row["id"], "key": row["key"], "status": status,
                               "attempt": record.attempt, "node_id": row["node_id"], "at": now})
        if status in {s.value for s in TERMINAL} and row["status"] not in {s.value for s in TERMINAL}:
            row["finished_at"] = row["finished_at"] or now
        row.update(status=status, attempt=record.attempt, failures=record.failures, result=record.result,
                   error=record.error, not_before=record.not_before or None, item=record.item)
        job.dirty.add(record.key)

    def _on_enqueue(self, job: ActiveJob, command: EnqueueTask, now: float) -> None:
        inst = command.instance
        record = job.run.instance(inst.key)
        self._merge_record(job, InstanceRecord(key=inst.key, status=S.READY, attempt=inst.attempt,
                                               failures=record.failures if record else 0,
                                               not_before=inst.not_before), now)
        row = job.rows[inst.key]
        checkpoint = (row.get("payload") or {}).get("checkpoint")  # the next attempt resumes from it
        row["priority"] = inst.priority
        row["node_id"] = None
        row["started_at"] = None
        row["finished_at"] = None
        row["exit_code"] = None
        row["payload"] = {"command": list(inst.command) if inst.command is not None else None,
                          "function": inst.function, "args": inst.args, "env": inst.env, "workdir": inst.workdir,
                          "timeout_s": inst.timeout_s, "resources": inst.resources.to_dict(),
                          "semaphore": inst.semaphore}
        if checkpoint is not None:
            row["payload"]["checkpoint"] = checkpoint
        self._queue_seq += 1
        row["queue_seq"] = self._queue_seq
        self._drop(row["id"])
        self._enqueue(QueuedTask(row["id"], job.id, inst.key, inst.attempt, inst.priority, self._queue_seq,
                                 inst.resources, inst.semaphore, inst.not_before, job.domain))

    def _on_cancel(self, job: ActiveJob, keys: tuple[str, ...], reason: str, now: float) -> list[Any]:
        """Queued instances are cancelled here and now (their commands are returned); running
        ones are asked to stop and are cancelled when their node reports it."""
        follow: list[Any] = []
        for key in keys:
            row = job.rows.get(key)
            if row is None:
                continue
            task_id = row["id"]
            if task_id in self._queue:
                queued = self._queue.pop(task_id)
                follow.extend(job.run.handle(TaskFinished(key, queued.attempt, S.CANCELLED, error=reason), now))
                continue
            assignment = self._assignments.get(task_id)
            if assignment is not None and assignment.cancel_reason is None:
                assignment.cancel_reason = reason
                self._notify(f"node:{assignment.node_id}")
        return follow

    def _enqueue(self, queued: QueuedTask) -> None:
        self._queue[queued.task_id] = queued
        heapq.heappush(self._heap, (-queued.priority, queued.queue_seq, queued.task_id))
        self._want_pass()

    def _want_pass(self) -> None:
        """Ask for a scheduling pass: in the next commit (plan_on_commit: every change that asks
        for one is followed by a commit), else from the scheduler loop."""
        if self.plan_on_commit:
            self._plan_due = True
        else:
            self.wake.set()

    def _assign(self, assignment: Assignment) -> None:
        self._assignments[assignment.task_id] = assignment
        node_id = assignment.node_id
        on_node = self._by_node.setdefault(node_id, {})
        replaced = on_node.get(assignment.task_id)
        on_node[assignment.task_id] = assignment
        held = self._held.get(node_id, _NOTHING) + assignment.resources
        self._held[node_id] = held - replaced.resources if replaced is not None else held

    def _drop(self, task_id: str) -> None:
        self._queue.pop(task_id, None)
        self._parked.pop(task_id, None)
        self._offers.pop(task_id, None)
        self.pending_reasons.pop(task_id, None)
        assignment = self._assignments.pop(task_id, None)
        if assignment is not None:  # off its node: what the node holds, when it last gave one up
            node_id = assignment.node_id
            gone = self._by_node.get(node_id, {}).pop(task_id, None)
            if gone is not None:
                self._held[node_id] = self._held[node_id] - gone.resources
                self._released_at[node_id] = self._ctx.clock.now()

    def _forget(self, job_id: str) -> None:
        job = self._jobs.pop(job_id, None)
        if job is not None:
            for row in job.rows.values():
                self._drop(row["id"])
                self._declined.pop(row["id"], None)
            for name in job.run.spec.tasks:
                self._attrs.pop((job_id, name), None)

    # -- persistence: group commit -------------------------------------------------------------
    #
    # An operation changes memory under the lock, *stages* what it changed and gets a ticket, then
    # waits (without the lock) until a commit covers its ticket. The first waiter becomes the
    # committer: it takes everything staged so far and writes it in ONE transaction, while later
    # operations stage into the next batch. Under load, batches grow by themselves (Nomad's plan
    # applier and every database's group commit work the same way). Nothing is acknowledged, and
    # no lease is handed to an agent, before the commit that holds it.

    def _stage(self, now: float, *, jobs: Iterable[ActiveJob] = (), new_job: dict[str, Any] | None = None,
               audit: Iterable[AuditEntry] = (), attempts_new: Iterable[dict[str, Any]] = (),
               attempts_update: Iterable[dict[str, Any]] = (), logs: Iterable[dict[str, Any]] = (),
               notify: Iterable[str] = (), assignments: Iterable[Assignment] = ()) -> int:
        """Queue writes for the next commit (caller holds the lock); returns the ticket to await."""
        batch = self._pending
        for job in jobs:
            batch.jobs[job.id] = job
        if new_job is not None:
            batch.new_jobs.append(new_job)
        batch.audit.extend(audit)
        batch.attempts_new.extend(attempts_new)
        batch.attempts_update.extend(attempts_update)
        batch.logs.extend(logs)
        batch.notify.update(notify)
        batch.assignments.extend(assignments)
        batch.at = now
        self._ticket += 1
        batch.ticket = self._ticket
        return self._ticket

    def _await(self, ticket: int) -> None:
        """Return once a commit holds `ticket`; commit it ourselves if nobody is committing."""
        self._lock.acquire()
        try:
            while self._committed < ticket:
                if self._failed_upto >= ticket:
                    raise Unavailable("the coordinator could not store this change; try again")
                if self._committing:
                    self._cond.wait()
                    continue
                if self._plan_due:
                    if not self._queue:
                        self._plan_due = False
                    elif self._pass_may_run_in_commit():
                        self._plan_into_batch()
                    else:  # too soon after the last pass: the scheduler loop plans it, or a later commit
                        self.wake.set()
                batch, self._pending = self._pending, _Pending()
                work = self._collect(batch)
                self._committing = True
                self._lock.release()
                error: Exception | None = None
                try:
                    self._write(work)
                except Exception as exc:  # the store refused: memory is ahead of it now
                    error = exc
                self._lock.acquire()
                self._committing = False
                if error is None:
                    self._committed = batch.ticket
                    self._after_commit(batch)
                else:
                    log.error("commit of %d staged changes failed: %s; reloading state from the store",
                              batch.ticket - self._committed, error)
                    self._failed_upto = batch.ticket
                    self._committed = batch.ticket
                    self._reload()
                self._cond.notify_all()
                if error is not None and ticket <= batch.ticket:
                    raise Unavailable(f"the coordinator could not store this change ({error}); try again")
        finally:
            self._lock.release()

    def _plan_into_batch(self) -> None:
        """The scheduling pass of `schedule_once`, staged into the batch about to be committed
        (caller holds the lock and is the committer). A failure leaves it to the scheduler loop."""
        now = self._ctx.clock.now()
        try:
            _placed, staged = self._plan(now)
        except Exception:
            log.exception("scheduling pass before a commit failed; the scheduler loop will retry")
            self.wake.set()
            return
        if staged is not None:
            self._stage(now, **staged)

    def _collect(self, batch: _Pending) -> dict[str, Any]:
        """Copy what a batch writes out of the live rows (caller holds the lock)."""
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        deleted: list[str] = []
        job_updates: list[tuple[str, dict[str, Any]]] = []
        events: list[dict[str, Any]] = []
        audit = list(batch.audit)
        for job in batch.jobs.values():
            deleted.extend(job.deleted)
            inserts.extend(dict(job.rows[k]) for k in job.new if k in job.rows)
            updates.extend({"id": job.rows[k]["id"], **{c: job.rows[k][c] for c in _TASK_COLUMNS}}
                           for k in job.dirty - job.new if k in job.rows)
            if job.job_fields:
                job_updates.append((job.id, dict(job.job_fields)))
                if job.job_fields.get("finished_at") is not None and job.status in _FINAL_JOB:
                    audit.append(AuditEntry(actor="system:runtime", action="job.finished", subject=f"job:{job.id}",
                                            domain=job.domain, cause=f"workflow {job.status}",
                                            details={"status": job.status}))
            if job.events:
                events.extend(job.events)
                batch.notify.add(f"job:{job.id}")
            job.dirty.clear()
            job.new.clear()
            job.deleted.clear()
            job.job_fields.clear()
            job.events.clear()
        return {"new_jobs": batch.new_jobs, "deleted": deleted, "inserts": inserts, "updates": updates,
                "job_updates": job_updates, "events": events, "attempts_new": batch.attempts_new,
                "attempts_update": batch.attempts_update, "logs": batch.logs, "audit": audit, "at": batch.at,
                "policy_decisions": batch.decisions, "ledger": batch.ledger, "manifests": batch.manifests}

    def _write(self, work: dict[str, Any]) -> None:
        started = time.perf_counter()
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)  # only the leader's commits land (services/leadership.py)
            for row in work["new_jobs"]:
                uow.jobs.add_job(row)
            uow.jobs.delete_tasks(work["deleted"])
            uow.jobs.insert_tasks(work["inserts"])
            uow.jobs.update_tasks(work["updates"])
            for job_id, fields in work["job_updates"]:
                uow.jobs.update_job(job_id, **fields)
            uow.jobs.add_events(work["events"])
            new_attempts = work["attempts_new"]
            allowed_by = [r["findings_set"] for r in new_attempts if r.get("findings_set")]
            uow.jobs.add_attempts(new_attempts, uow.policies.finding_set_ids(allowed_by) if allowed_by else None)
            uow.jobs.update_attempts(work["attempts_update"])
            uow.jobs.add_logs(work["logs"])
            if work.get("policy_decisions"):
                uow.policies.add_decisions(work["policy_decisions"])
            if work.get("ledger"):
                uow.ledger.add(work["ledger"])
            if work.get("manifests"):
                uow.manifests.add(work["manifests"])
            uow.audit.append(work["audit"], work["at"])
            uow.commit()
        obs.RUNTIME_COMMIT_SECONDS.observe(time.perf_counter() - started)
        if work.get("ledger"):
            obs.LEDGER_ROWS.inc(len(work["ledger"]))

    def _after_commit(self, batch: _Pending) -> None:
        """The batch is durable: hand out its leases, drop finished jobs, wake who waits."""
        for assignment in batch.assignments:
            assignment.committed = True
        finished = set()
        for job in batch.jobs.values():
            if job.status in _FINAL_JOB:
                finished.add(f"job:{job.id}")
                if not (job.dirty or job.new or job.job_fields):
                    self._forget(job.id)
        for key in batch.notify:
            if key.startswith("job:") and key not in finished:
                self._notify_job(key)
            else:
                self._job_notified.pop(key, None)
                self._notify(key)

    def _notify_job(self, key: str) -> None:
        """Wake the watchers of a running job now, or once JOB_NOTIFY_GAP_S has passed since the
        last wake (caller holds the lock)."""
        now = time.monotonic()
        due = self._job_notified.get(key, -1e18) + JOB_NOTIFY_GAP_S
        if now >= due:
            self._job_notified[key] = now
            self._notify(key)
        elif key not in self._job_wake_due:
            self._job_wake_due.add(key)
            self._later.call_at(due, self._notify_job_later, key)

    def _notify_job_later(self, key: str) -> None:
        with self._lock:
            self._job_wake_due.discard(key)
            if key in self._job_notified:  # not woken meanwhile by the job's end
                self._job_notified[key] = time.monotonic()
        self._notify(key)

    def _reload(self) -> None:
        """After a failed commit: forget everything in memory and rebuild it from the store (only
        while this coordinator leads: a deposed leader keeps nothing)."""
        self.reset()
        if not self._ctx.leadership.is_leader():
            return
        try:
            self.load()
        except Exception:
            log.exception("could not reload the job runtime from the store")

    def reset(self) -> None:
        """Forget all live state. Changes staged and not yet written are dropped: their callers
        get Unavailable. (What a coordinator does when it stops leading; `rebuild()` follows when
        it leads again.)"""
        with self._lock:
            while self._committing:
                self._cond.wait()
            self._jobs.clear()
            self._queue.clear()
            self._heap.clear()
            self._assignments.clear()
            self._by_node.clear()
            self._held.clear()
            self._offers.clear()
            self._parked.clear()
            self._parked_world = None
            self._pending = _Pending()
            self._failed_upto = max(self._failed_upto, self._ticket)
            self._recent_done.clear()
            self.pending_reasons.clear()
            self._job_seq = 0
            self._node_cache_at = -1e18
            self._cond.notify_all()

    def rebuild(self) -> int:
        """Forget the live state and load it again from the store: what a coordinator does when it
        becomes the leader (its predecessor's last commits are all in the store by then)."""
        with self._lock:
            self.reset()
            return self.load()

    # -- scheduling -------------------------------------------------------------------------

    def set_limits(self, principal: Principal, global_max: int | None, per_domain: dict[str, int],
                   per_node: int | None) -> dict[str, Any]:
        authorize(principal, "domain.manage")
        now = self._ctx.clock.now()
        with self._lock, self._ctx.store.unit_of_work() as uow:
            uow.jobs.set_limits(global_max, per_domain, per_node, principal.actor, now)
            uow.audit.append([AuditEntry(actor=principal.actor, action="limits.set", subject="limits:global",
                                         cause="operator request",
                                         details={"global_max": global_max, "per_domain": per_domain,
                                                  "per_node": per_node})], now)
            self._load_limits(uow)
            uow.commit()
        self.wake.set()
        return {"global_max": global_max, "per_domain": per_domain, "per_node": per_node}

    def set_semaphore(self, principal: Principal, name: str, size: int) -> dict[str, Any]:
        authorize(principal, "job.manage")
        if size < 0:
            raise ValidationError(f"a semaphore's size cannot be negative: {size}")
        now = self._ctx.clock.now()
        with self._lock, self._ctx.store.unit_of_work() as uow:
            uow.jobs.set_semaphore(name, size, principal.actor, now)
            uow.audit.append([AuditEntry(actor=principal.actor, action="semaphore.set", subject=f"semaphore:{name}",
                                         cause="operator request", details={"size": size})], now)
            self._load_limits(uow)
            uow.commit()
        self.wake.set()
        return {"name": name, "size": size, "in_use": self.semaphore_use().get(name, 0)}

    def semaphore_use(self) -> dict[str, int]:
        with self._lock:
            use: dict[str, int] = {}
            for a in self._assignments.values():
                if a.semaphore:
                    use[a.semaphore] = use.get(a.semaphore, 0) + 1
            return use

    def allocated_by_node(self) -> dict[str, Resources]:
        """What the attempts held on each node take (topology's free capacity)."""
        with self._lock:
            return dict(self._held)

    def _topology(self, q: QueuedTask, near_cache: dict[tuple[str, str], frozenset[str]]) -> dict[str, Any]:
        """The placement a task's spec asks for (issue 7): near an upstream task's nodes, spread
        across a label, label affinity, label constraints. Empty for most tasks."""
        job = self._jobs.get(q.job_id)
        if job is None:
            return {}
        row = job.rows.get(q.key)
        name = row["task"] if row is not None else q.key.split("[", 1)[0]
        spec = job.run.spec.tasks.get(name)
        if spec is None or not (spec.near or spec.spread or spec.affinity or spec.constraints):
            return {}
        out: dict[str, Any] = {}
        if spec.constraints:
            out["constraints"] = spec.constraints
        if spec.near:
            near = near_cache.get((job.id, spec.near))
            if near is None:
                near = near_cache[(job.id, spec.near)] = frozenset(
                    r["node_id"] for r in job.rows.values() if r.get("task") == spec.near and r.get("node_id"))
            out["near"] = near
        if spec.spread:
            out["spread"] = spec.spread
            out["group"] = f"{job.id}/{name}"
        if spec.affinity:
            out["affinity"] = spec.affinity
        return out

    def limits(self) -> ConcurrencyLimits:
        return self._limits

    def _nodes(self, now: float) -> dict[str, tuple[str, str, dict[str, str], Resources, OwnerPolicy | None]]:
        if now - self._node_cache_at > 2.0 or any(
                e.node_id not in self._node_cache for e in self._ctx.liveness.entries()):
            with self._ctx.store.unit_of_work(readonly=True) as uow:
                cache = {}
                after = None
                while True:
                    batch = uow.nodes.list(after=after, limit=5000)
                    if not batch:
                        break
                    for n in batch:
                        cache[n.id] = (n.name, n.domain, dict(n.labels), n.capacity, None)
                    after = batch[-1].name
                advertised = uow.nodes.owner_policies()
            for node_id, doc in advertised.items():  # what each node's owner accepts (issue 6)
                if node_id in cache:
                    cache[node_id] = (*cache[node_id][:4], self._owner_policy(doc))
            if cache != self._node_cache:
                self._node_generation += 1
            self._node_cache = cache
            self._node_cache_at = now
        return self._node_cache

    def node_declared(self, node_id: str) -> None:
        """A node declared something new (labels, capacity, its owner's policy): read the nodes
        again on the next pass, and run one soon."""
        self._node_cache_at = -1e18
        self.wake.set()

    def _owner_policy(self, doc: dict[str, Any]) -> OwnerPolicy | None:
        """An advertised owner policy, parsed once per distinct document (the same object every
        pass, so the scheduler's caches keyed by it stay warm)."""
        key = json.dumps(doc, sort_keys=True, default=str)
        found = self._owner_docs.get(key, False)
        if found is False:
            if len(self._owner_docs) > 10_000:
                self._owner_docs.clear()
            found = self._owner_docs[key] = advertised_owner_policy(doc)
        return found  # type: ignore[return-value]

    def _view(self, specs: dict[str, tuple[str, str, dict[str, str], Resources, OwnerPolicy | None]],
              ) -> tuple[ClusterView, int, set[str]]:
        """The cluster as the scheduler sees it (`specs`: the nodes as declared, `_nodes`), the
        free slots on Active nodes, and the tasks that already wait for victims to stop
        (preempted for them by an earlier pass)."""
        views = []
        free_slots = 0
        evicting: set[str] = set()
        for entry in self._ctx.liveness.entries():
            spec = specs.get(entry.node_id)
            if spec is None or entry.revoked:
                continue
            held = list(self._by_node.get(entry.node_id, {}).values())
            allocated = self._held.get(entry.node_id, _NOTHING)
            running = []
            for a in held:
                if a.preempted_by is not None:
                    evicting.add(a.preempted_by)
                seen = a.seen_as
                if seen is None or seen.priority != a.priority or seen.preemptible != (a.cancel_reason is None):
                    seen = a.seen_as = RunningTask(a.task_id, a.job_id, a.domain, a.priority, a.resources,
                                                   a.semaphore, a.node_id, preemptible=a.cancel_reason is None,
                                                   group=f"{a.job_id}/{a.key.split('[', 1)[0]}")
                running.append(seen)
            name, domain, labels, capacity, owner = spec
            views.append(NodeView(entry.node_id, name, domain, entry.state, labels, capacity, allocated,
                                  tuple(running), coords=entry.coords, owner=owner))
            if entry.state == NodeState.ACTIVE:
                free_slots += max(0, capacity.slots - allocated.slots)
        return ClusterView(tuple(views), version=0, limits=self._limits), free_slots, evicting

    def schedule_once(self) -> int:
        """One scheduling pass: place what fits, start preemptions, explain the rest."""
        now = self._ctx.clock.now()
        self.wake.clear()
        self._expire_offers(now)
        with self._lock:
            placed, staged = self._plan(now)
            if staged is None:
                return 0
            ticket = self._stage(now, **staged)
        self._await(ticket)
        return placed

    def _plan(self, now: float) -> tuple[int, dict[str, Any] | None]:
        """One scheduling pass on memory (caller holds the lock): the placements made, and what to
        stage for them and for the preemptions it started (None: nothing changed). Any pass
        answers every change that asked for one so far (`_plan_due`)."""
        self._plan_due = False
        started = time.perf_counter()
        try:
            return self._plan_pass(now)
        finally:
            ended = time.perf_counter()
            self._last_pass = (ended, ended - started)

    def _pass_may_run_in_commit(self) -> bool:
        """A commit plans the pass its changes asked for only once as long as the last pass took
        has gone by since it ended: planning then takes at most about half of the time, however
        many reports ask (1,000 agents declining or finishing, each in its own commit, would
        otherwise each wait for a whole pass: 613 passes for 10,000 tasks with private owners)."""
        ended, took = self._last_pass
        return time.perf_counter() - ended >= took

    def _world(self, now: float) -> tuple[Any, ...]:
        """What a NEVER verdict rests on: the nodes as declared (as `_nodes` last read them), their
        states, the policies and limits (held, compared by identity first), the minute (rules
        that read the clock). A parked task is planned again once this differs from when it was
        parked."""
        return (self._node_generation, self._ctx.liveness.version, self._profile, self._limits, int(now // 60))

    def _unpark(self) -> None:
        """Every parked task back to the queue's heap, to be planned by this pass."""
        queue, heap = self._queue, self._heap
        for task_id, queued in self._parked.items():
            if queue.get(task_id) is queued:
                heapq.heappush(heap, (-queued.priority, queued.queue_seq, task_id))
        self._parked.clear()

    def _all_parked(self) -> bool:
        """Is every queued task parked (the pass has nothing to plan)? Drops stale entries."""
        parked, queue = self._parked, self._queue
        if len(parked) < len(queue):
            return False
        for task_id in [t for t, q in parked.items() if queue.get(t) is not q]:
            del parked[task_id]
        return len(parked) >= len(queue)

    def _plan_pass(self, now: float) -> tuple[int, dict[str, Any] | None]:
        if not self._queue:
            return 0, None
        specs = self._nodes(now)  # first: a re-read that finds them changed moves the world on
        world = self._world(now)
        if world != self._parked_world:
            self._unpark()
            self._parked_world = world
        elif self._parked and self._all_parked():
            return 0, None
        parked = self._parked
        pass_started = time.perf_counter()
        view, free_slots, evicting = self._view(specs)
        wanted = max(free_slots * 2, 64)
        candidates: list[QueuedTask] = []
        later: list[tuple[int, int, str]] = []
        seen: set[str] = set()
        while self._heap and len(candidates) < wanted:
            entry = heapq.heappop(self._heap)
            queued = self._queue.get(entry[2])
            if queued is None or entry[2] in seen or (-entry[0], entry[1]) != (queued.priority, queued.queue_seq):
                continue  # stale heap entry
            seen.add(entry[2])
            if parked.get(entry[2]) is queued:
                continue  # out of the heap while parked (`_unpark` puts it back): not popped every pass
            job = self._jobs.get(queued.job_id)
            # A task whose victims are still stopping waits for them: planning it again would
            # evict more victims for it on every pass until the first ones report.
            if queued.not_before > now or job is None or job.status == "paused" or queued.task_id in evicting:
                later.append(entry)
                continue
            candidates.append(queued)
            later.append(entry)
        for entry in later:
            heapq.heappush(self._heap, entry)
        if not candidates:
            return 0, None
        near_cache: dict[tuple[str, str], frozenset[str]] = {}
        policy_filter: Any = next((f for f in self._profile.filters if f.name == "policy"), None)
        if policy_filter is not None:  # the owners' advertised policies read task fields too
            policy_filter.consider_owners({n.owner.digest: n.owner for n in view.nodes if n.owner}.values())
        classify = policy_filter.policy_class if policy_filter is not None else (lambda attrs, identity: identity)
        requests = []
        for q in candidates:
            attrs = self._attributes(q)
            identity = (q.job_id, q.key.split("[", 1)[0])  # the job and workflow task
            requests.append(TaskRequest(
                q.task_id, q.job_id, q.domain, q.priority, q.queue_seq, q.resources, q.semaphore,
                excluded_nodes=self._excluded(q), attributes=attrs,
                policy_class=classify(attrs, identity),
                rank_key=PolicyFilter.rank_key(attrs, identity) if attrs is not None and attrs.rank is not None
                else None,
                **self._topology(q, near_cache)))
        if self.fair_share.enabled:  # equal priorities: contributing domains first (scheduling/fairshare.py)
            requests = fair_share_order(requests, self.share_balances(), self.fair_share)
        # Topology scorers only in passes where some task asks for them: the others stay on the
        # fast path (issue 7; benchmarks/scheduling_topology.py).
        profile = with_topology(self._profile) if any(r.near or r.spread or r.affinity for r in requests) \
            else self._profile
        # The owners' preferences over jobs (advertised ranks) only where some owner states one.
        if any(n.owner is not None and n.owner.rank is not None for n in view.nodes):
            profile = with_owner_rank(profile, self._owner_rank)
        plan = schedule(view, requests, profile, self._rng, now=now)  # rules over `now` read the clock
        obs.SCHEDULING_PASS_SECONDS.observe(time.perf_counter() - pass_started)
        obs.SCHEDULING_PLACEMENTS.inc(len(plan.placements))
        for unplaced in plan.unplaced:
            self.pending_reasons[unplaced.task_id] = self._explain(unplaced, len(view.nodes))
            if unplaced.status is Status.NEVER:
                queued = self._queue.get(unplaced.task_id)
                if queued is not None:
                    parked[unplaced.task_id] = queued
        by_task = {r.task_id: r for r in requests}
        if not plan.placements and not plan.preemptions:
            return 0, None
        touched: dict[str, ActiveJob] = {}
        attempts: list[dict[str, Any]] = []
        audit: list[AuditEntry] = []
        placed_nodes: set[str] = set()
        new_assignments: list[Assignment] = []
        for placement in plan.placements:
            queued = self._queue.pop(placement.task_id)
            job = self._jobs[queued.job_id]
            row = job.rows[queued.key]
            assignment = Assignment(queued.task_id, job.id, queued.key, queued.attempt, placement.node_id,
                                    queued.resources, queued.priority, queued.semaphore, job.domain,
                                    committed=False)
            self._assign(assignment)
            new_assignments.append(assignment)
            row.update(status=S.LEASED.value, node_id=placement.node_id)
            job.dirty.add(queued.key)
            job.events.append({"job_id": job.id, "task_id": row["id"], "key": row["key"],
                               "status": S.LEASED.value, "attempt": queued.attempt,
                               "node_id": placement.node_id, "at": now})
            attempts.append({"task_id": row["id"], "attempt": queued.attempt, "node_id": placement.node_id,
                             "status": S.LEASED.value, "leased_at": now, "started_at": None,
                             "finished_at": None, "exit_code": None, "error": None, "preempted_by": None,
                             "findings_set": self._allowed_by(policy_filter, by_task[queued.task_id], row["id"],
                                                              queued.attempt, placement.node_id, job, audit)})
            self.pending_reasons.pop(queued.task_id, None)
            assignment.offered_at = now
            self._offers[assignment.task_id] = assignment
            touched[job.id] = job
            placed_nodes.add(placement.node_id)
        for preemption in plan.preemptions:
            victim = self._assignments.get(preemption.victim_task_id)
            if victim is None or victim.cancel_reason is not None:
                continue
            victim.cancel_reason = preemption.reason  # "preempted for task t-… (priority 10 > 0): …"
            victim.preempted_by = preemption.for_task_id
            placed_nodes.add(victim.node_id)
            audit.append(AuditEntry(actor="system:scheduler", action="task.preempted",
                                    subject=f"task:{victim.task_id}", domain=victim.domain,
                                    cause=f"for higher-priority task {preemption.for_task_id}",
                                    details={"node": victim.node_id, "job": victim.job_id, "key": victim.key,
                                             "attempt": victim.attempt, "for_task": preemption.for_task_id,
                                             "reason": preemption.reason}))
        jobs = list(touched.values())
        placed_per_job: dict[str, int] = {}
        for assignment in new_assignments:
            placed_per_job[assignment.job_id] = placed_per_job.get(assignment.job_id, 0) + 1
        for job in jobs:
            audit.append(AuditEntry(actor="system:scheduler", action="job.placed", subject=f"job:{job.id}",
                                    domain=job.domain, cause="scheduling pass",
                                    details={"placed": placed_per_job.get(job.id, 0)}))
        return len(plan.placements), {"jobs": jobs, "audit": audit, "attempts_new": attempts,
                                      "notify": {f"node:{n}" for n in placed_nodes},
                                      "assignments": new_assignments}

    # -- the agent side ---------------------------------------------------------------------

    def leases_for(self, node_id: str, known: set[tuple[str, int]] | None = None,
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What this node must run (leased, durable, not in `known`: the attempts the agent says it
        already holds) and what it must stop (a cancel is repeated at most every 2 s until reported)."""
        now = self._ctx.clock.now()
        with self._lock:
            leases, cancels = [], []
            for a in self._by_node.get(node_id, {}).values():
                if a.cancel_reason is not None:
                    if now - a.cancel_sent_at >= 2.0:
                        a.cancel_sent_at = now
                        cancels.append({"task_id": a.task_id, "attempt": a.attempt, "reason": a.cancel_reason})
                elif a.status == S.LEASED.value and a.committed and (
                        known is None or (a.task_id, a.attempt) not in known):
                    job = self._jobs[a.job_id]
                    row = job.rows[a.key]
                    payload = row["payload"]
                    leases.append({"task_id": a.task_id, "job_id": a.job_id, "key": a.key, "attempt": a.attempt,
                                   "command": payload["command"], "function": payload["function"],
                                   "args": payload["args"], "env": payload["env"], "workdir": payload["workdir"],
                                   "timeout_s": payload["timeout_s"], "resources": payload["resources"],
                                   "offer": self._offer(job, a.key),
                                   "checkpoint": payload.get("checkpoint")})
                    spec = job.run.spec.tasks.get(row["task"])
                    if spec is not None and getattr(spec, "secrets", None):
                        # Names only: the API layer seals the values to this node (services/secrets.py).
                        leases[-1]["secret_refs"] = {"domain": a.domain, "items": dict(spec.secrets)}
            return leases, cancels

    def report(self, node_id: str, events: list[dict[str, Any]], logs: list[dict[str, Any]],
               running: list[dict[str, Any]]) -> dict[str, Any]:
        now = self._ctx.clock.now()
        refused: list[dict[str, Any]] = []
        accepted = 0
        ended = False
        with self._lock:
            touched: dict[str, ActiveJob] = {}
            attempts: list[dict[str, Any]] = []
            audit: list[AuditEntry] = []

            def refuse(task_id: Any, attempt: Any, problem: str, details: dict[str, Any]) -> None:
                refused.append({"task_id": task_id, "attempt": attempt, "reason": problem})
                audit.append(AuditEntry(actor=f"node:{node_id}", action="task.report_refused",
                                        subject=f"task:{task_id}", cause=problem, details=details))

            for event in events:
                problem = self._on_report(node_id, event, now, touched, attempts)
                if problem is None:
                    accepted += 1
                    ended = ended or event.get("type") != "started"
                    continue
                if problem == "":
                    accepted += 1  # a repeat of something already accepted: idempotent
                    continue
                refuse(event.get("task_id"), event.get("attempt"), problem,
                       {"type": event.get("type"), "attempt": event.get("attempt")})
            log_rows = []
            stale: dict[tuple[str, int], int] = {}  # (task, attempt) -> chunks refused
            for chunk in logs:
                a = self._assignments.get(chunk["task_id"])
                current = a is not None and a.node_id == node_id and a.attempt == chunk["attempt"]
                if current or self._finished_here(chunk["task_id"], chunk["attempt"], node_id):
                    log_rows.append({"task_id": chunk["task_id"], "attempt": chunk["attempt"],
                                     "stream": chunk["stream"], "offset": chunk["offset"], "data": chunk["data"]})
                else:
                    key = (chunk["task_id"], chunk["attempt"])
                    stale[key] = stale.get(key, 0) + 1
            for (task_id, attempt), chunks in stale.items():  # fenced like results: one refusal per attempt
                refuse(task_id, attempt, f"log of attempt {attempt} of task {task_id} is not current on node "
                       f"{node_id} (fenced: the task was reassigned, cancelled or finished)",
                       {"type": "log", "attempt": attempt, "chunks": chunks})
            jobs = list(touched.values())
            ticket = 0
            if ended:
                self._want_pass()  # slots were freed: plan them (with plan_on_commit: in this commit)
            if jobs or attempts or audit or log_rows:
                ticket = self._stage(now, jobs=jobs, audit=audit, attempts_update=attempts, logs=log_rows,
                                     notify={f"task:{r['task_id']}" for r in log_rows} | {
                                         f"task:{a['task_id']}" for a in attempts})
            # Attempts this node runs that are no longer current: tell it to stop them.
            cancels = []
            for item in running:
                a = self._assignments.get(item.get("task_id", ""))
                if a is None or a.node_id != node_id or a.attempt != item.get("attempt"):
                    cancels.append({"task_id": item.get("task_id"), "attempt": item.get("attempt"),
                                    "reason": "this attempt is no longer current"})
                elif a.cancel_reason is not None:
                    cancels.append({"task_id": a.task_id, "attempt": a.attempt, "reason": a.cancel_reason})
        if ticket:
            self._await(ticket)
        return {"accepted": accepted, "refused": refused, "cancel": cancels}

    def _finished_here(self, task_id: str, attempt: int, node_id: str) -> bool:
        """Late log chunks of an attempt that just finished on this node are still welcome."""
        return self._recent_done.get((task_id, attempt)) == node_id

    def _on_report(self, node_id: str, event: dict[str, Any], now: float, touched: dict[str, ActiveJob],
                   attempts: list[dict[str, Any]]) -> str | None:
        """Apply one agent event. None: accepted; "": a harmless repeat; text: refused, why."""
        kind, task_id, attempt = event.get("type"), event.get("task_id"), event.get("attempt")
        a = self._assignments.get(task_id or "")
        if a is None or a.node_id != node_id or a.attempt != attempt:
            if self._recent_done.get((task_id or "", attempt or 0)) == node_id:
                return ""
            return (f"attempt {attempt} of task {task_id} is not current on node {node_id}"
                    " (fenced: the task was reassigned, cancelled or finished)")
        job = self._jobs[a.job_id]
        row = job.rows[a.key]
        at = float(event.get("at") or now)
        touched[job.id] = job
        if kind == "started":
            if a.status == S.RUNNING.value:
                return ""
            a.status = S.RUNNING.value
            self._offers.pop(task_id, None)
            row.update(status=S.RUNNING.value, started_at=at)
            job.dirty.add(a.key)
            job.events.append({"job_id": job.id, "task_id": task_id, "key": a.key, "status": S.RUNNING.value,
                               "attempt": attempt, "node_id": node_id, "at": at})
            attempts.append({"task_id": task_id, "attempt": attempt, "status": S.RUNNING.value, "started_at": at,
                             "finished_at": None, "exit_code": None, "error": None, "preempted_by": None})
            return None
        if kind not in ("finished", "cancelled", "rejected", "declined"):
            return f"unknown event type {kind!r}"
        self._drop(a.task_id)
        self._recent_done[(a.task_id, a.attempt)] = node_id
        if len(self._recent_done) > 100_000:
            for key in list(self._recent_done)[:50_000]:
                del self._recent_done[key]
        exit_code = event.get("exit_code")
        row["exit_code"] = exit_code
        row["started_at"] = row["started_at"] or (at if kind == "finished" else None)
        if a.checkpoint_asked is not None and not (kind == "finished" and event.get("status") == "succeeded"):
            # Asked to checkpoint and stop (services/checkpoints.py): however it ended (SIGTERM ends
            # most commands with a failure), it was moved, not failed: evicted, no retry used.
            commands = job.run.handle(TaskPreempted(a.key, a.attempt, reason=a.checkpoint_asked), now)
            outcome = "evicted"
            self._pending.audit.append(AuditEntry(
                actor="system:lifecycle", action="task.evicted", subject=f"node:{node_id}", cause=a.checkpoint_asked,
                details={"attempts": [{"task": a.task_id, "attempt": a.attempt}], "ended": kind}))
        elif kind == "finished":
            status = S.SUCCEEDED if event.get("status") == "succeeded" else S.FAILED
            commands = job.run.handle(TaskFinished(a.key, a.attempt, status, result=event.get("result"),
                                                   error=event.get("error")), now)
            outcome = status.value
        elif a.preempted_by is not None or kind in ("rejected", "declined"):
            row["preemptions"] = row["preemptions"] + (1 if a.preempted_by else 0)
            commands = job.run.handle(TaskPreempted(a.key, a.attempt, reason=a.cancel_reason or
                                                    str(event.get("reason") or "")), now)
            outcome = "preempted" if a.preempted_by else kind
        else:
            commands = job.run.handle(TaskFinished(a.key, a.attempt, S.CANCELLED,
                                                   error=a.cancel_reason or str(event.get("reason") or "")), now)
            outcome = S.CANCELLED.value
        attempts.append({"task_id": task_id, "attempt": attempt, "status": outcome, "started_at": row["started_at"],
                         "finished_at": at, "exit_code": exit_code,
                         "error": event.get("error") or event.get("reason") or a.cancel_reason,
                         "preempted_by": a.preempted_by})
        obs.TASK_OUTCOMES.labels(outcome).inc()
        usage = event.get("usage")
        if usage:  # what the attempt used, as the node measured it: the ledger (services/ledger.py)
            entry = self._ctx.liveness.get(node_id)
            self._pending.ledger.append(ledger_row(
                usage, task_id=a.task_id, attempt=a.attempt, job_id=job.id, key=a.key, node_id=node_id,
                consumer=job.domain, provider=entry.domain if entry is not None else "", outcome=outcome,
                finished_at=at))
        if kind == "finished" and event.get("manifest") is not None:
            # The node's signed manifest of this result (issue 6), checked here and stored in the same
            # commit as the result: no second transaction per report.
            entry = self._ctx.liveness.get(node_id)
            row, problem = manifest_row(event, node_id=node_id, public_key=entry.public_key if entry else None,
                                        job_id=job.id, now=now)
            self._pending.manifests.append(row)
            if problem is not None:
                self._pending.audit.append(problem)
        for listener in self.attempt_listeners:
            listener(node_id, a.task_id, a.attempt, outcome, now)
        job.dirty.add(a.key)
        self._apply(job, commands, now)
        if kind in ("rejected", "declined"):
            queued = self._queue.get(a.task_id)
            if queued is not None:
                queued.excluded.add(node_id)
        if kind == "declined":
            self._on_declined(a, node_id, event, now)
        return None

    # -- policies and negotiation (issue 6) ------------------------------------------------------

    def set_policies(self, policies: list[Policy]) -> None:
        """The current policy versions: admission uses them from the next submit, placement from
        the next pass (the profile's policy plugins are rebuilt)."""
        with self._lock:
            self._policies = list(policies)
            self._profile = with_policies(self._profile, self._policies)
        self.wake.set()

    def current_policies(self) -> list[Policy]:
        """The policy versions in force (the remediation controller reads them)."""
        return list(self._policies)

    def _load_policies(self, uow: UnitOfWork) -> None:
        from polyfabric.domain.policy import parse_policy

        try:
            rows = uow.policies.current()
        except Exception:  # an older schema: no policies
            log.exception("could not read the policies")
            return
        self._policies = [parse_policy(r["document"], version=r["version"]) for r in rows]
        self._profile = with_policies(self._profile, self._policies)

    def _admit(self, principal: Principal, spec: Any, job_id: str, domain: str, now: float) -> list[dict[str, Any]]:
        """Admission policies at submit: a deny raises NotPermitted naming scope, policy, version
        and reason (and is audited); an allow returns the decision rows to store with the job."""
        policies = self._policies
        if not policies:
            return []
        job, _tasks = job_variables(spec, job_id=job_id, domain=domain, submitted_by=principal.actor)
        decision = admission_decision(policies, job, now)
        findings = [f.to_dict() for f in (*decision.denies, *decision.would_deny, *decision.allowed_by)]
        if decision.would_deny:
            self._audit_now([AuditEntry(
                actor="system:policy", action="policy.dry_run", subject=f"job:{job_id}", domain=domain,
                cause="; ".join(f.describe() for f in decision.would_deny),
                details={"kind": "admission", "would_deny": [f.to_dict() for f in decision.would_deny]})], now)
        if not decision.allowed:
            first = decision.denies[0]
            self._audit_now([AuditEntry(
                actor=principal.actor, action="job.denied", subject=f"job:{job_id}", domain=domain,
                cause=first.describe(), details={"name": spec.name, "denies": [f.to_dict() for f in decision.denies]})],
                now)
            raise NotPermitted("the job was denied at admission: "
                               + "; ".join(f.describe() for f in decision.denies))
        if not findings:
            return []
        return [{"job_id": job_id, "task_id": None, "attempt": None, "node_id": None, "kind": "admission",
                 "allowed": True, "findings": findings, "at": now}]

    def _audit_now(self, entries: list[AuditEntry], now: float) -> None:
        """Audit something that has no job row to ride with (a denied submit)."""
        with self._ctx.store.unit_of_work() as uow:
            uow.audit.append(entries, now)
            uow.commit()

    def _attributes(self, queued: QueuedTask) -> Any:
        """What the policy plugins see of a queued task (one object per job and workflow task)."""
        return self._attributes_of(queued.job_id, queued.key)

    def _attributes_of(self, job_id: str, key: str) -> Any:
        name = key.split("[", 1)[0]
        found = self._attrs.get((job_id, name))
        if found is None:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            variables, tasks = job_variables(job.run.spec, job_id=job.id, domain=job.domain,
                                             priority=job.run.priority)
            for task_name in job.run.spec.tasks:
                self._attrs[(job.id, task_name)] = attributes_of(job.run.spec, variables, tasks, task_name)
            found = self._attrs.get((job_id, name))
        return found

    def _excluded(self, queued: QueuedTask) -> frozenset[str]:
        declined = self._declined.get(queued.task_id)
        if not declined:
            return frozenset(queued.excluded)
        return frozenset(queued.excluded) | frozenset(declined)

    def _offer(self, job: ActiveJob, key: str) -> dict[str, Any] | None:
        """What the node's owner policy reads of an offer: the job (without its task list) and the task."""
        attrs = self._attributes_of(job.id, key)
        if attrs is None:
            return {"job": {"id": job.id, "name": job.name, "domain": job.domain, "labels": {}}, "task": {}}
        return {"job": {k: v for k, v in attrs.job.items() if k != "tasks"}, "task": dict(attrs.task)}

    def _explain(self, unplaced: Any, nodes: int) -> str:
        """Why a task waits: nodes evaluated, counted by what ruled them out (filters, policies,
        declines), like Nomad's placement metrics."""
        text = unplaced.describe()
        declined = self._declined.get(unplaced.task_id)
        if declined:
            shown = "; ".join(f"{node}: {reason}" for node, reason in list(declined.items())[:3])
            more = f" (+{len(declined) - 3} more)" if len(declined) > 3 else ""
            text = f"{text}; declined by {len(declined)} node(s): {shown}{more}"
        return f"{nodes} nodes evaluated: {text}" if nodes else text

    def _allowed_by(self, policy_filter: Any, request: TaskRequest, task_id: str, attempt: int, node_id: str,
                    job: ActiveJob, audit: list[AuditEntry]) -> list[dict[str, Any]] | None:
        """Which policy versions allowed this placement (and what a dry-run policy would have
        denied), as the pass's `policy` filter decided it: the findings the attempt row names
        (None: no policy applies), and an audit record of what dry-run policies would deny."""
        if not self._policies:
            return None
        findings = policy_filter.decision(request, node_id) if policy_filter is not None else ()
        if not findings:
            return None
        # Tasks of a class placed on like nodes share one findings tuple (the filter's cache): one
        # list of dicts for all of them (rows are written as they are, never changed in memory).
        # Tuples differ per (class, node), their findings much less (one per allow and what it
        # read): each finding's dict is made once too.
        hit = self._findings_rows.get(id(findings))
        if hit is None or hit[0] is not findings:
            if len(self._findings_rows) > 10_000:
                self._findings_rows.clear()
            hit = self._findings_rows[id(findings)] = (findings, [self._finding_dict(f) for f in findings],
                                                      [f for f in findings if not f.allowed])
        would = hit[2]
        if would:
            audit.append(AuditEntry(actor="system:policy", action="policy.dry_run", subject=f"task:{task_id}",
                                    domain=job.domain, cause="; ".join(f.describe() for f in would),
                                    details={"kind": "placement", "node": node_id, "attempt": attempt,
                                             "would_deny": [f.to_dict() for f in would]}))
        return hit[1]

    def _finding_dict(self, finding: Any) -> dict[str, Any]:
        hit = self._finding_row.get(id(finding))
        if hit is None or hit[0] is not finding:
            if len(self._finding_row) > 10_000:
                self._finding_row.clear()
            hit = self._finding_row[id(finding)] = (finding, _compact(finding))
        return hit[1]

    def _on_declined(self, a: Assignment, node_id: str, event: dict[str, Any], now: float) -> None:
        """A node's owner declined an offer (or did not answer it in time): remember it for the
        task (that node is excluded for it), record the signed answer and audit it."""
        reason = str(event.get("reason") or "declined")
        self._declined.setdefault(a.task_id, {})[node_id] = reason
        policy = event.get("policy") or {}
        finding = {"scope": "node", "policy": str(policy.get("name") or "owner"),
                   "version": int(policy.get("version") or 0), "allowed": False, "reason": reason, "dry_run": False}
        self._pending.decisions.append({"job_id": a.job_id, "task_id": a.task_id, "attempt": a.attempt,
                                        "node_id": node_id, "kind": "offer", "allowed": False,
                                        "findings": [finding], "at": now})
        self._pending.audit.append(AuditEntry(
            actor=f"node:{node_id}" if not event.get("timeout") else "system:scheduler", action="task.declined",
            subject=f"task:{a.task_id}", domain=a.domain, cause=reason,
            details={"node": node_id, "job": a.job_id, "key": a.key, "attempt": a.attempt,
                     "policy": policy or None, "answer": event.get("answer"), "signature": event.get("signature"),
                     "signature_valid": event.get("signature_valid"), "timeout": bool(event.get("timeout"))}))

    def _expire_offers(self, now: float) -> None:
        """An offer a node has not answered (started or declined) within `offer_timeout_s` counts
        as a decline: the task goes back to the queue without that node."""
        bound = self.offer_timeout_s
        with self._lock:
            stale = []
            offers, current = self._offers, self._assignments
            for task_id, a in list(offers.items()):
                if a.status != S.LEASED.value or current.get(task_id) is not a:
                    del offers[task_id]  # answered or gone (a safety net: `_drop` and "started" pop it)
                elif a.committed and a.cancel_reason is None and now - a.offered_at > bound:
                    stale.append(a)
            if not stale:
                return
            touched: dict[str, ActiveJob] = {}
            attempts: list[dict[str, Any]] = []
            for a in stale:
                self._on_report(a.node_id, {"type": "declined", "task_id": a.task_id, "attempt": a.attempt, "at": now,
                                            "reason": f"the offer was not answered within {bound:g}s",
                                            "timeout": True}, now, touched, attempts)
            ticket = self._stage(now, jobs=list(touched.values()), attempts_update=attempts,
                                 notify={f"task:{a.task_id}" for a in stale})
        self._await(ticket)

    def node_lost(self, node_id: str, reason: str, *, status: str = "lost", actor: str = "system:health",
                  action: str = "task.lost", tasks: set[str] | None = None) -> int:
        """A node went Down: its attempts are lost. Requeue them without counting a failure.
        Also how attempts leave a node that is quarantined or whose drain deadline passed (status
        "evicted"): the node may still run them, but its reports of them are fenced from now on."""
        now = self._ctx.clock.now()
        with self._lock:
            lost = [a for a in self._by_node.get(node_id, {}).values() if tasks is None or a.task_id in tasks]
            if not lost:
                return 0
            touched: dict[str, ActiveJob] = {}
            attempts = []
            for a in lost:
                job = self._jobs.get(a.job_id)
                self._drop(a.task_id)
                if job is None:
                    continue
                touched[job.id] = job
                attempts.append({"task_id": a.task_id, "attempt": a.attempt, "status": status,
                                 "started_at": job.rows[a.key]["started_at"], "finished_at": now, "exit_code": None,
                                 "error": reason, "preempted_by": None})
                obs.TASK_OUTCOMES.labels(status).inc()
                if a.cancel_reason is not None and a.preempted_by is None:
                    commands = job.run.handle(TaskFinished(a.key, a.attempt, S.CANCELLED, error=a.cancel_reason), now)
                else:
                    commands = job.run.handle(TaskPreempted(a.key, a.attempt, reason=reason), now)
                job.dirty.add(a.key)
                self._apply(job, commands, now)
            ticket = self._stage(now, jobs=list(touched.values()), attempts_update=attempts, audit=[AuditEntry(
                actor=actor, action=action, subject=f"node:{node_id}", cause=reason,
                details={"attempts": [{"task": a.task_id, "attempt": a.attempt} for a in lost]})])
        self._await(ticket)
        self.wake.set()
        return len(lost)

    # -- checkpoints (services/checkpoints.py; the drain's STOP_AFTER_CHECKPOINT) -------------

    def is_current(self, task_id: str, attempt: int, node_id: str) -> bool:
        """Is this the task's current attempt, on this node (the fence for checkpoints)?"""
        with self._lock:
            a = self._assignments.get(task_id)
            return a is not None and a.node_id == node_id and a.attempt == attempt and a.cancel_reason is None

    def note_checkpoint(self, task_id: str, attempt: int, node_id: str, meta: dict[str, Any]) -> bool:
        """A checkpoint of the task was stored: its next attempt resumes from it. If the attempt
        was asked to checkpoint and stop, it is taken off its node now (evicted); True then."""
        now = self._ctx.clock.now()
        with self._lock:
            a = self._assignments.get(task_id)
            job = self._jobs.get(a.job_id) if a is not None else None
            if job is None:
                job = next((j for j in self._jobs.values() if any(r["id"] == task_id for r in j.rows.values())), None)
            row = next((r for r in job.rows.values() if r["id"] == task_id), None) if job is not None else None
            ticket = 0
            if row is not None and row["payload"] is not None:
                known = (row["payload"].get("checkpoint") or {}).get("seq", 0)
                if meta["seq"] > known:
                    row["payload"] = {**row["payload"], "checkpoint": meta}
                    job.dirty.add(row["key"])  # type: ignore[union-attr]
                    ticket = self._stage(now, jobs=[job])  # type: ignore[list-item]
            asked = (a is not None and a.node_id == node_id and a.attempt == attempt and a.checkpoint_asked) or None
        if ticket:
            self._await(ticket)
        if asked is None:
            return False
        return self.node_lost(node_id, f"{asked}; it saved checkpoint {meta['seq']} and resumes from it",
                              status="evicted", actor="system:lifecycle", action="task.evicted",
                              tasks={task_id}) > 0

    def ask_checkpoint(self, node_id: str, reason: str) -> tuple[int, int]:
        """Ask every attempt running on the node to checkpoint and stop (the agent tells the task:
        `ctx.should_stop()`, SIGTERM for commands). Attempts only leased (not started) cannot:
        they are moved at once. Returns (asked now, moved now)."""
        now = self._ctx.clock.now()
        with self._lock:
            asked, leased = 0, set()
            for a in self._by_node.get(node_id, {}).values():
                if a.cancel_reason is not None or a.checkpoint_asked is not None:
                    continue
                if a.status != S.RUNNING.value:
                    leased.add(a.task_id)
                    continue
                a.checkpoint_asked, a.checkpoint_asked_at = reason, now
                asked += 1
        if asked:
            self._notify(f"node:{node_id}")
        moved = self.node_lost(node_id, reason, status="evicted", actor="system:lifecycle", action="task.evicted",
                               tasks=leased) if leased else 0
        return asked, moved

    def checkpoint_asks_for(self, node_id: str) -> list[dict[str, Any]]:
        """The checkpoint-and-stop requests to send to the node (repeated at most every 2 s)."""
        now = self._ctx.clock.now()
        with self._lock:
            out = []
            for a in self._by_node.get(node_id, {}).values():
                if a.checkpoint_asked is not None and a.cancel_reason is None and now - a.checkpoint_sent_at >= 2.0:
                    a.checkpoint_sent_at = now
                    out.append({"task_id": a.task_id, "attempt": a.attempt, "reason": a.checkpoint_asked})
            return out

    def checkpoint_overdue(self, node_id: str, grace_s: float) -> set[str]:
        """Tasks on the node asked to checkpoint more than `grace_s` ago that are still there."""
        now = self._ctx.clock.now()
        with self._lock:
            return {a.task_id for a in self._by_node.get(node_id, {}).values()
                    if a.checkpoint_asked is not None and now - a.checkpoint_asked_at >= grace_s}

    # -- reads ------------------------------------------------------------------------------

    def assignments_on(self, node_id: str) -> list[dict[str, Any]]:
        """The attempts a node holds now (leased or running): the web UI's node page lists them,
        `policy test` sums other domains' CPU from them."""
        with self._lock:
            return [{"task_id": a.task_id, "job_id": a.job_id, "key": a.key, "attempt": a.attempt,
                     "status": a.status, "domain": a.domain, "cpu_millis": a.resources.cpu_millis}
                    for a in self._by_node.get(node_id, {}).values()]

    def exists(self, job_id: str) -> bool:
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            return uow.jobs.get_job(job_id) is not None

    def holds(self, job_id: str) -> bool:
        """Is the job live in memory (running, paused, being retried)? GC never touches those."""
        with self._lock:
            return job_id in self._jobs

    def begin_collect(self, job_id: str) -> bool:
        """GC is about to delete a finished job: False if it is live (then leave it); else no
        `retry` revives it until `end_collect`."""
        with self._lock:
            if job_id in self._jobs:
                return False
            self._collecting.add(job_id)
            return True

    def end_collect(self, job_id: str) -> None:
        with self._lock:
            self._collecting.discard(job_id)

    def stats(self) -> dict[str, Any]:
        """Sizes of the live state, for metrics: ready tasks queued (and of them those no node
        may take as things stand: parked until something changes), attempts held by nodes
        (leased or running), active jobs, and attempts per node."""
        with self._lock:
            running = sum(1 for a in self._assignments.values() if a.status == S.RUNNING.value)
            parked = sum(1 for t, q in self._parked.items() if self._queue.get(t) is q)
            return {"queued": len(self._queue), "unschedulable": parked,
                    "assigned": len(self._assignments), "running": running,
                    "jobs": len(self._jobs), "by_node": {n: len(held) for n, held in self._by_node.items() if held}}

    def attempts_on(self, node_id: str) -> int:
        """How many attempts a node holds (leased or running)."""
        with self._lock:
            return len(self._by_node.get(node_id, ()))

    def released_at(self, node_id: str) -> float | None:
        """When the node last gave up an attempt (finished, lost, moved), if it did since this
        runtime started: a node can work between two looks of the autoscaler."""
        with self._lock:
            return self._released_at.get(node_id)

    def waiting_tasks(self, now: float) -> list[tuple[str, str, Resources, dict[str, str]]]:
        """Ready tasks still in the queue (not paused, not backing off), with their domain, resources
        and required labels: the demand the autoscaler weighs (services/pools.py)."""
        out: list[tuple[str, str, Resources, dict[str, str]]] = []
        with self._lock:
            for queued in self._queue.values():
                job = self._jobs.get(queued.job_id)
                if job is None or job.status == "paused" or queued.not_before > now:
                    continue
                row = job.rows.get(queued.key)
                spec = job.run.spec.tasks.get(row["task"] if row is not None else queued.key.split("[", 1)[0])
                out.append((queued.task_id, queued.domain, queued.resources,
                            dict(spec.constraints) if spec is not None else {}))
        return out

    def job_summary(self, job_id: str) -> dict[str, Any]:
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            row = uow.jobs.get_job(job_id)
            if row is None:
                raise NotFound(f"no job {job_id!r}")
            counts = uow.jobs.counts(job_id)
        return job_out(row, counts)

    def is_terminal(self, status: str) -> bool:
        return status in {s.value for s in TERMINAL}


def job_out(row: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "domain": row["domain"], "status": row["status"],
            "priority": row["priority"], "params": row["params"], "submitted_by": row["submitted_by"],
            "submitted_at": row["submitted_at"], "started_at": row["started_at"], "finished_at": row["finished_at"],
            "counts": counts, "total": sum(counts.values()), "error": row["error"]}


def _compact(finding: Any) -> dict[str, Any]:
    """A placement's finding as its decision row keeps it: an allow needs no reason and is not a
    dry run, so those keys are written only when they say something (one row per placement: the
    bytes add up; `services/jobs.py` reads both forms)."""
    row = {"scope": finding.scope, "policy": finding.policy, "version": finding.version, "allowed": finding.allowed}
    if finding.reason:
        row["reason"] = finding.reason
    if finding.dry_run:
        row["dry_run"] = True
    return row
