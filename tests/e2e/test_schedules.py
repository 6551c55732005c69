"""Cron schedules on a real coordinator (SQLite and PostgreSQL): due times fire through the same
path as `polyfabric run`, every due time exactly once, and after a kill -9 the catch-up rule
decides what the missed ones become.

No test waits minutes: the crons have a seconds field ("* * * * * */2": every 2 s) and the
coordinator's schedule controller ticks every 0.2 s (POLYFABRIC_SCHEDULE_TICK_S). No agent runs
here: a submitted job stays running, which is what concurrency forbid needs to see.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from polyfabric.testing import CoordinatorProcess, wait_until

from .conftest import DOWN, HEARTBEAT, UNREACHABLE, Fabric

EVERY = 2.0
CRON = "* * * * * */2"
GRACE = 3.0
WORKFLOW = {"name": "tick", "params": {"n": 1}, "tasks": {"work": {"command": ["true"]}}}


@pytest.fixture(scope="module")
def fab(module_backend: str, module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    root = tmp_path_factory.mktemp(f"schedules-{module_backend}")
    coordinator = CoordinatorProcess(root / "coordinator", module_db_url, heartbeat_interval=HEARTBEAT,
                                     unreachable_after=UNREACHABLE, down_after=DOWN)
    coordinator.env = {"POLYFABRIC_SCHEDULE_TICK_S": "0.2", "POLYFABRIC_SCHEDULE_GRACE_S": str(GRACE)}
    coordinator.start()
    fabric = Fabric(coordinator, root, module_backend)
    fabric.admin.post("/v1/domains", {"name": "test"})
    (root / "tick.yaml").write_text(
        "name: tick\nparams: {n: 1}\ntasks:\n  work: {command: [\"true\"]}\n")
    try:
        yield fabric
    finally:
        fabric.close()
        coordinator.stop()


def _fires(fab: Fabric, name: str) -> list[dict[str, Any]]:
    return sorted(fab.admin.get(f"/v1/schedules/{name}", fires=1000)["recent"], key=lambda f: f["scheduled_at"])


def _wait_fires(fab: Fabric, name: str, check: Any, what: str, timeout: float = 40.0) -> list[dict[str, Any]]:
    return wait_until(lambda: (lambda f: f if check(f) else None)(_fires(fab, name)), timeout=timeout,
                      interval=0.2, message=f"schedule {name}: {what}")


def _contiguous(fires: list[dict[str, Any]]) -> None:
    """Every due time from the first to the last appears exactly once."""
    times = [f["scheduled_at"] for f in fires]
    assert len(times) == len(set(times)), f"a due time recorded twice: {times}"
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert all(g == EVERY for g in gaps), f"due times not contiguous: {gaps}"


def test_a_cron_schedule_fires_each_due_time_once_and_can_be_paused(fab: Fabric):
    made = fab.cli_json("schedule", "create", str(fab.root / "tick.yaml"), "--cron", CRON, "-p", "n=7",
                        "--name", "every2", "--domain", "test", "--catch-up", "100", "--timezone", "Europe/Paris")
    assert made["cron"] == CRON and made["timezone"] == "Europe/Paris" and made["next_at"] > time.time() - 30
    fires = _wait_fires(fab, "every2", lambda f: len([x for x in f if x["outcome"] == "submitted"]) >= 3,
                        "three runs")
    _contiguous(fires)
    assert {f["outcome"] for f in fires} == {"submitted"}
    for fire in fires:
        job = fab.admin.get(f"/v1/jobs/{fire['job_id']}")
        assert job["params"] == {"n": "7"} and job["submitted_by"] == "schedule:every2" and job["domain"] == "test"
    listed = {s["name"]: s for s in fab.cli_json("schedule", "ls")}
    assert listed["every2"]["fires"]["submitted"] >= 3
    shown = fab.cli_json("schedule", "show", "every2")
    assert len(shown["upcoming"]) == 3 and shown["recent"]
    human = fab.cli("schedule", "ls")
    assert human.returncode == 0 and "every2" in human.stdout and CRON in human.stdout

    assert fab.cli_json("schedule", "pause", "every2")["paused"] is True
    paused_at = time.time()
    count = len(_fires(fab, "every2"))
    wait_until(lambda: time.time() > paused_at + 2.5 * EVERY, timeout=30, message="two due times to pass")
    assert len(_fires(fab, "every2")) <= count + 1  # at most a fire that was being recorded as it paused
    count = len(_fires(fab, "every2"))
    assert fab.cli_json("schedule", "resume", "every2")["paused"] is False
    _wait_fires(fab, "every2", lambda f: len(f) > count, "a run after resume")
    assert fab.cli("schedule", "rm", "every2").returncode == 0
    assert fab.http("GET", "/v1/schedules/every2").status_code == 404
    actions = [r["action"] for r in fab.audit() if r["action"].startswith("schedule.")]
    for action in ("schedule.created", "schedule.fired", "schedule.paused", "schedule.resumed", "schedule.deleted"):
        assert action in actions, actions


def test_concurrency_forbid_skips_while_the_previous_run_still_runs(fab: Fabric):
    fab.admin.post("/v1/schedules", {"workflow": WORKFLOW, "domain": "test", "cron": CRON, "name": "solo",
                                     "concurrency": "forbid", "catch_up": 100})
    fires = _wait_fires(fab, "solo", lambda f: len(f) >= 3 and f[2]["outcome"] != "pending", "three due times")
    assert fires[0]["outcome"] == "submitted", fires
    assert all(f["outcome"] == "skipped" and fires[0]["job_id"] in f["reason"] for f in fires[1:3]), fires
    fab.admin.delete("/v1/schedules/solo")


def test_bad_schedules_are_refused_naming_the_problem(fab: Fabric):
    for body, needle in (({"cron": "99 * * * *"}, "not a valid cron"), ({"timezone": "Nowhere/Land"}, "time zone"),
                         ({"params": {"m": 1}}, "'m'"), ({"concurrency": "queue"}, "concurrency")):
        reply = fab.http("POST", "/v1/schedules", json={"workflow": WORKFLOW, "domain": "test", "cron": CRON,
                                                         "name": "bad", **body})
        assert reply.status_code in (400, 422) and needle in reply.text, reply.text
    viewer = fab.api_token("viewer", ["test"])["token"]
    reply = fab.http("POST", "/v1/schedules", token=viewer,
                     json={"workflow": WORKFLOW, "domain": "test", "cron": CRON, "name": "nope"})
    assert reply.status_code == 403
    assert fab.http("GET", "/v1/schedules", token=None).status_code == 401


def test_after_a_kill_9_exactly_the_catch_up_number_of_missed_runs_fire(fab: Fabric):
    fab.admin.post("/v1/schedules", {"workflow": WORKFLOW, "domain": "test", "cron": CRON, "name": "cu",
                                     "catch_up": 2})
    before = _wait_fires(fab, "cu", lambda f: len(f) >= 2, "two runs before the crash")
    fab.coordinator.kill(signal.SIGKILL)
    killed_at = time.time()
    wait_until(lambda: time.time() > killed_at + 6 * EVERY, timeout=60, message="six due times to pass while down")
    fab.coordinator.start()
    restarted_at = time.time()
    # A pass records its fires (pending) in one transaction, then submits them one by one: wait
    # for the catch-up fires' outcomes, not only for their rows.
    fires = _wait_fires(fab, "cu", lambda f: any(x["catch_up"] for x in f) and f[-1]["scheduled_at"] > restarted_at
                        and all(x["outcome"] != "pending" for x in f if x["catch_up"]),
                        "the catch-up submitted and a run after the restart", timeout=60)
    _contiguous(fires)  # every due time exactly once: none lost, none twice
    last_before = max(f["scheduled_at"] for f in fires if f["fired_at"] < killed_at)
    assert last_before >= before[-1]["scheduled_at"]
    # The due times that passed while down were all judged in the first pass after the restart.
    down = [f for f in fires if f["scheduled_at"] > last_before and f["fired_at"] >= restarted_at - 1]
    batch = min(f["fired_at"] for f in down)
    first_pass = [f for f in down if f["fired_at"] == batch]
    caught = [f for f in first_pass if f["catch_up"]]
    missed = [f for f in first_pass if f["outcome"] == "missed"]
    assert len(caught) == 2, first_pass
    assert all(f["outcome"] == "submitted" for f in caught), caught
    assert missed and max(f["scheduled_at"] for f in missed) < min(f["scheduled_at"] for f in caught)
    on_time = [f for f in first_pass if not f["catch_up"] and f["outcome"] == "submitted"]
    assert all(f["scheduled_at"] >= batch - GRACE for f in on_time)
    job_ids = [f["job_id"] for f in fires if f["outcome"] == "submitted"]
    assert len(job_ids) == len(set(job_ids))
    for job_id in job_ids:
        assert fab.admin.get(f"/v1/jobs/{job_id}")["submitted_by"] == "schedule:cu"
    fab.admin.post("/v1/schedules/cu/pause")  # then every run of it has its fire in the list
    fires = _wait_fires(fab, "cu", lambda f: all(x["outcome"] != "pending" for x in f), "no fire pending")
    job_ids = [f["job_id"] for f in fires if f["outcome"] == "submitted"]
    runs = [j for j in fab.admin.get("/v1/jobs", limit=1000) if j["submitted_by"] == "schedule:cu"]
    assert sorted(j["id"] for j in runs) == sorted(job_ids)  # no run without its fire, none twice
    fab.admin.delete("/v1/schedules/cu")


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_leader_change_loses_no_due_time_and_runs_none_twice(backend: str, db_url: str, tmp_path):
    """Two coordinators on one PostgreSQL: kill -9 the leader while a schedule fires every 2 s; the
    other takes over (about 5 s) and the due times of the gap run then, each once (30 s grace)."""
    coordinators = [CoordinatorProcess(tmp_path / f"c{i}", db_url, heartbeat_interval=HEARTBEAT,
                                       unreachable_after=UNREACHABLE, down_after=DOWN) for i in range(2)]
    for c in coordinators:
        c.env = {"POLYFABRIC_SCHEDULE_TICK_S": "0.2", "POLYFABRIC_SCHEDULE_GRACE_S": "30"}
    try:
        coordinators[0].start()
        coordinators[1].start()
        token = coordinators[0].admin_token
        with coordinators[0].api(token) as api:
            api.post("/v1/domains", {"name": "test"})
            api.post("/v1/schedules", {"workflow": WORKFLOW, "domain": "test", "cron": CRON, "name": "ha"})
            wait_until(lambda: len(api.get("/v1/schedules/ha")["recent"]) >= 2, timeout=40, interval=0.2,
                       message="two runs under the first leader")
        coordinators[0].kill(signal.SIGKILL)
        killed_at = time.time()
        with coordinators[1].api(token) as api:
            def fires() -> list[dict[str, Any]]:
                return sorted(api.get("/v1/schedules/ha", fires=1000)["recent"], key=lambda f: f["scheduled_at"])

            wait_until(lambda: any(f["scheduled_at"] > killed_at + 8 for f in fires()), timeout=60, interval=0.3,
                       message="runs under the new leader")
            wait_until(lambda: api.post("/v1/schedules/ha/pause"), timeout=30, message="pause on the new leader")
            final = wait_until(lambda: (lambda f: f if all(x["outcome"] != "pending" for x in f) else None)(fires()),
                               timeout=30, message="no fire pending")
            _contiguous(final)
            assert {f["outcome"] for f in final} == {"submitted"}, final
            ids = [f["job_id"] for f in final]
            runs = [j["id"] for j in api.get("/v1/jobs", limit=1000) if j["submitted_by"] == "schedule:ha"]
            assert sorted(runs) == sorted(ids) and len(set(ids)) == len(ids)
    finally:
        for c in coordinators:
            c.stop()
