"""Schedules, webhook triggers and GC as use cases over a real store (SQLite and PostgreSQL),
driven by a FakeClock: exactly-once fires across a crash between recording and submitting, the
catch-up rule, concurrency forbid/replace, webhook signatures and replays, and GC that keeps
declared outputs and never touches a live or retryable job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from polyfabric.coordinator.bootstrap import UuidIds
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.audit import GENESIS
from polyfabric.domain.errors import Conflict, NotAuthenticated, ValidationError
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.ports import AuditQuery
from polyfabric.services.triggers import sign_webhook
from polyfabric.store import migrate
from polyfabric.store.tables import audit_tip, metadata
from polyfabric.store.unit_of_work import SqlStore
from polyfabric.testing import FakeClock
from polyfabric.testing.signer import TestSigner

ADMIN = Principal("token", "at-admin", "admin", Role.ADMIN, ("*",))
DOMAIN = "lab"
START = 1_800_000_000.0  # a whole minute: due times of "* * * * *" fall on it


@pytest.fixture(scope="module")
def migrated_url(module_db_url: str) -> str:
    store = SqlStore(module_db_url)
    migrate.upgrade(store.engine)
    store.close()
    return module_db_url


@pytest.fixture
def world(migrated_url: str) -> Iterator[tuple[Services, FakeClock]]:
    store = SqlStore(migrated_url)
    with store.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.exec_driver_sql(f"DELETE FROM {table.name}")
        conn.execute(audit_tip.insert().values(id=1, seq=0, hash=GENESIS))
    clock = FakeClock(START)
    services = Services.build(ServiceContext(store=store, clock=clock, ids=UuidIds(), signer=TestSigner()))
    services.domains.create(ADMIN, DOMAIN)
    yield services, clock
    store.close()


def _doc(**extra: Any) -> dict[str, Any]:
    return {"name": "nightly", "params": {"n": 1}, "tasks": {"a": {"function": "m:f"}, "b": {"function": "m:f",
                                                                                          "depends_on": ["a"]}},
            **extra}


def _fires(services: Services, name: str) -> list[dict[str, Any]]:
    return sorted(services.schedules.get(ADMIN, name, fires=1000)["recent"], key=lambda f: f["scheduled_at"])


def _jobs(services: Services) -> dict[str, dict[str, Any]]:
    return {j["id"]: j for j in services.jobs.list(ADMIN, status=None, domain=None, before=None, limit=1000)}


def _actions(services: Services) -> list[str]:
    with services.ctx.store.unit_of_work(readonly=True) as uow:
        return [r.action for r in uow.audit.query(AuditQuery(limit=10000))]


# -- schedules --------------------------------------------------------------------------------------


def test_a_due_time_fires_once_even_when_the_coordinator_dies_between_record_and_submit(world):
    services, clock = world
    sched = services.schedules
    sched.create(ADMIN, document=_doc(), params={"n": 5}, domain=DOMAIN, cron="* * * * *")
    clock.advance(60)
    row = services.schedules.get(ADMIN, "nightly")
    with services.ctx.store.unit_of_work(readonly=True) as uow:
        stored = uow.schedules.get(row["id"])
    recorded = sched._record(stored, clock.now())  # recorded and the cursor moved: then a "crash"
    assert [f["outcome"] for f in recorded] == ["pending"]
    assert _jobs(services) == {}
    assert sched.tick() == 0  # the cursor moved: the same due time is not recorded again
    assert sched.recover() == 1  # the next start (or leader) submits it, with the recorded job id
    assert sched.recover() == 0
    jobs = _jobs(services)
    assert list(jobs) == [recorded[0]["job_id"]] and jobs[recorded[0]["job_id"]]["params"] == {"n": 5}
    # Submitting the same fire again (a second recovery racing) is a no-op: the job id is the key.
    sched._complete({**recorded[0], "outcome": "pending"})
    assert len(_jobs(services)) == 1
    assert [f["outcome"] for f in _fires(services, "nightly")] == ["submitted"]


def test_catch_up_fires_only_the_most_recent_missed_due_times(world):
    services, clock = world
    services.schedules.grace_s = 30.0
    services.schedules.create(ADMIN, document=_doc(), params={}, domain=DOMAIN, cron="* * * * *", catch_up=2)
    clock.advance(10 * 60 + 5)  # ten due times passed while "down"; the last one 5 s ago (within grace)
    assert services.schedules.tick() == 3
    fires = _fires(services, "nightly")
    assert [f["outcome"] for f in fires] == ["missed"] * 7 + ["submitted"] * 3
    assert [f["catch_up"] for f in fires[-3:]] == [True, True, False]
    assert [f["scheduled_at"] for f in fires] == [START + 60 * i for i in range(1, 11)]  # each exactly once
    assert len(_jobs(services)) == 3
    assert services.schedules.tick() == 0
    assert "schedule.skipped" in _actions(services)


def test_catch_up_zero_skips_every_missed_run(world):
    services, clock = world
    services.schedules.grace_s = 30.0
    services.schedules.create(ADMIN, document=_doc(), params={}, domain=DOMAIN, cron="* * * * *")
    clock.advance(5 * 60 + 45)
    assert services.schedules.tick() == 0
    assert [f["outcome"] for f in _fires(services, "nightly")] == ["missed"] * 5
    clock.advance(15)  # the next due time, on time
    assert services.schedules.tick() == 1


def test_concurrency_forbid_skips_and_replace_cancels(world):
    services, clock = world
    services.schedules.create(ADMIN, document=_doc(), params={}, domain=DOMAIN, cron="* * * * *",
                              concurrency="forbid", name="f")
    services.schedules.create(ADMIN, document=_doc(), params={}, domain=DOMAIN, cron="* * * * *",
                              concurrency="replace", name="r")
    for _ in range(3):  # no node runs anything: every run stays running
        clock.advance(60)
        services.schedules.tick()
    forbid = _fires(services, "f")
    assert [f["outcome"] for f in forbid] == ["submitted", "skipped", "skipped"]
    assert "still running" in forbid[1]["reason"]
    replace = _fires(services, "r")
    assert [f["outcome"] for f in replace] == ["submitted"] * 3
    jobs = _jobs(services)
    assert [jobs[f["job_id"]]["status"] for f in replace] == ["cancelled", "cancelled", "running"]


def test_schedule_validation_pause_resume_and_audit(world):
    services, clock = world
    for bad, needle in ((dict(cron="61 * * * *"), "not a valid cron"), (dict(cron="* *"), "5 fields"),
                        (dict(timezone="Mars/Base"), "time zone"), (dict(concurrency="queue"), "concurrency"),
                        (dict(params={"nope": 1}), "'nope'")):
        args = {"document": _doc(), "params": {}, "domain": DOMAIN, "cron": "* * * * *", **bad}
        with pytest.raises(ValidationError, match=needle):
            services.schedules.create(ADMIN, **args)
    viewer = Principal("token", "v", "v", Role.VIEWER, ("*",))
    with pytest.raises(Exception, match="needs role"):
        services.schedules.create(viewer, document=_doc(), params={}, domain=DOMAIN, cron="* * * * *")
    made = services.schedules.create(ADMIN, document=_doc(), params={}, domain=DOMAIN, cron="0 9 * * *",
                                     timezone="Europe/Paris")
    assert made["next_at"] % 3600 == 0 and made["upcoming"][1] - made["upcoming"][0] == 86400
    with pytest.raises(Conflict):
        services.schedules.create(ADMIN, document=_doc(), params={}, domain=DOMAIN, cron="* * * * *")
    services.schedules.set_paused(ADMIN, "nightly", True)
    clock.advance(3 * 86400)
    assert services.schedules.tick() == 0
    resumed = services.schedules.set_paused(ADMIN, "nightly", False)
    assert resumed["next_at"] > clock.now()  # what passed while paused is not caught up
    services.schedules.delete(ADMIN, "nightly")
    assert services.schedules.list(ADMIN) == []
    actions = _actions(services)
    for action in ("schedule.created", "schedule.paused", "schedule.resumed", "schedule.deleted"):
        assert action in actions


# -- webhook triggers -------------------------------------------------------------------------------


def _deliver(services: Services, trigger: dict[str, Any], body: dict[str, Any] | bytes, *, at: float,
             secret: str | None = None, signature: str | None = None) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    stamp = str(int(at))
    headers = {"x-polyfabric-timestamp": stamp,
               "x-polyfabric-signature": signature or sign_webhook(secret or trigger["secret"], stamp, raw)}
    return services.triggers.deliver(trigger["id"], raw, headers, "127.0.0.1")


def test_webhook_signatures_params_and_replays(world):
    services, clock = world
    trigger = services.triggers.create(ADMIN, document=_doc(), domain=DOMAIN)
    assert trigger["secret"].startswith("pfw_")
    with services.ctx.store.unit_of_work(readonly=True) as uow:
        stored = uow.triggers.get(trigger["id"])
    assert trigger["secret"] not in json.dumps(stored) and "secret" not in services.triggers.list(ADMIN)[0]
    job = _deliver(services, trigger, {"n": 7}, at=clock.now())
    assert job["params"] == {"n": 7} and job["submitted_by"] == "trigger:nightly"
    with pytest.raises(Conflict, match="received before"):  # the same signed delivery again
        _deliver(services, trigger, {"n": 7}, at=clock.now())
    with pytest.raises(NotAuthenticated, match="bad signature"):
        _deliver(services, trigger, {"n": 7}, at=clock.now() + 1, secret="pfw_wrong")
    with pytest.raises(NotAuthenticated, match="missing signature"):
        services.triggers.deliver(trigger["id"], b"{}", {}, "127.0.0.1")
    with pytest.raises(NotAuthenticated, match="away from"):  # an old capture, re-signed or not
        _deliver(services, trigger, {"n": 8}, at=clock.now() - 3600)
    with pytest.raises(ValidationError, match="'m'"):
        _deliver(services, trigger, {"m": 1}, at=clock.now() + 2)
    with pytest.raises(ValidationError, match="JSON object"):
        _deliver(services, trigger, b"[1, 2]", at=clock.now() + 3)
    assert len(_jobs(services)) == 1
    actions = _actions(services)
    assert actions.count("trigger.refused") == 4 and actions.count("trigger.fired") == 1
    with services.ctx.store.unit_of_work(readonly=True) as uow:
        chain = json.dumps([r.details for r in uow.audit.query(AuditQuery(limit=10000))])
    assert trigger["secret"] not in chain


# -- garbage collection -----------------------------------------------------------------------------


def _finish(services: Services, job_id: str) -> None:
    """End a job without nodes: cancel it (its tasks are all queued, so it is cancelled at once
    and the runtime forgets it, as it does every finished job)."""
    services.runtime.intervene(ADMIN, job_id, "cancel", "test")


def test_gc_collects_expired_jobs_keeps_declared_outputs_and_spares_live_ones(world):
    services, clock = world
    gc = services.gc
    gc.default_ttl_s = 3600.0
    short = services.runtime.submit(ADMIN, _doc(name="short", ttl="10m", keep=["a"]), {}, DOMAIN)["id"]
    plain = services.runtime.submit(ADMIN, _doc(name="plain", ttl="10m"), {}, DOMAIN)["id"]
    default = services.runtime.submit(ADMIN, _doc(name="default"), {}, DOMAIN)["id"]
    forever = services.runtime.submit(ADMIN, _doc(name="forever", ttl="never"), {}, DOMAIN)["id"]
    live = services.runtime.submit(ADMIN, _doc(name="live", ttl="1s"), {}, DOMAIN)["id"]
    for job_id in (short, plain, default, forever):
        _finish(services, job_id)
    clock.advance(11 * 60)
    plan = gc.plan(ADMIN)
    assert {j["job_id"]: j["action"] for j in plan["jobs"]} == {short: "trim", plain: "delete"}
    assert _jobs(services).keys() >= {short, plain}  # a dry run deletes nothing
    done = gc.run()
    assert {j["job_id"] for j in done["jobs"]} == {short, plain}
    jobs = _jobs(services)
    assert plain not in jobs and {short, default, forever, live} <= jobs.keys()
    kept = {t["key"] for t in services.jobs.get(ADMIN, short)["tasks"]}
    assert kept == {"a"}
    assert gc.run()["jobs"] == []  # a trimmed job is not collected twice
    clock.advance(3600)
    assert {j["job_id"] for j in gc.run()["jobs"]} == {default}
    assert live in _jobs(services) and _jobs(services)[live]["status"] == "running"  # never, whatever its ttl
    assert "gc.collected" in _actions(services)


def test_gc_never_collects_a_job_that_is_being_retried(world):
    services, clock = world
    job_id = services.runtime.submit(ADMIN, _doc(name="retry", ttl="1m"), {}, DOMAIN)["id"]
    _finish(services, job_id)
    clock.advance(30)
    assert services.gc.plan(ADMIN)["jobs"] == []  # still within its ttl: retryable, kept whole
    services.runtime.intervene(ADMIN, job_id, "retry", "again")  # live again
    clock.advance(3600)
    assert services.gc.run()["jobs"] == []
    assert _jobs(services)[job_id]["status"] == "running"
    # While GC deletes a job, a retry of it is refused rather than reviving half of it.
    services.runtime.intervene(ADMIN, job_id, "cancel", "stop")
    assert services.runtime.begin_collect(job_id)
    with pytest.raises(Conflict, match="being collected"):
        services.runtime.intervene(ADMIN, job_id, "retry", "again")
    services.runtime.end_collect(job_id)


def test_gc_removes_task_rows_logs_and_events_of_collected_jobs(world):
    services, clock = world
    job_id = services.runtime.submit(ADMIN, _doc(name="gone", ttl="1m"), {}, DOMAIN)["id"]
    _finish(services, job_id)
    clock.advance(120)
    services.gc.run()
    with services.ctx.store.engine.connect() as conn:
        for table in ("tasks", "job_events"):
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE job_id = :j"), {"j": job_id}).scalar() == 0


def test_gc_removes_checkpoint_files_of_collected_tasks_only_after_the_rows_go(world, tmp_path):
    from polyfabric.services.gc import checkpoint_files

    services, clock = world
    services.gc.collectors.append(checkpoint_files(lambda: tmp_path))
    job_id = services.runtime.submit(ADMIN, _doc(name="ckpt", ttl="1m", keep=["a"]), {}, DOMAIN)["id"]
    tasks = {t["key"]: t["id"] for t in services.jobs.get(ADMIN, job_id)["tasks"]}
    with services.ctx.store.unit_of_work() as uow:
        for key, task_id in tasks.items():
            (tmp_path / f"{key}.ckpt").write_bytes(b"state")
            uow.checkpoints.add({"id": f"c-{key}", "task_id": task_id, "attempt": 1, "seq": 1, "node_id": "n-x",
                                 "format": "bytes", "size": 5, "sha256": "0" * 64, "path": f"{key}.ckpt",
                                 "created_at": clock.now()})
        uow.commit()
    _finish(services, job_id)
    clock.advance(120)
    assert [j["job_id"] for j in services.gc.run()["jobs"]] == [job_id]
    assert (tmp_path / "a.ckpt").exists() and not (tmp_path / "b.ckpt").exists()
    with services.ctx.store.unit_of_work(readonly=True) as uow:
        assert [c["id"] for c in uow.checkpoints.of_task(tasks["a"])] == ["c-a"]
        assert uow.checkpoints.of_task(tasks["b"]) == []
