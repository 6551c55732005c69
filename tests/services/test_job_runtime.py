"""The job runtime as a use case: JobRuntime + JobService over a real store (SQLite and PostgreSQL),
driven by a FakeClock and by simulated agents that speak the agent protocol in-process.

A simulated agent does what a real one does over HTTP: it polls `runtime.leases_for(node)` (the
lease long-poll), reports `started` for every new (task_id, attempt), later `finished` (or
`cancelled` for what it was told to stop), always with the `running` list, through
`runtime.report(node, events, logs, running)`. Nothing runs a process; an `outcome` function
decides what each attempt returns.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa

from polyfabric.controllers.node_health import NodeHealthController
from polyfabric.coordinator.bootstrap import UuidIds
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.audit import GENESIS
from polyfabric.domain.conditions import DetectorSettings
from polyfabric.domain.errors import ValidationError
from polyfabric.domain.node_states import NodeState
from polyfabric.domain.resources import Resources
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.nodes import Registration
from polyfabric.services.ports import AuditQuery
from polyfabric.services.runtime import JobRuntime
from polyfabric.store import migrate
from polyfabric.store.tables import audit_tip, metadata
from polyfabric.store.tables import jobs as job_table
from polyfabric.store.tables import tasks as task_table
from polyfabric.store.unit_of_work import SqlStore
from polyfabric.testing import FakeClock
from polyfabric.testing.signer import TestSigner

ADMIN = Principal("token", "at-admin", "admin", Role.ADMIN, ("*",))
DOMAIN = "lab"
FINAL = {"succeeded", "failed", "cancelled"}
SETTINGS = DetectorSettings(heartbeat_interval=2.0, unreachable_after=5.0, down_after=8.0, check_interval=0.5,
                            flap_window=600.0, flap_threshold=3)

Lease = dict[str, Any]
Outcome = Callable[[Lease], tuple[str, Any]]


def _value(lease: Lease) -> tuple[str, Any]:
    """The default outcome: succeed with the `v` argument (or null)."""
    return "succeeded", lease["args"].get("v")


# -- the world: one coordinator's services over a real store -------------------------------------


@dataclass
class World:
    url: str
    store: SqlStore
    clock: FakeClock
    services: Services
    join_token: str
    agents: dict[str, Agent] = field(default_factory=dict)

    @property
    def runtime(self) -> JobRuntime:
        return self.services.runtime

    def join(self, name: str, slots: int = 4) -> Agent:
        """Register a node, deliver its first heartbeat (it is Active) and give it an agent."""
        reg = Registration(public_key=public_key_raw(generate_private_key()), name=name, labels={},
                           capacity=Resources(slots=slots))
        node = self.services.nodes.register(reg, self.join_token)
        self.beat(node.id)
        agent = Agent(self, node.id, name)
        self.agents[node.id] = agent
        return agent

    def beat(self, *node_ids: str) -> None:
        for node_id in node_ids:
            entry = self.services.nodes.heartbeat(node_id, {}, None)
            if self.services.nodes.needs_settle(entry):
                self.services.nodes.settle(node_id)

    def submit(self, doc: dict[str, Any], params: dict[str, Any] | None = None, domain: str = DOMAIN) -> str:
        return str(self.runtime.submit(ADMIN, doc, params or {}, domain)["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.services.jobs.get(ADMIN, job_id))

    def status(self, job_id: str) -> str:
        return str(self.runtime.job_summary(job_id)["status"])

    def tasks(self, job_id: str) -> dict[str, dict[str, Any]]:
        """Every task of the job by key (foreach parents included), as the API shows them."""
        out: dict[str, dict[str, Any]] = {}
        after = None
        while True:
            page = self.services.jobs.tasks(ADMIN, job_id, status=None, after=after, limit=500)
            if not page:
                return out
            out.update((t["key"], t) for t in page)
            after = page[-1]["key"]

    def task(self, job_id: str, key: str) -> dict[str, Any]:
        row = self.tasks(job_id)[key]
        return dict(self.services.jobs.task(ADMIN, row["id"]))

    def statuses(self, job_id: str) -> dict[str, str]:
        return {k: t["status"] for k, t in self.tasks(job_id).items()}

    def audit(self, action: str, subject: str | None = None) -> list[Any]:
        with self.store.unit_of_work(readonly=True) as uow:
            return list(uow.audit.query(AuditQuery(subject=subject, action=action, limit=10000)))

    def active(self, *job_ids: str) -> list[dict[str, Any]]:
        """Task instances of these jobs that hold a place on a node (leased or running), from the store."""
        query = (sa.select(task_table.c.job_id, task_table.c.key, task_table.c.task, task_table.c.status)
                 .where(task_table.c.status.in_(("leased", "running"))).where(task_table.c.is_group.is_(False))
                 .where(task_table.c.job_id.in_(job_ids)))
        with self.store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def all_final(self, job_ids: list[str]) -> bool:
        query = sa.select(job_table.c.status).where(job_table.c.id.in_(job_ids))
        with self.store.engine.connect() as conn:
            return all(status in FINAL for status in conn.execute(query).scalars())

    def restart(self) -> World:
        """A new coordinator on the same database: fresh services, liveness and runtime loaded from
        the store. The agents carry over (same nodes, same held work), now talking to the new one."""
        self.store.close()
        world = _open(self.url, self.clock)
        world.join_token = self.join_token
        world.services.nodes.load_liveness()
        world.runtime.load()
        for agent in self.agents.values():
            agent.world = world
            world.agents[agent.node_id] = agent
        return world

    def drive(self, job_ids: list[str], outcome: Outcome = _value, *, agents: list[Agent] | None = None,
              rng: random.Random | None = None, max_steps: int = 500,
              check: Callable[[], None] | None = None) -> int:
        """Scheduling passes and agent rounds until every job is final; returns the steps taken.

        With `rng`, each agent finishes a random part of what it runs, in a random order."""
        agents = agents if agents is not None else list(self.agents.values())
        for step in range(1, max_steps + 1):
            self.runtime.schedule_once()
            if check:
                check()
            for agent in agents:
                agent.poll_and_start()
            if check:
                check()
            for agent in agents:
                agent.finish_some(outcome, rng)
            if check:
                check()
            if self.all_final(job_ids):
                return step
        raise AssertionError(f"jobs not finished after {max_steps} steps: {[self.status(j) for j in job_ids]}")


def _open(url: str, clock: FakeClock, *, upgrade: bool = True) -> World:
    store = SqlStore(url)
    if upgrade:
        migrate.upgrade(store.engine)
    ctx = ServiceContext(store=store, clock=clock, ids=UuidIds(), signer=TestSigner(), detector=SETTINGS)
    return World(url, store, clock, Services.build(ctx), "")


def make_world(url: str) -> World:
    world = _open(url, FakeClock(), upgrade=False)
    world.join_token = world.services.tokens.create_join(ADMIN, domain=DOMAIN, ttl_s=None, uses=None).token
    return world


# -- a simulated agent --------------------------------------------------------------------------


@dataclass
class Agent:
    world: World
    node_id: str
    name: str
    held: dict[tuple[str, int], Lease] = field(default_factory=dict)  # received, not reported done
    started: set[tuple[str, int]] = field(default_factory=set)
    runs: list[tuple[str, str, int]] = field(default_factory=list)  # (job_id, key, attempt) it started
    accepted_done: Counter[tuple[str, int]] = field(default_factory=Counter)

    def _at(self) -> float:
        return self.world.clock.now()

    def running(self, exclude: Collection[tuple[str, int]] = ()) -> list[dict[str, Any]]:
        return [{"task_id": t, "attempt": a} for (t, a) in sorted(self.started) if (t, a) not in exclude]

    def poll(self) -> tuple[list[Lease], list[dict[str, Any]]]:
        """The lease call, saying which attempts it holds; remember new (task_id, attempt)s and return
        them with the cancels."""
        leases, cancels = self.world.runtime.leases_for(self.node_id, set(self.held) | self.started)
        new = []
        for lease in leases:
            ident = (lease["task_id"], lease["attempt"])
            if ident not in self.held and ident not in self.started:
                self.held[ident] = lease
                new.append(lease)
        return new, cancels

    def report(self, events: list[dict[str, Any]], *, refused_ok: bool = False) -> dict[str, Any]:
        done = {(e["task_id"], e["attempt"]) for e in events if e["type"] != "started"}
        answer: dict[str, Any] = self.world.runtime.report(self.node_id, events, [], self.running(done))
        refused = {(r["task_id"], r["attempt"]) for r in answer["refused"]}
        if not refused_ok:
            assert not answer["refused"], answer["refused"]
        for event in events:
            ident = (event["task_id"], event["attempt"])
            if event["type"] == "started" and ident not in refused:
                self.started.add(ident)
            elif event["type"] != "started":
                if ident not in refused:
                    self.accepted_done[ident] += 1
                self.held.pop(ident, None)
                self.started.discard(ident)
        return answer

    def start(self, leases: list[Lease]) -> dict[str, Any]:
        for lease in leases:
            self.runs.append((lease["job_id"], lease["key"], lease["attempt"]))
        return self.report([{"type": "started", "task_id": lease["task_id"], "attempt": lease["attempt"],
                             "at": self._at()} for lease in leases])

    def finished(self, lease: Lease, status: str = "succeeded", result: Any = None,
                 error: str | None = None) -> dict[str, Any]:
        return {"type": "finished", "task_id": lease["task_id"], "attempt": lease["attempt"], "at": self._at(),
                "status": status, "result": result, "error": error,
                "exit_code": 0 if status == "succeeded" else 1}

    def finish(self, lease: Lease, status: str = "succeeded", result: Any = None,
               error: str | None = None) -> dict[str, Any]:
        return self.report([self.finished(lease, status, result, error)])

    def cancel_ack(self, cancels: list[dict[str, Any]]) -> dict[str, Any]:
        """Stop what the coordinator asked to stop and say so."""
        return self.report([{"type": "cancelled", "task_id": c["task_id"], "attempt": c["attempt"],
                             "at": self._at(), "reason": c["reason"]} for c in cancels])

    def poll_and_start(self) -> None:
        _new, cancels = self.poll()
        mine = [c for c in cancels if (c["task_id"], c["attempt"]) in self.held]
        if mine:
            self.cancel_ack(mine)
        waiting = [lease for ident, lease in self.held.items() if ident not in self.started]
        if waiting:
            self.start(waiting)

    def finish_some(self, outcome: Outcome, rng: random.Random | None) -> None:
        running = [self.held[i] for i in sorted(self.started) if i in self.held]
        if rng is not None:
            rng.shuffle(running)
            running = running[:rng.randint(0, len(running))]
        if running:
            events = []
            for lease in running:
                status, result = outcome(lease)
                events.append(self.finished(lease, status, result, None if status == "succeeded" else "boom"))
            self.report(events)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated_url(module_db_url: str) -> str:
    """One database per backend for the module (a fresh PostgreSQL database costs seconds), migrated
    once; every test starts from empty tables."""
    url = module_db_url
    if url.startswith("postgresql"):
        # No fsync wait per commit (nothing here survives a database crash): the runtime commits
        # once per pass and per report, and those waits were most of the PostgreSQL half's time.
        url += "?options=-c%20synchronous_commit%3Doff"
    store = SqlStore(url)
    migrate.upgrade(store.engine)
    store.close()
    return url


def _wipe(url: str) -> None:
    store = SqlStore(url)
    names = [t.name for t in reversed(metadata.sorted_tables)]
    with store.engine.begin() as conn:
        for name in names:  # DELETE: far cheaper than TRUNCATE on tables this small
            conn.exec_driver_sql(f"DELETE FROM {name}")
        conn.execute(audit_tip.insert().values(id=1, seq=0, hash=GENESIS))  # as the migration seeds it
    store.close()


@pytest.fixture
def world(migrated_url: str) -> Iterator[World]:
    _wipe(migrated_url)
    w = make_world(migrated_url)
    yield w
    w.store.close()


def fn(**extra: Any) -> dict[str, Any]:
    """A function task (it never runs: the simulated agent decides its outcome)."""
    return {"function": "pkg.mod:fn", **extra}


def _item_runs(world: World, job_id: str) -> Counter[str]:
    return Counter(key for agent in world.agents.values() for (j, key, _a) in agent.runs if j == job_id)


# -- 1. fan-out and fan-in ----------------------------------------------------------------------


def test_fan_out_of_100_items_then_fan_in_in_item_order(world: World) -> None:
    for i in range(3):
        world.join(f"n{i}", slots=8)
    doc = {"name": "fan", "tasks": {
        "work": fn(foreach=list(range(100)), args={"v": "{{ item }}"}),
        "total": fn(depends_on=["work"], args={"values": "{{ tasks.work.result }}"}),
    }}
    job = world.submit(doc)
    seen: dict[str, Any] = {}

    def outcome(lease: Lease) -> tuple[str, Any]:
        if lease["key"] == "total":
            seen["values"] = lease["args"]["values"]
            return "succeeded", sum(x["sq"] for x in lease["args"]["values"])
        return "succeeded", {"sq": lease["args"]["v"] ** 2}

    # Random partial finishing in random order: results arrive far out of item order.
    world.drive([job], outcome, rng=random.Random(7))
    assert world.status(job) == "succeeded"
    runs = _item_runs(world, job)
    assert runs == Counter({f"work[{i}]": 1 for i in range(100)} | {"total": 1})
    expected = [{"sq": i * i} for i in range(100)]
    assert seen["values"] == expected
    result = world.services.jobs.result(ADMIN, job)
    assert result == {"job_id": job, "status": "succeeded", "result": {"total": sum(i * i for i in range(100))},
                      "tasks": {"work": expected, "total": sum(i * i for i in range(100))}}
    detail = world.job(job)
    assert detail["counts"] == {"succeeded": 101} and detail["total"] == 101
    tasks = world.tasks(job)
    assert tasks["work"]["is_group"] and tasks["work"]["status"] == "succeeded"
    assert all(t["attempt"] == 1 and t["failures"] == 0 for k, t in tasks.items() if k != "work")


# -- 2. conditions and trigger rules ------------------------------------------------------------


def test_when_true_and_false_and_skips_flow_through_trigger_rules(world: World) -> None:
    agent = world.join("n0", slots=8)
    doc = {"name": "cond", "params": {"limit": 3}, "tasks": {
        "a": fn(args={"v": 5}),
        "yes": fn(depends_on=["a"], when="tasks.a.result > params.limit", args={"v": "y"}),
        "no": fn(depends_on=["a"], when="tasks.a.result > 10"),
        "after_no": fn(depends_on=["no"]),  # all_success: the skip flows on
        "cleanup": fn(depends_on=["no", "after_no"], trigger="all_done"),  # runs whatever happened
        "either": fn(depends_on=["yes", "no"], trigger="one_success"),  # yes succeeded: runs
        "neither": fn(depends_on=["no", "after_no"], trigger="one_success"),  # nothing succeeded: skipped
        "both": fn(depends_on=["yes", "no"]),  # all_success with one skipped: skipped
        "last": fn(depends_on=["neither", "both"], trigger="all_done", args={"v": "end"}),
    }}
    job = world.submit(doc)
    world.drive([job])
    assert world.statuses(job) == {
        "a": "succeeded", "yes": "succeeded", "no": "skipped", "after_no": "skipped", "cleanup": "succeeded",
        "either": "succeeded", "neither": "skipped", "both": "skipped", "last": "succeeded",
    }
    assert sorted(key for _j, key, _a in agent.runs) == ["a", "cleanup", "either", "last", "yes"]
    assert world.status(job) == "succeeded"
    result = world.services.jobs.result(ADMIN, job)
    assert result["result"] == {"cleanup": None, "either": None, "last": "end"}
    assert result["tasks"]["no"] is None and result["tasks"]["yes"] == "y"
    tasks = world.tasks(job)
    assert [tasks[k]["attempt"] for k in ("no", "after_no", "neither", "both")] == [0, 0, 0, 0]  # never handed out


# -- 3. retries and backoff ---------------------------------------------------------------------


def test_retries_with_backoff_then_success(world: World) -> None:
    agent = world.join("n0")
    doc = {"name": "flaky", "tasks": {"t": fn(retries={"limit": 3, "backoff": "10s", "factor": 2})}}
    job = world.submit(doc)
    t0 = world.clock.now()
    world.runtime.schedule_once()
    [lease] = agent.poll()[0]
    assert lease["attempt"] == 1
    agent.start([lease])
    world.clock.advance(1)
    agent.finish(lease, "failed", error="boom 1")
    row = world.task(job, "t")
    assert (row["status"], row["attempt"], row["failures"]) == ("ready", 2, 1)
    assert row["not_before"] == pytest.approx(t0 + 1 + 10)
    # Not leased before not_before, however often the scheduler runs.
    for _ in range(3):
        assert world.runtime.schedule_once() == 0
        assert agent.poll() == ([], [])
    world.clock.advance(9.9)
    assert world.runtime.schedule_once() == 0
    world.clock.advance(0.2)
    assert world.runtime.schedule_once() == 1
    [lease] = agent.poll()[0]
    assert lease["attempt"] == 2
    agent.start([lease])
    agent.finish(lease, "failed", error="boom 2")
    row = world.task(job, "t")
    assert (row["status"], row["attempt"], row["failures"]) == ("ready", 3, 2)
    assert row["not_before"] == pytest.approx(world.clock.now() + 20)  # factor 2
    world.clock.advance(19.5)
    assert world.runtime.schedule_once() == 0
    world.clock.advance(1)
    assert world.runtime.schedule_once() == 1
    [lease] = agent.poll()[0]
    assert lease["attempt"] == 3
    agent.start([lease])
    agent.finish(lease, "succeeded", result=42)
    row = world.task(job, "t")
    assert (row["status"], row["attempt"], row["failures"], row["result"]) == ("succeeded", 3, 2, 42)
    assert [(a["attempt"], a["status"]) for a in row["attempts"]] == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    assert [a["error"] for a in row["attempts"][:2]] == ["boom 1", "boom 2"]
    assert world.status(job) == "succeeded"


def test_retries_used_up_fail_the_job(world: World) -> None:
    agent = world.join("n0")
    job = world.submit({"name": "doomed", "tasks": {"t": fn(retries={"limit": 1, "backoff": 0})}})
    world.drive([job], lambda lease: ("failed", None))
    row = world.task(job, "t")
    assert (row["status"], row["attempt"], row["failures"]) == ("failed", 2, 1)
    assert len(agent.runs) == 2
    assert world.status(job) == "failed"


def test_a_running_jobs_watchers_are_woken_at_once_then_once_per_gap_on_one_thread(world: World) -> None:
    """The events long-poll's wake-ups: the first change of a running job at once, the changes
    that follow within JOB_NOTIFY_GAP_S gathered into one wake a moment later (on the runtime's
    one deferred thread, not a thread per job), the job's end at once."""
    wakes: list[tuple[str, str]] = []
    held_back = threading.Event()
    main = threading.current_thread().name

    def notify(key: str) -> None:
        if key.startswith("job:"):
            wakes.append((key, threading.current_thread().name))
            if threading.current_thread().name != main:
                held_back.set()

    world.runtime.set_notifier(notify)
    agent = world.join("n0", slots=12)
    jobs = [world.submit({"name": f"j{i}", "tasks": {f"t{k}": fn() for k in range(4)}}) for i in range(3)]
    threads = threading.active_count()
    world.runtime.schedule_once()
    leases = agent.poll()[0]
    for lease in leases:  # one report (one commit) per task: changes in quick succession
        agent.start([lease])
    assert threading.active_count() <= threads + 1  # at most the deferred thread, whatever the jobs
    assert held_back.wait(10)
    deadline = time.monotonic() + 10
    while len([w for w in wakes if w[1] != main]) < len(jobs) and time.monotonic() < deadline:
        time.sleep(0.01)
    for job in jobs:
        mine = [thread for key, thread in wakes if key == f"job:{job}"]
        # the pass's commit woke it at once; the starts that followed were gathered into one
        # held-back wake (all of them fall within the gap on any machine this test runs on)
        assert mine[0] == main
        assert mine.count("polyfabric-job-wakes") == 1, mine
    wakes.clear()
    for lease in leases:
        agent.finish(lease)
    ends = {key for key, thread in wakes if thread == main}
    assert ends >= {f"job:{job}" for job in jobs}  # the end of each job woke its watchers at once


