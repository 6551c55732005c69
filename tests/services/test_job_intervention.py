"""Intervention on a job (pause, resume, cancel, retry, set-priority) at the runtime, over a real
store (SQLite and PostgreSQL), with the simulated agents of test_job_runtime.py.

Each intervention needs the operator role in the job's domain: a viewer, a submitter, or an
operator of another domain is refused (403 at the API) and changes nothing, not even the audit
chain. Each one that is allowed enters the audit chain with its actor. set-priority re-orders the
live queue (the runtime's heap), keeps the priority a task declares itself, and a running task's
new priority is the one preemption sees.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from polyfabric.api.app import create_app
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.errors import NotPermitted
from polyfabric.services.ports import AuditQuery

from . import test_job_runtime as base
from .test_job_runtime import ADMIN, DOMAIN, Lease, World, fn

# The fixtures of test_job_runtime.py (one migrated database per backend, wiped per test).
migrated_url = base.migrated_url
world = base.world

OPERATOR = Principal("token", "at-ops", "ops", Role.OPERATOR, (DOMAIN,))
OTHER = "elsewhere"
REFUSED = {
    "viewer": (Principal("token", "at-viewer", "viewer", Role.VIEWER, (DOMAIN,)), "needs role operator"),
    "submitter": (Principal("token", "at-sub", "sub", Role.SUBMITTER, (DOMAIN,)), "needs role operator"),
    "submitter of another domain": (Principal("token", "at-sub2", "sub2", Role.SUBMITTER, (OTHER,)),
                                    "needs role operator"),
    "operator of another domain": (Principal("token", "at-ops2", "ops2", Role.OPERATOR, (OTHER,)),
                                   f"in domain {DOMAIN!r} is not allowed"),
}
ACTIONS = ("pause", "resume", "cancel", "retry", "priority")


def _chain_tip(world: World) -> tuple[int, str]:
    with world.store.unit_of_work(readonly=True) as uow:
        seq, tip = uow.audit.tip()
    return int(seq), str(tip)


def _job_audit(world: World, job_id: str) -> list[Any]:
    """The job's interventions in the audit chain (not its submission or its end)."""
    with world.store.unit_of_work(readonly=True) as uow:
        records = uow.audit.query(AuditQuery(subject=f"job:{job_id}", limit=1000))
    return [r for r in records if r.action in {f"job.{action}" for action in ACTIONS}]


def _failed_job(world: World, agent: base.Agent) -> str:
    job = world.submit({"name": "broken", "tasks": {"t": fn(retries=0), "after": fn(depends_on=["t"])}})
    world.drive([job], lambda lease: ("failed", None), agents=[agent])
    assert world.status(job) == "failed"
    return job


def _targets(world: World) -> dict[str, str]:
    """A job each action would apply to: running (queued work), paused, failed."""
    agent = world.join("n0", slots=1)
    failed = _failed_job(world, agent)
    running = world.submit({"name": "live", "tasks": {"w": fn(foreach=[1, 2, 3])}})
    paused = world.submit({"name": "held", "tasks": {"w": fn()}})
    world.runtime.intervene(ADMIN, paused, "pause", "")
    return {"pause": running, "resume": paused, "cancel": running, "retry": failed, "priority": running}


def _act(world: World, who: Principal, action: str, job_id: str) -> dict[str, Any]:
    return world.runtime.intervene(who, job_id, action, "by the test", priority=9 if action == "priority" else None)


def _snapshot(world: World, job_ids: set[str]) -> dict[str, Any]:
    return {j: (world.job(j)["status"], world.job(j)["priority"], world.statuses(j)) for j in sorted(job_ids)}


# -- who may intervene --------------------------------------------------------------------------


@pytest.mark.parametrize("who", list(REFUSED))
def test_interventions_need_the_operator_role_in_the_jobs_domain(world: World, who: str) -> None:
    world.services.domains.create(ADMIN, OTHER)
    principal, why = REFUSED[who]
    targets = _targets(world)
    before, tip = _snapshot(world, set(targets.values())), _chain_tip(world)
    for action in ACTIONS:
        with pytest.raises(NotPermitted) as refused:
            _act(world, principal, action, targets[action])
        assert why in refused.value.message, (action, refused.value.message)
    # Nothing changed: no status, priority or task moved, and nothing entered the audit chain.
    assert _snapshot(world, set(targets.values())) == before
    assert _chain_tip(world) == tip
    assert world.runtime.schedule_once() == 1  # the running job's work still goes on (one free slot)

    # The same interventions by an operator of the domain go through (the targets were valid).
    assert _act(world, OPERATOR, "pause", targets["pause"])["status"] == "paused"
    assert _act(world, OPERATOR, "resume", targets["resume"])["status"] == "running"
    assert _act(world, OPERATOR, "priority", targets["priority"])["priority"] == 9
    assert _act(world, OPERATOR, "retry", targets["retry"])["status"] == "running"
    _act(world, OPERATOR, "cancel", targets["cancel"])
    assert "cancelled" in world.statuses(targets["cancel"]).values()


