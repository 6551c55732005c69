"""Self-healing as use cases: automatic quarantine, probation, drains, node-loss accounting.

NodeService + JobRuntime + the failure detector + the lifecycle controller over a real store,
driven by a FakeClock, with simulated agents speaking the agent protocol in-process (lease poll,
reports with the `running` list), as in test_job_runtime.py. Time moves in 0.5 s steps; each step
runs a detector pass and a lifecycle pass, as the real loops do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from polyfabric.controllers.node_health import NodeHealthController
from polyfabric.controllers.node_lifecycle import NodeLifecycleController
from polyfabric.coordinator.bootstrap import UuidIds
from polyfabric.domain import audit as chain
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.conditions import DetectorSettings
from polyfabric.domain.node_states import NodeState
from polyfabric.domain.nodes import Node
from polyfabric.domain.quarantine import QuarantinePolicy
from polyfabric.domain.resources import Resources
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.nodes import Registration
from polyfabric.services.ports import AuditQuery
from polyfabric.services.runtime import JobRuntime
from polyfabric.store import migrate
from polyfabric.store.unit_of_work import SqlStore
from polyfabric.testing import FakeClock
from polyfabric.testing.signer import TestSigner

ADMIN = Principal("token", "at-admin", "admin", Role.ADMIN, ("*",))
OPERATOR = Principal("token", "at-ops", "ops", Role.OPERATOR, ("*",))
DOMAIN = "lab"
SETTINGS = DetectorSettings(heartbeat_interval=2.0, unreachable_after=5.0, down_after=8.0, check_interval=0.5,
                            flap_window=600.0, flap_threshold=3)
POLICY = QuarantinePolicy(min_failures=3, failure_window=600.0, min_failure_ratio=0.5, degraded_after=30.0,
                          probation=60.0)
HEALTHY = [{"name": "disk", "ok": True, "message": "ok"}]
BROKEN = [{"name": "disk", "ok": False, "message": "disk is read-only"}]

Lease = dict[str, Any]


@dataclass
class Sim:
    """A simulated agent: takes leases, starts them, finishes what it is told to."""

    world: World
    node_id: str
    name: str
    held: dict[tuple[str, int], Lease] = field(default_factory=dict)
    health: list[dict[str, Any]] = field(default_factory=lambda: list(HEALTHY))
    refused: list[dict[str, Any]] = field(default_factory=list)

    def running(self) -> list[dict[str, Any]]:
        return [{"task_id": t, "attempt": a} for (t, a) in self.held]

    def report(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        done = {(e["task_id"], e["attempt"]) for e in events if e["type"] != "started"}
        answer: dict[str, Any] = self.world.runtime.report(
            self.node_id, events, [], [r for r in self.running() if (r["task_id"], r["attempt"]) not in done])
        self.refused.extend(answer["refused"])
        for ident in done:
            self.held.pop(ident, None)
        for cancel in answer["cancel"]:  # "no longer current" (evicted), or cancelled: stop it
            self.held.pop((cancel["task_id"], cancel["attempt"]), None)
        return answer

    def poll(self) -> list[Lease]:
        leases, cancels = self.world.runtime.leases_for(self.node_id, set(self.held))
        for cancel in cancels:
            ident = (cancel["task_id"], cancel["attempt"])
            if self.held.pop(ident, None) is not None:
                self.report([{"type": "cancelled", "task_id": ident[0], "attempt": ident[1],
                              "at": self.world.clock.now(), "reason": cancel["reason"]}])
        new = [lease for lease in leases if (lease["task_id"], lease["attempt"]) not in self.held]
        for lease in new:
            self.held[(lease["task_id"], lease["attempt"])] = lease
        if new:
            self.report([{"type": "started", "task_id": lease["task_id"], "attempt": lease["attempt"],
                          "at": self.world.clock.now()} for lease in new])
        return new

    def finished(self, lease: Lease, status: str) -> dict[str, Any]:
        return {"type": "finished", "task_id": lease["task_id"], "attempt": lease["attempt"],
                "at": self.world.clock.now(), "status": status, "result": lease["key"] if status == "succeeded"
                else None, "error": None if status == "succeeded" else "boom",
                "exit_code": 0 if status == "succeeded" else 1}

    def finish(self, status: str = "succeeded", *, keys: Callable[[Lease], bool] = lambda _lease: True) -> int:
        chosen = [lease for lease in self.held.values() if keys(lease)]
        if chosen:
            self.report([self.finished(lease, status) for lease in chosen])
        return len(chosen)


@dataclass
class World:
    store: SqlStore
    clock: FakeClock
    services: Services
    health: NodeHealthController
    lifecycle: NodeLifecycleController
    join_token: str
    sims: dict[str, Sim] = field(default_factory=dict)

    @property
    def runtime(self) -> JobRuntime:
        return self.services.runtime

    def join(self, name: str, slots: int = 4) -> Sim:
        reg = Registration(public_key=public_key_raw(generate_private_key()), name=name, labels={},
                           capacity=Resources(slots=slots))
        node = self.services.nodes.register(reg, self.join_token)
        sim = Sim(self, node.id, name)
        self.sims[node.id] = sim
        self.beat(sim)
        assert self.node(node.id).state == NodeState.ACTIVE
        return sim

    def beat(self, *sims: Sim) -> None:
        for sim in sims:
            entry = self.services.nodes.heartbeat(sim.node_id, {}, sim.health)
            if self.services.nodes.needs_settle(entry):
                self.services.nodes.settle(sim.node_id)

    def tick(self, seconds: float, *, beating: tuple[Sim, ...] | None = None, step: float = 0.5) -> None:
        """Let time pass; every `beating` sim (default: all) heartbeats each step; both controllers run."""
        sims = tuple(self.sims.values()) if beating is None else beating
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.beat(*sims)
            self.health.run_once()
            self.lifecycle.run_once()

    def submit(self, doc: dict[str, Any]) -> str:
        return str(self.runtime.submit(ADMIN, doc, {}, DOMAIN)["id"])

    def schedule(self, *sims: Sim) -> None:
        self.runtime.schedule_once()
        for sim in sims:
            sim.poll()

    def node(self, node_id: str) -> Node:
        node = self.services.nodes.peek(node_id)
        assert node is not None
        return node

    def state(self, sim: Sim) -> NodeState:
        return self.node(sim.node_id).state

    def audit(self, action: str, subject: str | None = None) -> list[Any]:
        with self.store.unit_of_work(readonly=True) as uow:
            return list(uow.audit.query(AuditQuery(subject=subject, action=action, limit=10000)))

    def transitions(self, sim: Sim) -> list[Any]:
        return self.audit("node.transition", f"node:{sim.node_id}")

    def tasks(self, job_id: str) -> dict[str, dict[str, Any]]:
        return {t["key"]: t for t in self.services.jobs.tasks(ADMIN, job_id, status=None, after=None, limit=1000)}

    def task(self, job_id: str, key: str) -> dict[str, Any]:
        return dict(self.services.jobs.task(ADMIN, self.tasks(job_id)[key]["id"]))

    def status(self, job_id: str) -> str:
        return str(self.runtime.job_summary(job_id)["status"])

    def chain_ok(self) -> bool:
        with self.store.unit_of_work(readonly=True) as uow:
            return chain.verify_chain(uow.audit.iter_all()).ok


def make_world(db_url: str, policy: QuarantinePolicy = POLICY) -> World:
    store = SqlStore(db_url)
    migrate.upgrade(store.engine)
    clock = FakeClock()
    ctx = ServiceContext(store=store, clock=clock, ids=UuidIds(), signer=TestSigner(), detector=SETTINGS)
    services = Services.build(ctx)
    services.domains.create(ADMIN, DOMAIN, "")
    token = services.tokens.create_join(ADMIN, domain=DOMAIN, ttl_s=None, uses=None).token
    health = NodeHealthController(ctx, services.nodes, on_down=services.runtime.node_lost)
    lifecycle = NodeLifecycleController(ctx, services.nodes, services.runtime, policy)
    return World(store, clock, services, health, lifecycle, token)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(f"sqlite:///{tmp_path / 'polyfabric.db'}")
    yield w
    w.store.close()


@pytest.fixture
def any_world(db_url: str) -> Iterator[World]:
    """The same on both stores (PostgreSQL when POLYFABRIC_TEST_PG is set)."""
    w = make_world(db_url)
    yield w
    w.store.close()


def fn(**extra: Any) -> dict[str, Any]:
    return {"function": "pkg.mod:fn", **extra}


def _details(record: Any) -> tuple[str, str, dict[str, Any]]:
    return record.actor, record.cause, record.details


# -- 1. a node that keeps failing tasks ------------------------------------------------------------


def test_a_node_that_fails_tasks_others_run_fine_is_quarantined_its_work_moved_and_resumed_by_an_operator(
        world: World) -> None:
    bad, good = world.join("bad"), world.join("good")
    world.services.nodes.act(OPERATOR, good.node_id, "cordon", "keep it free for now")
    # A long task lands on the bad node first and keeps running there.
    long_job = world.submit({"name": "long", "tasks": {"slow": fn(retries=0)}})
    world.schedule(bad)
    assert len(bad.held) == 1
    # Then tasks that fail on the bad node (with retries) ...
    job = world.submit({"name": "work", "tasks": {"w": fn(foreach=list(range(3)), retries={"limit": 10,
                                                                                           "backoff": "0s"})}})
    world.schedule(bad)
    assert bad.finish("failed", keys=lambda lease: lease["job_id"] == job) == 3
    world.tick(1.0)
    assert world.state(bad) == NodeState.ACTIVE  # failures alone are no proof: they may be the tasks'
    # ... and succeed elsewhere once the good node takes work.
    world.services.nodes.act(OPERATOR, good.node_id, "uncordon", "")
    for _ in range(20):
        world.schedule(bad, good)
        bad.finish("failed", keys=lambda lease: lease["job_id"] == job)
        good.finish("succeeded")
        world.tick(0.5)
        if world.state(bad) == NodeState.QUARANTINED:
            break
    assert world.state(bad) == NodeState.QUARANTINED
    record = world.transitions(bad)[-1]
    assert record.actor == "system:lifecycle"
    assert record.details == {"from": "active", "to": "quarantined", "trigger": "policy", "rule": "failures"}
    # (The scheduler may place a retry on the bad node again: each failure there counts.)
    match = re.fullmatch(r"failing tasks: (\d+) attempts failed here within 600s and then succeeded on other "
                         r"nodes \((\d+) of (\d+) attempts here failed; threshold 3 and 50%\): (t-\w+(, )?)+",
                         record.cause)
    assert match and int(match[1]) >= 3 and match[2] == match[3], record.cause
    assert world.node(bad.node_id).quarantine == {
        "trigger": "policy", "reason": record.cause, "by": "system:lifecycle",
        "at": world.node(bad.node_id).state_since, "released_at": None, "released_by": None}

    # Its running attempt was taken off it and runs elsewhere: lost, not failed, no retry used.
    [evicted] = world.audit("task.evicted", f"node:{bad.node_id}")
    assert evicted.actor == "system:lifecycle" and evicted.cause.startswith(f"node {bad.node_id} was quarantined: ")
    world.tick(0.5)
    world.schedule(bad, good)
    assert good.finish("succeeded") >= 1
    world.tick(0.5)
    assert world.status(job) == "succeeded" and world.status(long_job) == "succeeded"
    slow = world.task(long_job, "slow")
    assert (slow["failures"], slow["lost"], slow["node_id"]) == (0, 1, good.node_id)
    assert [(a["attempt"], a["status"], a["node_id"]) for a in slow["attempts"]] == [
        (1, "evicted", bad.node_id), (2, "succeeded", good.node_id)]
    # The quarantined node's late report of it is fenced, and audited.
    late = bad.finish("succeeded")
    assert late == 0 or bad.refused  # the sim may already have been told to stop it
    bad.report([bad.finished({"task_id": slow["id"], "attempt": 1, "key": "slow"}, "succeeded")])
    assert any(r["task_id"] == slow["id"] and r["attempt"] == 1 for r in bad.refused)
    assert world.audit("task.report_refused", f"task:{slow['id']}")

    # Quarantine is not lifted by probation while an operator may look: here the operator resumes it.
    world.services.nodes.act(OPERATOR, bad.node_id, "resume", "replaced the disk")
    assert world.state(bad) == NodeState.ACTIVE
    record = world.transitions(bad)[-1]
    assert record.details == {"from": "quarantined", "to": "active", "trigger": "operator", "action": "resume"}
    assert world.node(bad.node_id).quarantine["released_by"] == "token:ops"
    # The evidence from before the release is forgiven: no second quarantine for old failures.
    world.tick(5.0)
    assert world.state(bad) == NodeState.ACTIVE
    assert world.chain_ok()


def test_a_task_that_fails_on_every_node_quarantines_nobody(world: World) -> None:
    a, b = world.join("a"), world.join("b")
    job = world.submit({"name": "broken", "tasks": {"w": fn(foreach=list(range(4)), retries={"limit": 3,
                                                                                            "backoff": "0s"})}})
    for _ in range(30):
        world.schedule(a, b)
        a.finish("failed")
        b.finish("failed")
        world.tick(0.5)
        if world.status(job) != "running":
            break
    assert world.status(job) == "failed"
    assert world.state(a) == NodeState.ACTIVE and world.state(b) == NodeState.ACTIVE
    assert world.audit("task.evicted") == []


def test_a_node_that_fails_now_and_then_among_many_successes_stays_in_service(world: World) -> None:
    busy, other = world.join("busy", slots=8), world.join("other", slots=8)
    # busy runs plenty fine; a few of its attempts fail and then succeed on the other node
    world.services.nodes.act(OPERATOR, other.node_id, "cordon", "")
    ok = world.submit({"name": "ok", "tasks": {"w": fn(foreach=list(range(16)))}})
    for _ in range(2):
        world.schedule(busy)
        busy.finish("succeeded")
    flaky = world.submit({"name": "flaky", "tasks": {"w": fn(foreach=list(range(3)), retries={"limit": 1,
                                                                                             "backoff": "0s"})}})
    world.schedule(busy)
    busy.finish("failed")
    world.services.nodes.act(OPERATOR, other.node_id, "uncordon", "")
    world.services.nodes.act(OPERATOR, busy.node_id, "cordon", "")
    world.schedule(other)
    other.finish("succeeded")
    world.tick(1.0)
    evidence = world.lifecycle.ledger.evidence(busy.node_id, world.clock.now())
    assert (evidence.confirmed, evidence.failed, evidence.ended) == (3, 3, 19)
    assert world.state(busy) == NodeState.CORDONED  # not quarantined: 3 of 19 is below the ratio
    assert world.status(flaky) == "succeeded" and world.status(ok) == "succeeded"


# -- 2. health checks, flapping, probation ---------------------------------------------------------


def test_health_checks_failing_past_the_bound_quarantine_and_probation_releases_a_healthy_node(
        world: World) -> None:
    sick, _fine = world.join("sick"), world.join("fine")
    sick.health = list(BROKEN)
    world.tick(POLICY.degraded_after)
    assert world.state(sick) == NodeState.ACTIVE  # not past the bound yet
    world.tick(2.0)
    assert world.state(sick) == NodeState.QUARANTINED
    record = world.transitions(sick)[-1]
    assert (record.actor, record.details) == (
        "system:lifecycle", {"from": "active", "to": "quarantined", "trigger": "health", "rule": "degraded"})
    assert record.cause.startswith("health checks failing for 3") and record.cause.endswith("s (bound 30s)")

    # Healthy for a while, sick again: the probation starts over.
    sick.health = list(HEALTHY)
    world.tick(POLICY.probation - 10)
    sick.health = list(BROKEN)
    world.tick(2.0)
    sick.health = list(HEALTHY)
    world.tick(POLICY.probation - 5)
    assert world.state(sick) == NodeState.QUARANTINED
    world.tick(10.0)
    assert world.state(sick) == NodeState.ACTIVE
    record = world.transitions(sick)[-1]
    assert (record.actor, record.details) == (
        "system:lifecycle", {"from": "quarantined", "to": "active", "trigger": "system", "rule": "probation"})
    assert record.cause.startswith("probation over: healthy for 60s in quarantine (quarantined for: health checks")
    assert world.node(sick.node_id).quarantine["released_by"] == "system:lifecycle"
    world.tick(5.0)
    assert world.state(sick) == NodeState.ACTIVE
    assert world.chain_ok()


def test_a_flapping_node_is_quarantined_while_down_stays_there_when_it_returns_and_is_released_later(
        world: World) -> None:
    flappy, steady = world.join("flappy"), world.join("steady")
    for _round in range(SETTINGS.flap_threshold):
        assert world.state(flappy) == NodeState.ACTIVE
        world.tick(SETTINGS.down_after + 1, beating=(steady,))  # silent: Down
        world.tick(1.0)  # back
    record = [r for r in world.transitions(flappy) if r.details["to"] == "quarantined"]
    assert len(record) == 1
    assert (record[0].details, record[0].cause) == (
        {"from": "down", "to": "quarantined", "trigger": "health", "rule": "flapping"},
        "flapping: went Down 3 times within 600s (threshold 3)")
    assert world.state(flappy) == NodeState.QUARANTINED  # heartbeats do not take it out
    # Not healthy while the Flapping condition holds (the Downs age out of its 600 s window) ...
    world.tick(500.0, step=5.0)
    assert world.state(flappy) == NodeState.QUARANTINED
    # ... then a healthy probation, and it is back.
    world.tick(SETTINGS.flap_window - 500 + POLICY.probation + 10, step=5.0)
    assert world.state(flappy) == NodeState.ACTIVE
    assert world.transitions(flappy)[-1].details["rule"] == "probation"


def test_an_operators_quarantine_is_never_ended_by_probation(world: World) -> None:
    node = world.join("held")
    world.services.nodes.act(OPERATOR, node.node_id, "quarantine", "investigating")
    world.tick(POLICY.probation * 3, step=5.0)
    assert world.state(node) == NodeState.QUARANTINED
    assert world.node(node.node_id).quarantine["trigger"] == "operator"


# -- 3. drains -------------------------------------------------------------------------------------


def test_a_drain_waits_for_running_work_takes_no_new_work_and_retires_the_node(world: World) -> None:
    a = world.join("a")
    job = world.submit({"name": "one", "tasks": {"t": fn()}})
    world.schedule(a)
    world.services.nodes.act(OPERATOR, a.node_id, "drain", "hardware refresh")
    later = world.submit({"name": "later", "tasks": {"t": fn()}})
    world.tick(30.0, step=1.0)
    world.schedule(a)
    assert world.state(a) == NodeState.DRAINING and len(a.held) == 1  # nothing new came
    assert world.tasks(later)["t"]["status"] == "ready"
    a.finish("succeeded")
    world.tick(1.0)
    assert world.state(a) == NodeState.RETIRED
    record = world.transitions(a)[-1]
    assert (record.actor, record.cause, record.details) == (
        "system:lifecycle", "drain complete: no task left on the node",
        {"from": "draining", "to": "retired", "trigger": "system", "rule": "drain"})
    assert world.status(job) == "succeeded"
    b = world.join("b")
    world.schedule(b)
    b.finish("succeeded")
    assert world.status(later) == "succeeded"


def test_an_idle_node_drained_retires_at_once(world: World) -> None:
    a = world.join("idle")
    world.services.nodes.act(OPERATOR, a.node_id, "drain", "")
    world.tick(1.0)
    assert world.state(a) == NodeState.RETIRED


def test_an_operator_can_call_off_a_drain_while_work_runs(world: World) -> None:
    a = world.join("a")
    world.submit({"name": "one", "tasks": {"t": fn()}})
    world.schedule(a)
    world.services.nodes.act(OPERATOR, a.node_id, "drain", "", deadline_s=60)
    world.services.nodes.act(OPERATOR, a.node_id, "uncordon", "never mind")
    assert world.node(a.node_id).drain_deadline is None
    world.tick(70.0, step=5.0)
    assert world.state(a) == NodeState.ACTIVE and len(a.held) == 1


def test_after_the_drain_deadline_attempts_move_elsewhere_as_lost_not_failed(any_world: World) -> None:
    world = any_world
    a, b = world.join("a"), world.join("b")
    world.services.nodes.act(OPERATOR, b.node_id, "cordon", "")
    job = world.submit({"name": "long", "tasks": {"t": fn(retries=0)}})
    world.schedule(a)
    node = world.services.nodes.act(OPERATOR, a.node_id, "drain", "move it", deadline_s=600)
    # Draining again with a deadline replaces it (audited apart from the transition).
    node = world.services.nodes.act(OPERATOR, a.node_id, "drain", "sooner", deadline_s=30)
    assert node.state == NodeState.DRAINING and node.drain_deadline == pytest.approx(world.clock.now() + 30)
    [changed] = world.audit("node.drain_deadline", f"node:{a.node_id}")
    assert changed.actor == "token:ops" and changed.details["deadline_s"] == 30
    world.services.nodes.act(OPERATOR, b.node_id, "uncordon", "")
    world.tick(29.0, step=1.0)
    assert world.state(a) == NodeState.DRAINING and len(a.held) == 1
    world.tick(2.0, step=1.0)
    assert world.state(a) == NodeState.RETIRED
    [moved] = world.audit("task.evicted", f"node:{a.node_id}")
    assert moved.cause.startswith(f"drain deadline of node {a.node_id} passed (")
    assert moved.cause.endswith("stopped and queued again for another node")
    world.schedule(b)
    b.finish("succeeded")
    assert world.status(job) == "succeeded"
    task = world.task(job, "t")
    assert (task["failures"], task["lost"], task["attempt"]) == (0, 1, 2)
    assert [(x["attempt"], x["status"], x["node_id"]) for x in task["attempts"]] == [
        (1, "evicted", a.node_id), (2, "succeeded", b.node_id)]
    # The drained node's late result is refused.
    answer = world.runtime.report(a.node_id, [a.finished({"task_id": task["id"], "attempt": 1, "key": "t"},
                                                         "succeeded")], [], [])
    assert answer["accepted"] == 0 and len(answer["refused"]) == 1
    assert world.task(job, "t")["result"] == "t"  # b's result, once
    assert world.chain_ok()


def test_a_deadline_is_only_for_drain(world: World) -> None:
    from polyfabric.domain.errors import ValidationError

    a = world.join("a")
    with pytest.raises(ValidationError, match="only `drain` takes one"):
        world.services.nodes.act(OPERATOR, a.node_id, "cordon", "", deadline_s=10)


# -- 4. node loss accounting -----------------------------------------------------------------------


def test_node_losses_are_counted_per_task_and_per_job_apart_from_failures(world: World) -> None:
    lost, spare = world.join("lost"), world.join("spare")
    world.services.nodes.act(OPERATOR, spare.node_id, "cordon", "")
    job = world.submit({"name": "survive", "tasks": {"w": fn(foreach=list(range(3)), retries=0)}})
    world.schedule(lost)
    assert len(lost.held) == 3
    world.services.nodes.act(OPERATOR, spare.node_id, "uncordon", "")
    world.tick(SETTINGS.down_after + 1, beating=(spare,))
    assert world.state(lost) == NodeState.DOWN
    world.schedule(spare)
    spare.finish("succeeded")
    assert world.status(job) == "succeeded"
    items = {k: t for k, t in world.tasks(job).items() if k != "w"}
    assert {(t["failures"], t["lost"]) for t in items.values()} == {(0, 1)}
    detail = world.services.jobs.get(ADMIN, job)
    assert detail["lost"] == 3
    assert all(t["lost"] == 1 for t in detail["tasks"] if not t["is_group"])
    assert world.task(job, "w[0]")["lost"] == 1


def test_a_controller_for_a_new_term_as_leader_takes_the_runtimes_feed_over(world: World) -> None:
    successor = NodeLifecycleController(world.services.ctx, world.services.nodes, world.runtime, POLICY)
    assert world.runtime.attempt_listeners == [successor._on_attempt]