# -- 4. fencing ---------------------------------------------------------------------------------


def _comparable(task: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in task.items() if k != "pending_reason"}


def test_fencing_refuses_stale_foreign_and_unknown_reports(world: World) -> None:
    a = world.join("na", slots=1)
    b = world.join("nb", slots=1)
    job = world.submit({"name": "fenced", "tasks": {"t": fn()}})
    world.runtime.schedule_once()
    [lease1] = a.poll()[0] + b.poll()[0]
    first = a if a.held else b
    # The first node declines attempt 1: it goes back to the queue, not counted as a failure, and
    # never to that node again, so attempt 2 lands on the other one.
    answer = first.report([{"type": "rejected", "task_id": lease1["task_id"], "attempt": 1,
                            "at": world.clock.now(), "reason": "not enough memory"}])
    assert answer["accepted"] == 1
    assert world.runtime.schedule_once() == 1
    [lease2] = a.poll()[0] + b.poll()[0]
    holder = b if first is a else a
    assert (lease2["task_id"], 2) in holder.held
    task_id = lease2["task_id"]
    before = _comparable(world.task(job, "t"))
    assert (before["status"], before["attempt"], before["failures"], before["node_id"]) == (
        "leased", 2, 0, holder.node_id)
    refusals_before = len(world.audit("task.report_refused"))

    cases = [
        # a stale attempt, from the node that holds the current one
        (holder, {"type": "finished", "task_id": task_id, "attempt": 1, "status": "succeeded", "result": 1}),
        (holder, {"type": "started", "task_id": task_id, "attempt": 1}),
        # an attempt that does not exist yet
        (holder, {"type": "finished", "task_id": task_id, "attempt": 3, "status": "succeeded", "result": 3}),
        # the current attempt, from another node
        (first, {"type": "started", "task_id": task_id, "attempt": 2}),
        (first, {"type": "finished", "task_id": task_id, "attempt": 2, "status": "succeeded", "result": 2}),
        # a task nobody knows
        (holder, {"type": "finished", "task_id": "t-0000000000000000", "attempt": 1, "status": "succeeded"}),
    ]
    for agent, event in cases:
        answer = world.runtime.report(agent.node_id, [{**event, "at": world.clock.now()}], [], [])
        assert answer["accepted"] == 0
        assert answer["refused"] == [{"task_id": event["task_id"], "attempt": event["attempt"],
                                      "reason": answer["refused"][0]["reason"]}]
        assert "not current" in answer["refused"][0]["reason"]
    assert _comparable(world.task(job, "t")) == before
    refusals = world.audit("task.report_refused")[refusals_before:]
    assert len(refusals) == len(cases)
    # Log chunks are fenced alike: the stale attempt's are refused (one refusal per attempt, however
    # many chunks) and audited, and none is stored; the current attempt's are kept.
    chunk = {"task_id": task_id, "stream": "stdout", "data": "late\n"}
    answer = world.runtime.report(holder.node_id, [], [{**chunk, "attempt": 1, "offset": 0},
                                                       {**chunk, "attempt": 1, "offset": 5},
                                                       {**chunk, "attempt": 2, "offset": 0}], [])
    assert [(r["task_id"], r["attempt"]) for r in answer["refused"]] == [(task_id, 1)]
    assert "not current" in answer["refused"][0]["reason"]
    [log_refusal] = world.audit("task.report_refused")[refusals_before + len(cases):]
    assert (log_refusal.actor, log_refusal.subject) == (f"node:{holder.node_id}", f"task:{task_id}")
    assert log_refusal.details == {"type": "log", "attempt": 1, "chunks": 2}
    kept = world.services.jobs.logs(ADMIN, task_id, attempt=None, after=0)["chunks"]
    assert [(c["attempt"], c["data"]) for c in kept] == [(2, "late\n")]
    refusals_before += 1
    assert [r.subject for r in refusals] == [f"task:{e['task_id']}" for _a, e in cases]
    assert [r.actor for r in refusals] == [f"node:{a.node_id}" for a, _e in cases]
    assert all(r.details["attempt"] == e["attempt"] and r.details["type"] == e["type"]
               for r, (_a, e) in zip(refusals, cases, strict=True))
    # The node that ran attempt 1 repeating its report about it is acknowledged, and changes nothing.
    answer = world.runtime.report(first.node_id, [{"type": "rejected", "task_id": task_id, "attempt": 1,
                                                   "at": world.clock.now(), "reason": "again"}], [], [])
    assert answer == {"accepted": 1, "refused": [], "cancel": []}
    assert _comparable(world.task(job, "t")) == before
    stranger = first
    # A stranger that claims to run the attempt is told to stop it.
    answer = world.runtime.report(stranger.node_id, [], [], [{"task_id": task_id, "attempt": 2}])
    assert answer["cancel"] == [{"task_id": task_id, "attempt": 2, "reason": "this attempt is no longer current"}]

    # The holder's reports, each sent twice (at-least-once delivery): applied once, never refused.
    started = {"type": "started", "task_id": task_id, "attempt": 2, "at": world.clock.now()}
    for _ in range(2):
        answer = world.runtime.report(holder.node_id, [started], [], [{"task_id": task_id, "attempt": 2}])
        assert answer == {"accepted": 1, "refused": [], "cancel": []}
    world.clock.advance(1)
    done = {**holder.finished(lease2, "succeeded", {"ok": True})}
    for _ in range(3):
        answer = world.runtime.report(holder.node_id, [started, done], [], [])
        assert answer == {"accepted": 2, "refused": [], "cancel": []}
    row = world.task(job, "t")
    assert (row["status"], row["attempt"], row["result"], row["failures"]) == ("succeeded", 2, {"ok": True}, 0)
    assert [(x["attempt"], x["status"]) for x in row["attempts"]] == [(1, "rejected"), (2, "succeeded")]
    events = world.services.jobs.events(ADMIN, job, 0)["events"]
    assert [e["status"] for e in events if e["attempt"] == 2].count("running") == 1
    assert [e["status"] for e in events if e["attempt"] == 2].count("succeeded") == 1
    assert len(world.audit("task.report_refused")) == refusals_before + len(cases)
    assert world.status(job) == "succeeded"