def test_the_api_answers_403_to_a_viewer_and_to_another_domains_operator(world: World) -> None:
    world.services.domains.create(ADMIN, OTHER)
    targets = _targets(world)
    app = create_app(world.services)
    tokens = {name: world.services.tokens.create_api(ADMIN, name=name, role=role, domains=[domain],
                                                    ttl_s=None).token
              for name, role, domain in (("viewer", "viewer", DOMAIN), ("submitter", "submitter", DOMAIN),
                                         ("stranger", "operator", OTHER), ("ops", "operator", DOMAIN))}

    async def post(token: str, action: str) -> httpx.Response:
        path = f"/v1/jobs/{targets[action]}/{action}"
        body = {"priority": 9, "reason": "api"} if action == "priority" else {"reason": "api"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            return await client.post(path, json=body, headers={"authorization": f"Bearer {token}"})

    tip = _chain_tip(world)
    for name, why in (("viewer", "needs role operator"), ("submitter", "needs role operator"),
                      ("stranger", f"in domain {DOMAIN!r} is not allowed")):
        for action in ACTIONS:
            answer = asyncio.run(post(tokens[name], action))
            assert answer.status_code == 403, (name, action, answer.text)
            assert why in answer.json()["error"]["message"], (name, action, answer.text)
    assert _chain_tip(world) == tip
    answer = asyncio.run(post(tokens["ops"], "priority"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["priority"] == 9
    [record] = [r for r in _job_audit(world, targets["priority"]) if r.action == "job.priority"]
    assert record.actor == "token:ops" and record.details == {"priority": 9}


# -- every intervention is audited with its actor -----------------------------------------------


def test_each_intervention_enters_the_audit_chain_with_its_actor(world: World) -> None:
    agent = world.join("n0", slots=1)
    failed = _failed_job(world, agent)
    job = world.submit({"name": "steered", "tasks": {"w": fn(foreach=[1, 2, 3])}})
    tip_before = _chain_tip(world)[0]
    world.runtime.intervene(OPERATOR, job, "pause", "maintenance")
    world.runtime.intervene(OPERATOR, job, "resume", "")
    world.runtime.intervene(OPERATOR, job, "priority", "urgent", priority=7)
    world.runtime.intervene(OPERATOR, job, "cancel", "not needed")
    world.runtime.intervene(OPERATOR, failed, "retry", "fixed", from_failed=True)

    got = [(r.action, r.actor, r.subject, r.domain, r.cause, r.details)
           for r in _job_audit(world, job) + _job_audit(world, failed)]
    assert got == [
        ("job.pause", "token:ops", f"job:{job}", DOMAIN, "maintenance", {}),
        ("job.resume", "token:ops", f"job:{job}", DOMAIN, "operator resume", {}),
        ("job.priority", "token:ops", f"job:{job}", DOMAIN, "urgent", {"priority": 7}),
        ("job.cancel", "token:ops", f"job:{job}", DOMAIN, "not needed", {}),
        ("job.retry", "token:ops", f"job:{failed}", DOMAIN, "fixed", {"from_failed": True}),
    ]
    records = _job_audit(world, job) + _job_audit(world, failed)
    assert [r.seq for r in records] == sorted(r.seq for r in records)  # in the order they were made
    assert all(r.seq > tip_before for r in records)
    report = world.services.audit.verify(ADMIN)
    assert report.ok, report.problem


# -- set-priority re-orders the live queue -------------------------------------------------------


def _block(world: World, agent: base.Agent, priority: int = 100) -> Lease:
    """Fill the agent's only slot with a running task that nothing here may preempt."""
    job = world.submit({"name": "blocker", "priority": priority, "tasks": {"b": fn()}})
    assert world.runtime.schedule_once() == 1
    [lease] = agent.poll()[0]
    assert lease["job_id"] == job
    agent.start([lease])
    return lease


def _lease_order(world: World, agent: base.Agent, count: int) -> list[tuple[str, str]]:
    """Free the slot `count` times; which (job name, key) is leased next each time."""
    order = []
    for _ in range(count):
        assert world.runtime.schedule_once() == 1
        [lease] = agent.poll()[0]
        agent.start([lease])
        order.append((world.job(lease["job_id"])["name"], lease["key"]))
        agent.finish(lease)
    return order


@pytest.mark.parametrize(("change", "expected"), [
    (None, [("first", "a"), ("second", "a[0]"), ("second", "a[1]")]),  # submission order
    (("second", 5), [("second", "a[0]"), ("second", "a[1]"), ("first", "a")]),  # the later job raised
    (("first", -3), [("second", "a[0]"), ("second", "a[1]"), ("first", "a")]),  # the earlier one lowered
])
def test_set_priority_reorders_the_queued_tasks(world: World, change: tuple[str, int] | None,
                                                expected: list[tuple[str, str]]) -> None:
    agent = world.join("n0", slots=1)
    blocker = _block(world, agent)
    jobs = {"first": world.submit({"name": "first", "tasks": {"a": fn()}}),
            "second": world.submit({"name": "second", "tasks": {"a": fn(foreach=[0, 1])}})}
    assert world.runtime.schedule_once() == 0  # the node is full and nobody outranks the blocker
    if change is not None:
        name, priority = change
        out = world.runtime.intervene(OPERATOR, jobs[name], "priority", "", priority=priority)
        assert out["priority"] == priority
        assert {t["priority"] for t in world.tasks(jobs[name]).values() if not t["is_group"]} == {priority}
        assert world.runtime.schedule_once() == 0  # still full: the change evicts nobody
        assert agent.poll() == ([], [])
    agent.finish(blocker)
    assert _lease_order(world, agent, 3) == expected
    assert world.all_final(list(jobs.values()))


def test_set_priority_keeps_a_tasks_own_priority(world: World) -> None:
    """A task that declares its priority keeps it when its job's priority changes (the engine's
    rule): the live queue must agree with the task rows, as it does after a restart."""
    agent = world.join("n0", slots=1)
    blocker = _block(world, agent)
    pinned = world.submit({"name": "pinned", "tasks": {"own": fn(priority=1), "inherits": fn()}})
    other = world.submit({"name": "other", "priority": 5, "tasks": {"x": fn()}})
    world.runtime.intervene(OPERATOR, pinned, "priority", "", priority=9)
    rows = world.tasks(pinned)
    assert (rows["own"]["priority"], rows["inherits"]["priority"]) == (1, 9)
    agent.finish(blocker)
    # inherits (9) before other (5) before own (1), in memory as in the rows
    assert _lease_order(world, agent, 3) == [("pinned", "inherits"), ("other", "x"), ("pinned", "own")]
    assert world.all_final([pinned, other])


def test_a_running_tasks_raised_priority_protects_it_from_preemption(world: World) -> None:
    """Preemption compares priorities: a running task whose job was raised counts with the new one,
    in memory as in its row (which is what a restarted coordinator would use)."""
    agent = world.join("n0", slots=1)
    lease = _block(world, agent, priority=0)
    world.runtime.intervene(OPERATOR, lease["job_id"], "priority", "keep it", priority=10)
    assert world.task(lease["job_id"], "b")["priority"] == 10
    urgent = world.submit({"name": "urgent", "priority": 5, "tasks": {"u": fn()}})
    assert world.runtime.schedule_once() == 0
    assert agent.poll() == ([], [])  # no cancel: 5 does not outrank 10
    assert world.audit("task.preempted") == []
    agent.finish(lease)
    assert _lease_order(world, agent, 1) == [("urgent", "u")]
    assert world.all_final([lease["job_id"], urgent])


def test_a_priority_raised_after_a_pass_saw_the_task_running_protects_it_too(world: World) -> None:
    """A pass keeps what its view showed of each running task; a raised priority must show in the
    next one (else preemption would still count the old priority)."""
    agent = world.join("n0", slots=1)
    lease = _block(world, agent, priority=0)
    waits = world.submit({"name": "waits", "priority": 0, "tasks": {"w": fn()}})
    assert world.runtime.schedule_once() == 0  # a pass sees the blocker running at 0: 0 does not outrank 0
    world.runtime.intervene(OPERATOR, lease["job_id"], "priority", "keep it", priority=10)
    urgent = world.submit({"name": "urgent", "priority": 5, "tasks": {"u": fn()}})
    assert world.runtime.schedule_once() == 0
    assert agent.poll() == ([], [])  # no cancel: 5 does not outrank 10
    assert world.audit("task.preempted") == []
    agent.finish(lease)
    assert _lease_order(world, agent, 2) == [("urgent", "u"), ("waits", "w")]
    assert world.all_final([lease["job_id"], urgent, waits])