# -- 5. cancel ----------------------------------------------------------------------------------


def test_cancel_queued_at_once_and_in_flight_when_the_agent_reports(world: World) -> None:
    agent = world.join("n0", slots=2)
    doc = {"name": "long", "tasks": {
        "work": fn(foreach=list(range(6)), args={"v": "{{ item }}"}),
        "after": fn(depends_on=["work"]),
    }}
    job = world.submit(doc)
    assert world.runtime.schedule_once() == 2
    leases = agent.poll()[0]
    assert len(leases) == 2
    agent.start(leases[:1])  # one running, one leased but not started
    world.runtime.intervene(ADMIN, job, "cancel", "no longer needed")
    statuses = world.statuses(job)
    in_flight = {lease["key"] for lease in leases}
    assert {statuses[k] for k in in_flight} == {"running", "leased"}
    assert all(s == "cancelled" for k, s in statuses.items() if k.startswith("work[") and k not in in_flight)
    assert statuses["after"] == "cancelled"
    assert world.status(job) not in FINAL
    new, cancels = agent.poll()
    assert new == []
    assert sorted((c["task_id"], c["attempt"]) for c in cancels) == sorted(
        (lease["task_id"], lease["attempt"]) for lease in leases)
    assert all("cancelled by token:admin: no longer needed" in c["reason"] for c in cancels)
    # Nothing more is placed while the job is cancelling; the cancel is repeated every 2 s at most.
    assert world.runtime.schedule_once() == 0
    assert agent.poll() == ([], [])
    world.clock.advance(2)
    assert agent.poll() == ([], cancels)
    # The report's answer repeats the cancel for what the agent still runs.
    answer = world.runtime.report(agent.node_id, [], [], agent.running())
    assert [c["task_id"] for c in answer["cancel"]] == [leases[0]["task_id"]]
    agent.cancel_ack(cancels)
    assert set(world.statuses(job).values()) == {"cancelled"}
    assert world.status(job) == "cancelled"
    assert world.job(job)["finished_at"] is not None
    assert agent.poll() == ([], [])
    assert len(world.audit("job.cancel", f"job:{job}")) == 1
    row = world.task(job, leases[0]["key"])
    assert [x["status"] for x in row["attempts"]] == ["cancelled"] and row["failures"] == 0


# -- 6. pause and resume ------------------------------------------------------------------------


def test_pause_stops_placements_and_resume_continues(world: World) -> None:
    agent = world.join("n0", slots=2)
    job = world.submit({"name": "pausable", "tasks": {"work": fn(foreach=list(range(5)), args={"v": "{{ item }}"})}})
    assert world.runtime.schedule_once() == 2
    leases = agent.poll()[0]
    agent.start(leases)
    world.runtime.intervene(ADMIN, job, "pause", "maintenance")
    assert world.status(job) == "paused"
    for lease in leases:  # what runs goes on and may finish
        agent.finish(lease, result=lease["args"]["v"])
    for _ in range(3):
        assert world.runtime.schedule_once() == 0
        assert agent.poll() == ([], [])
    statuses = world.statuses(job)
    assert sorted(statuses.values()).count("succeeded") == 2
    assert [k for k, s in statuses.items() if s in ("leased", "running") and k != "work"] == []
    assert [s for k, s in statuses.items() if k.startswith("work[") and s != "succeeded"] == ["ready"] * 3
    world.runtime.intervene(ADMIN, job, "resume", "")
    assert world.status(job) == "running"
    world.drive([job])
    assert world.status(job) == "succeeded"
    assert world.services.jobs.result(ADMIN, job)["tasks"]["work"] == [0, 1, 2, 3, 4]
    assert _item_runs(world, job) == Counter({f"work[{i}]": 1 for i in range(5)})


def test_a_job_paused_before_anything_ran_places_nothing(world: World) -> None:
    agent = world.join("n0", slots=4)
    job = world.submit({"name": "held", "tasks": {"a": fn(), "b": fn(depends_on=["a"])}})
    world.runtime.intervene(ADMIN, job, "pause", "")
    assert world.runtime.schedule_once() == 0
    assert agent.poll() == ([], [])
    assert world.statuses(job) == {"a": "ready", "b": "waiting"}
    world.runtime.intervene(ADMIN, job, "resume", "")
    world.drive([job])
    assert world.status(job) == "succeeded"


# -- 7. preemption ------------------------------------------------------------------------------


def test_preemption_evicts_the_lowest_priority_victim_and_requeues_it(world: World) -> None:
    agent = world.join("n0", slots=2)
    low = world.submit({"name": "low", "tasks": {"a": fn(priority=1, args={"v": "a"}),
                                                 "b": fn(priority=3, args={"v": "b"})}})
    assert world.runtime.schedule_once() == 2
    agent.start(agent.poll()[0])
    by_key = {lease["key"]: lease for lease in agent.held.values()}
    high = world.submit({"name": "high", "priority": 10, "tasks": {"urgent": fn(args={"v": "u"})}})
    urgent_id = world.tasks(high)["urgent"]["id"]
    assert world.runtime.schedule_once() == 0  # the victim must stop first
    new, cancels = agent.poll()
    assert new == []
    assert [(c["task_id"], c["attempt"]) for c in cancels] == [(by_key["a"]["task_id"], 1)]
    assert urgent_id in cancels[0]["reason"]
    [audit] = world.audit("task.preempted")
    assert audit.subject == f"task:{by_key['a']['task_id']}"
    assert audit.details["for_task"] == urgent_id and audit.details["key"] == "a"
    assert world.tasks(high)["urgent"]["status"] == "ready"
    assert world.runtime.schedule_once() == 0  # no second victim while the first one stops
    assert len(world.audit("task.preempted")) == 1

    agent.cancel_ack(cancels)
    row = world.task(low, "a")
    assert (row["status"], row["failures"], row["preemptions"], row["attempt"]) == ("ready", 0, 1, 2)
    assert [(x["attempt"], x["status"], x["preempted_by"]) for x in row["attempts"]] == [(1, "preempted", urgent_id)]
    assert world.runtime.schedule_once() == 1
    [lease] = agent.poll()[0]
    assert lease["key"] == "urgent"
    assert world.statuses(low)["a"] == "ready"  # no room for it yet, and it evicts nobody
    world.drive([low, high])
    assert world.status(low) == world.status(high) == "succeeded"
    row = world.task(low, "a")
    assert (row["status"], row["failures"], row["preemptions"], row["attempt"]) == ("succeeded", 0, 1, 2)
    assert world.task(low, "b")["attempt"] == 1
    assert world.services.jobs.result(ADMIN, low)["tasks"] == {"a": "a", "b": "b"}


# -- 8. concurrency limits ----------------------------------------------------------------------


def test_a_semaphore_shared_by_two_jobs_is_never_exceeded(world: World) -> None:
    world.join("n0", slots=4)
    world.join("n1", slots=4)
    world.runtime.set_semaphore(ADMIN, "gpu-lab", 2)
    doc = {"name": "sem", "tasks": {
        "work": fn(foreach=list(range(10)), semaphore="gpu-lab", args={"v": "{{ item }}"}),
        "free": fn(foreach=list(range(4))),  # no semaphore: not held back
    }}
    jobs = [world.submit(doc), world.submit(doc)]
    peak = {"sem": 0}

    def check() -> None:
        held = [t for t in world.active(*jobs) if t["task"] == "work"]
        assert len(held) <= 2, held
        assert world.runtime.semaphore_use().get("gpu-lab", 0) <= 2
        peak["sem"] = max(peak["sem"], len(held))

    steps = world.drive(jobs, rng=random.Random(3), check=check)
    assert steps >= 10 and peak["sem"] == 2
    assert all(world.status(j) == "succeeded" for j in jobs)
    assert world.runtime.semaphore_use().get("gpu-lab", 0) == 0


def test_global_and_domain_limits_are_never_exceeded(world: World) -> None:
    for i in range(3):
        world.join(f"n{i}", slots=4)
    world.services.domains.create(ADMIN, "other")
    world.runtime.set_limits(ADMIN, 3, {DOMAIN: 2}, None)
    doc = {"name": "many", "tasks": {"work": fn(foreach=list(range(8)))}}
    lab = [world.submit(doc), world.submit(doc)]
    other = [world.submit(doc, domain="other")]
    peak = {"total": 0, "lab": 0}

    def check() -> None:
        held_lab = len(world.active(*lab))
        held = held_lab + len(world.active(*other))
        assert held <= 3 and held_lab <= 2, (held, held_lab)
        peak["total"], peak["lab"] = max(peak["total"], held), max(peak["lab"], held_lab)

    world.drive(lab + other, rng=random.Random(5), check=check)
    assert peak == {"total": 3, "lab": 2}
    assert all(world.status(j) == "succeeded" for j in lab + other)


def test_workflow_and_task_max_parallel_are_never_exceeded(world: World) -> None:
    world.join("n0", slots=8)
    world.join("n1", slots=8)
    doc = {"name": "capped", "max_parallel": 3, "tasks": {
        "a": fn(foreach=list(range(10)), args={"v": "{{ item }}"}),
        "b": fn(foreach=list(range(10)), max_parallel=1),
    }}
    job = world.submit(doc)
    other = world.submit({"name": "free", "tasks": {"x": fn(foreach=list(range(6)))}})
    peak = {"job": 0, "b": 0, "other": 0}

    def check() -> None:
        held = world.active(job)
        assert len(held) <= 3, held
        assert sum(1 for t in held if t["task"] == "b") <= 1
        peak["job"] = max(peak["job"], len(held))
        peak["b"] = max(peak["b"], sum(1 for t in held if t["task"] == "b"))
        peak["other"] = max(peak["other"], len(world.active(other)))

    world.drive([job, other], rng=random.Random(11), check=check)
    assert peak == {"job": 3, "b": 1, "other": 6}  # the cap is the workflow's own
    assert world.status(job) == "succeeded"
    assert world.services.jobs.result(ADMIN, job)["tasks"]["a"] == list(range(10))


# -- 9. a node lost -----------------------------------------------------------------------------


def test_attempts_on_a_node_that_went_down_run_elsewhere_without_counting_failures(world: World) -> None:
    lost = world.join("lost", slots=4)
    controller = NodeHealthController(world.services.ctx, world.services.nodes, on_down=world.runtime.node_lost)
    controller.run_once()
    job = world.submit({"name": "survive", "tasks": {"work": fn(foreach=list(range(4)), args={"v": "{{ item }}"},
                                                                retries=0)}})
    assert world.runtime.schedule_once() == 4
    leases = lost.poll()[0]
    lost.start(leases[:2])  # two running, two leased
    spare = world.join("spare", slots=4)
    for _ in range(int(SETTINGS.down_after / 0.5) + 2):  # "lost" falls silent; "spare" keeps beating
        world.clock.advance(0.5)
        world.beat(spare.node_id)
        controller.run_once()
    entry = world.services.ctx.liveness.get(lost.node_id)
    assert entry is not None and entry.state == NodeState.DOWN
    [audit] = world.audit("task.lost", f"node:{lost.node_id}")
    assert len(audit.details["attempts"]) == 4
    for key, row in world.tasks(job).items():
        if key != "work":
            assert (row["status"], row["failures"], row["node_id"]) == ("ready", 0, None), row
    assert lost.poll() == ([], [])  # nothing for the lost node any more
    # The lost node's late report is fenced.
    answer = world.runtime.report(lost.node_id, [lost.finished(leases[0], result=0)], [], [])
    assert answer["accepted"] == 0 and len(answer["refused"]) == 1
    world.drive([job], agents=[spare])
    assert world.status(job) == "succeeded"
    assert world.services.jobs.result(ADMIN, job)["tasks"]["work"] == [0, 1, 2, 3]
    for key in world.tasks(job):
        if key == "work":
            continue
        task = world.task(job, key)
        assert (task["failures"], task["attempt"], task["node_id"]) == (0, 2, spare.node_id)
        assert [(x["attempt"], x["status"], x["node_id"]) for x in task["attempts"]] == [
            (1, "lost", lost.node_id), (2, "succeeded", spare.node_id)]


# -- 10. a coordinator restart ------------------------------------------------------------------


def test_restart_mid_workflow_continues_without_re_running_anything(world: World) -> None:
    agent = world.join("n0", slots=3)
    doc = {"name": "durable", "tasks": {
        "split": fn(args={"v": 3}),
        "work": fn(depends_on=["split"], foreach=list(range(6)), args={"v": "{{ item }}"}),
        "join": fn(depends_on=["work"], args={"values": "{{ tasks.work.result }}"}),
    }}
    job = world.submit(doc)
    world.runtime.schedule_once()
    [split] = agent.poll()[0]
    agent.start([split])
    agent.finish(split, result=3)
    assert world.runtime.schedule_once() == 3
    leases = sorted(agent.poll()[0], key=lambda lease: lease["key"])
    agent.start(leases[:2])
    agent.finish(leases[0], result=0)  # work[0] done; work[1] running; work[2] leased, not started
    assert world.statuses(job) == {"split": "succeeded", "work": "running", "work[0]": "succeeded",
                                   "work[1]": "running", "work[2]": "leased", "work[3]": "ready",
                                   "work[4]": "ready", "work[5]": "ready", "join": "waiting"}

    world = world.restart()
    assert world.status(job) == "running"
    # The leased but unstarted attempt is still delivered, with the same attempt number.
    leases_again, cancels = world.runtime.leases_for(agent.node_id)
    assert cancels == []
    assert [(x["key"], x["task_id"], x["attempt"]) for x in leases_again] == [
        ("work[2]", leases[2]["task_id"], 1)]
    assert leases_again[0]["args"] == leases[2]["args"]
    # A repeat of a report the old coordinator accepted changes nothing.
    before = _comparable(world.task(job, "work[0]"))
    repeat = world.runtime.report(agent.node_id, [agent.finished(leases[0], result=0)], [], [])
    assert _comparable(world.task(job, "work[0]")) == before
    # ... and is a harmless repeat, not a fenced late result (no refusal, nothing audited).
    assert (repeat["accepted"], repeat["refused"]) == (1, [])
    assert world.audit("task.report_refused") == []
    agent.accepted_done[(leases[0]["task_id"], 1)] = 1
    # The running attempt reports to the new coordinator.
    agent.finish(leases[1], result=1)
    seen: dict[str, Any] = {}

    def outcome(lease: Lease) -> tuple[str, Any]:
        if lease["key"] == "join":
            seen["values"] = lease["args"]["values"]
        return "succeeded", lease["args"].get("v")

    world.drive([job], outcome)
    assert world.status(job) == "succeeded"
    assert seen["values"] == list(range(6))
    assert _item_runs(world, job) == Counter({"split": 1, "join": 1} | {f"work[{i}]": 1 for i in range(6)})
    assert set(agent.accepted_done.values()) == {1} and len(agent.accepted_done) == 8
    for key in world.tasks(job):
        if key == "work":
            continue
        task = world.task(job, key)
        assert [(x["attempt"], x["status"]) for x in task["attempts"]] == [(1, "succeeded")], key
    assert world.services.jobs.result(ADMIN, job)["tasks"] == {"split": 3, "work": list(range(6)), "join": None}
    world.store.close()


def test_restart_keeps_queued_retries_and_pause(world: World) -> None:
    agent = world.join("n0", slots=2)
    job = world.submit({"name": "mixed", "tasks": {"t": fn(retries={"limit": 1, "backoff": "30s"}),
                                                   "u": fn(args={"v": "u"})}})
    world.runtime.schedule_once()
    leases = {lease["key"]: lease for lease in agent.poll()[0]}
    agent.start(list(leases.values()))
    agent.finish(leases["t"], "failed", error="once")
    world.runtime.intervene(ADMIN, job, "pause", "")
    world = world.restart()
    assert world.status(job) == "paused"
    assert world.runtime.schedule_once() == 0
    world.runtime.intervene(ADMIN, job, "resume", "")
    assert world.runtime.schedule_once() == 0  # the backoff still holds after the restart
    world.clock.advance(31)
    agent.finish(leases["u"], result="u")
    world.drive([job])
    assert world.status(job) == "succeeded"
    assert world.task(job, "t")["attempt"] == 2 and world.task(job, "t")["failures"] == 1
    world.store.close()


def test_restart_while_cancelling_still_stops_the_in_flight_attempts(world: World) -> None:
    agent = world.join("n0", slots=2)
    job = world.submit({"name": "stopping", "tasks": {"w": fn(foreach=[1, 2, 3])}})
    world.runtime.schedule_once()
    leases = agent.poll()[0]
    agent.start(leases[:1])  # one running, one leased
    world.runtime.intervene(ADMIN, job, "cancel", "")
    world = world.restart()
    assert world.status(job) == "running"  # cancelling: waiting for the node
    new, cancels = agent.poll()
    assert new == []
    assert sorted((c["task_id"], c["attempt"]) for c in cancels) == sorted(
        (lease["task_id"], lease["attempt"]) for lease in leases)
    answer = world.runtime.report(agent.node_id, [], [], agent.running())
    assert [c["task_id"] for c in answer["cancel"]] == [leases[0]["task_id"]]
    agent.cancel_ack(cancels)
    assert world.status(job) == "cancelled"
    assert set(world.statuses(job).values()) == {"cancelled"}
    world.store.close()


# -- 11. retry a failed job ---------------------------------------------------------------------


def test_retry_of_a_failed_job_reruns_only_failed_tasks_and_their_dependents(world: World) -> None:
    world.join("n0", slots=4)
    doc = {"name": "again", "tasks": {
        "a": fn(args={"v": "a"}),
        "b": fn(depends_on=["a"], args={"v": "b"}),
        "c": fn(depends_on=["b"], args={"v": "c"}),
        "d": fn(depends_on=["a"], args={"v": "d"}),
        "e": fn(foreach=[10, 11, 12, 13], args={"v": "{{ item }}"}),
        "f": fn(depends_on=["e", "d"], args={"v": "{{ tasks.e.result }}"}),
    }}
    job = world.submit(doc)
    broken = {"b", "e[2]"}

    def outcome(lease: Lease) -> tuple[str, Any]:
        if lease["key"] in broken:
            return "failed", None
        return "succeeded", lease["args"].get("v")

    world.drive([job], outcome)
    assert world.status(job) == "failed"
    assert world.statuses(job) == {"a": "succeeded", "b": "failed", "c": "skipped", "d": "succeeded",
                                   "e": "failed", "e[0]": "succeeded", "e[1]": "succeeded", "e[2]": "failed",
                                   "e[3]": "succeeded", "f": "skipped"}
    first_runs = _item_runs(world, job)
    assert first_runs == Counter({k: 1 for k in ("a", "b", "d", "e[0]", "e[1]", "e[2]", "e[3]")})

    broken.clear()
    out = world.runtime.intervene(ADMIN, job, "retry", "fixed the bug")
    assert out["status"] == "running"
    world.drive([job], outcome)
    assert world.status(job) == "succeeded"
    runs = _item_runs(world, job) - first_runs
    assert runs == Counter({"b": 1, "c": 1, "e[2]": 1, "f": 1})
    assert world.task(job, "b")["attempt"] == 2 and world.task(job, "e[2]")["attempt"] == 2
    assert world.task(job, "a")["attempt"] == 1 and world.task(job, "e[0]")["attempt"] == 1
    result = world.services.jobs.result(ADMIN, job)
    assert result["tasks"] == {"a": "a", "b": "b", "c": "c", "d": "d", "e": [10, 11, 12, 13], "f": [10, 11, 12, 13]}
    assert result["result"] == {"c": "c", "f": [10, 11, 12, 13]}
    assert len(world.audit("job.retry", f"job:{job}")) == 1


# -- 12. invalid workflows ----------------------------------------------------------------------


@pytest.mark.parametrize(("tasks", "names"), [
    ({"a": fn(depends_on=["b"]), "b": fn(depends_on=["c"]), "c": fn(depends_on=["a"])}, ["cycle: a -> b -> c -> a"]),
    ({"a": fn(), "b": fn(depends_on=["a", "ghost"])}, ["'b'", "'ghost'", "does not exist"]),
])
def test_an_invalid_workflow_is_refused_and_creates_nothing(world: World, tasks: dict[str, Any],
                                                            names: list[str]) -> None:
    world.join("n0")
    with pytest.raises(ValidationError) as caught:
        world.submit({"name": "bad", "tasks": tasks})
    message = str(caught.value)
    for name in names:
        assert name in message, message
    assert world.services.jobs.list(ADMIN, status=None, domain=None, before=None, limit=10) == []
    assert world.audit("job.submitted") == []
    assert world.runtime.schedule_once() == 0


def test_a_commit_plans_the_pass_it_asks_for_only_once_the_last_pass_has_had_its_time(world: World) -> None:
    """With plan_on_commit (the scheduler loop's mode), a report that frees a slot plans the
    waiting task inside its own commit; but not right after a pass that took long (planning then
    takes at most about half the time, however many reports ask): that report's commit leaves it
    to the scheduler loop, which it wakes."""
    runtime = world.runtime
    runtime.plan_on_commit = True
    agent = world.join("n0", slots=1)
    world.submit({"name": "first", "tasks": {"a": fn()}})  # its own commit places it
    [first] = agent.poll()[0]
    agent.start([first])
    world.submit({"name": "second", "tasks": {"b": fn()}})  # the node is full: it waits
    runtime._last_pass = (0.0, 0.0)  # the last pass long over
    agent.finish(first)  # frees the slot: this commit places `second`
    [second] = agent.poll()[0]
    agent.start([second])

    world.submit({"name": "third", "tasks": {"c": fn()}})
    runtime.wake.clear()
    runtime._last_pass = (time.perf_counter(), 3600.0)  # a pass that took an hour has just ended
    agent.finish(second)
    assert agent.poll() == ([], [])  # not planned in that commit...
    assert runtime.wake.is_set()  # ...but the scheduler loop is told
    assert runtime.schedule_once() == 1
    assert [lease["key"] for lease in agent.poll()[0]] == ["c"]


def test_only_an_offer_left_unanswered_past_the_bound_counts_as_a_decline(world: World) -> None:
    """The runtime keeps the offers not yet answered apart (a pass looks only at those, not at
    every attempt held): one started in time runs on; the other, unanswered after 30 s, is a
    decline and its task waits for another node, parked (the only node declined it)."""
    agent = world.join("only", slots=2)
    job = world.submit({"name": "two", "tasks": {"x": fn(), "y": fn()}})
    world.runtime.offer_timeout_s = 30.0
    assert world.runtime.schedule_once() == 2
    leases, _ = agent.poll()
    started, unanswered = sorted(leases, key=lambda lease: lease["key"])
    agent.start([started])
    world.clock.advance(29.0)
    world.runtime.schedule_once()
    assert world.statuses(job) == {"x": "running", "y": "leased"}
    world.clock.advance(2.0)
    world.runtime.schedule_once()  # the offer of y expires; y is planned and finds no node
    assert world.statuses(job) == {"x": "running", "y": "ready"}
    [declined] = world.task(job, "y")["attempts"]
    assert declined["status"] == "declined" and "not answered within 30s" in declined["error"]
    assert (unanswered["key"], world.runtime.stats()["unschedulable"]) == ("y", 1)
    assert "declined by 1 node(s)" in world.runtime.pending_reasons[unanswered["task_id"]]


def test_what_each_node_holds_is_kept_exact_through_placements_failures_retries_and_losses(world: World) -> None:
    """The runtime keeps each node's held resources as attempts come and go (the scheduler's view
    reads them instead of adding up every attempt each pass): at every step of a random workload
    with failures, retries, a cancelled job and a node lost, they equal the sum of the attempts
    each node holds."""
    agents = [world.join(f"n{i}", slots=3) for i in range(3)]
    runtime = world.runtime

    def check() -> None:
        with runtime._lock:
            recounted = {}
            for node_id, held in runtime._by_node.items():
                total = Resources()
                for a in held.values():
                    total = total + a.resources
                recounted[node_id] = total
        kept = runtime.allocated_by_node()
        assert {n: r for n, r in kept.items() if r != Resources()} == \
            {n: r for n, r in recounted.items() if r != Resources()}

    rng = random.Random(5)
    jobs = [world.submit({"name": f"w{i}", "tasks": {"t": fn(foreach=list(range(4)), retries=2)}})
            for i in range(6)]

    def outcome(lease: Lease) -> tuple[str, Any]:
        return ("failed", None) if rng.random() < 0.3 else ("succeeded", lease["key"])

    def step() -> None:  # each look also moves the clock on, so that retries' backoffs end
        world.clock.advance(2.0)
        check()

    runtime.schedule_once()
    for agent in agents:
        agent.poll_and_start()
    check()
    lost = max(agents, key=lambda a: len(a.started))
    assert runtime.node_lost(lost.node_id, "the test lost it") > 0  # its attempts go back to the queue
    lost.held.clear()  # and its agent comes back without them
    lost.started.clear()
    check()
    runtime.intervene(ADMIN, jobs[1], "cancel", "by the test")
    check()
    world.drive([j for j in jobs if j != jobs[1]], outcome, agents=agents, rng=rng, check=step)
    check()
    assert all(r == Resources() for r in runtime.allocated_by_node().values())  # nothing runs any more
