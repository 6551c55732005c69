"""Telemetry history, the contribution ledger and fair share as use cases, over a real store
(SQLite and PostgreSQL) with a FakeClock; agents are simulated in-process (runtime.report)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from polyfabric.coordinator.bootstrap import UuidIds
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.errors import NotPermitted, ValidationError
from polyfabric.domain.resources import Resources
from polyfabric.scheduling.fairshare import FairShare
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.nodes import Registration
from polyfabric.services.telemetry_history import extract, parse_since
from polyfabric.store import migrate
from polyfabric.store.unit_of_work import SqlStore
from polyfabric.testing import FakeClock
from polyfabric.testing.signer import TestSigner

ADMIN = Principal("token", "at-admin", "admin", Role.ADMIN, ("*",))
T0 = 1_800_000_000.0  # a multiple of 600: bucket boundaries are easy to reason about


@pytest.fixture
def world(db_url: str) -> Iterator[tuple[Services, FakeClock]]:
    store = SqlStore(db_url)
    migrate.upgrade(store.engine)
    clock = FakeClock(T0)
    services = Services.build(ServiceContext(store=store, clock=clock, ids=UuidIds(), signer=TestSigner()))
    services.telemetry_history.configure(10.0)  # type: ignore[union-attr]
    yield services, clock
    store.close()


def _join(services: Services, name: str, domain: str, slots: int = 1) -> str:
    token = services.tokens.create_join(ADMIN, domain=domain, ttl_s=None, uses=None).token
    node = services.nodes.register(Registration(public_key=public_key_raw(generate_private_key()), name=name,
                                                labels={}, capacity=Resources(slots=slots)), token)
    _beat(services, node.id, {})
    return node.id


def _beat(services: Services, node_id: str, telemetry: dict[str, Any]) -> None:
    entry = services.nodes.heartbeat(node_id, telemetry, None)
    if services.nodes.needs_settle(entry):
        services.nodes.settle(node_id)


def _job(services: Services, domain: str, *keys: str) -> str:
    if domain not in {d["name"] for d in services.domains.list(ADMIN)}:
        services.domains.create(ADMIN, domain)
    doc = {"name": "j", "tasks": {key: {"command": ["true"]} for key in keys}}
    return str(services.runtime.submit(ADMIN, doc, {}, domain)["id"])


USAGE = {"wall_s": 2.0, "cpu_s": 1.5, "memory_byte_s": 2e8, "max_rss_bytes": 10**8, "gpu_s": 0.0, "method": "test"}


# -- the ledger -------------------------------------------------------------------------------------


def test_finished_attempts_with_usage_become_ledger_rows_once(world):
    services, clock = world
    giver = _join(services, "giver-1", "giver", slots=2)
    job = _job(services, "taker", "a", "b")
    services.runtime.schedule_once()
    leases, _ = services.runtime.leases_for(giver)
    assert len(leases) == 2
    a, b = sorted(leases, key=lambda lease: lease["key"])
    done = [{"type": "finished", "task_id": a["task_id"], "attempt": a["attempt"], "at": clock.now(),
             "status": "succeeded", "result": None, "error": None, "exit_code": 0, "usage": USAGE},
            {"type": "finished", "task_id": b["task_id"], "attempt": b["attempt"], "at": clock.now(),
             "status": "failed", "result": None, "error": "boom", "exit_code": 1}]  # no usage: no row
    services.runtime.report(giver, done, [], [])
    services.runtime.report(giver, done[:1], [], [])  # at-least-once: a repeat adds nothing
    rows = services.ledger.attempts(ADMIN, job_id=job)  # type: ignore[union-attr]
    assert len(rows) == 1
    row = rows[0]
    assert (row["task_key"], row["consumer_domain"], row["provider_domain"], row["node_id"], row["outcome"]) == \
        ("a", "taker", "giver", giver, "succeeded")
    assert (row["cpu_s"], row["wall_s"], row["memory_byte_s"], row["max_rss_bytes"]) == (1.5, 2.0, 2e8, 10**8)
    report = services.ledger.report(ADMIN)  # type: ignore[union-attr]
    by = {d["domain"]: d for d in report["domains"]}
    assert by["taker"]["consumed"]["cpu_s"] == 1.5 and by["taker"]["contributed"]["attempts"] == 0
    assert by["giver"]["contributed"]["cpu_s"] == 1.5 and by["giver"]["balance_cpu_s"] == 1.5
    assert by["taker"]["balance_cpu_s"] == -1.5
    assert services.ledger.report(ADMIN, since=clock.now() + 1)["domains"] == []  # type: ignore[union-attr]
    viewer = Principal("token", "at-v", "v", Role.VIEWER, ("taker",))
    assert [d["domain"] for d in services.ledger.report(viewer)["domains"]] == ["taker"]  # type: ignore[union-attr]
    with pytest.raises(NotPermitted):
        services.ledger.report(viewer, domain="giver")  # type: ignore[union-attr]
    assert services.ledger.refresh_balances() == {"taker": (0.0, 1.5), "giver": (1.5, 0.0)}  # type: ignore[union-attr]


def test_fair_share_places_the_contributing_domain_first_among_equal_priorities(world):
    services, _clock = world
    node = _join(services, "only-1", "giver", slots=1)
    runtime = services.runtime
    runtime.share_balances = lambda: {"giver": (3600.0, 0.0), "taker": (0.0, 3600.0)}
    first = _job(services, "taker", "t")  # submitted first: plain FIFO would place it
    _job(services, "giver", "g")
    runtime.fair_share = FairShare(enabled=True)
    runtime.schedule_once()
    leases, _ = runtime.leases_for(node)
    assert [lease["key"] for lease in leases] == ["g"]
    assert first not in {lease["job_id"] for lease in leases}


def test_without_fair_share_the_first_submitted_goes_first(world):
    services, _clock = world
    node = _join(services, "only-2", "giver", slots=1)
    services.runtime.share_balances = lambda: {"giver": (3600.0, 0.0), "taker": (0.0, 3600.0)}
    first = _job(services, "taker", "t")
    _job(services, "giver", "g")
    services.runtime.schedule_once()
    leases, _ = services.runtime.leases_for(node)
    assert [lease["job_id"] for lease in leases] == [first]


# -- telemetry history ------------------------------------------------------------------------------


def test_history_writes_raw_points_and_minute_means_and_prunes_by_tier(world):
    services, clock = world
    history = services.telemetry_history
    node = _join(services, "tele-1", "giver")
    silent = _join(services, "tele-2", "giver")
    written = 0
    for i in range(7):  # passes at T0, T0+10 ... T0+60: six raw samples in the first minute
        _beat(services, node, {"cpu_percent": 10.0 * i, "memory_percent": 50.0, "memory_used_bytes": 1000,
                               "gpus": [{"util_percent": 20.0, "memory_used_bytes": 5}, {"util_percent": 40.0}]})
        written += history.record()  # type: ignore[union-attr]
        clock.advance(10)
    raw = history.query(ADMIN, node, since="10m", resolution=10)  # type: ignore[union-attr]
    assert [p["at"] for p in raw["points"]] == [int(T0) + 10 * i for i in range(7)]
    assert [p["cpu_percent"] for p in raw["points"]] == [10.0 * i for i in range(7)]
    assert raw["points"][0]["gpu_percent"] == 30.0 and raw["points"][0]["gpu_memory_used_bytes"] == 5
    minute = history.query(ADMIN, node, since="10m", resolution=60)  # type: ignore[union-attr]
    assert len(minute["points"]) == 1  # the first minute closed at T0+60; the second is still open
    point = minute["points"][0]
    assert point["at"] == int(T0) and point["samples"] == 6 and point["cpu_percent"] == pytest.approx(25.0)
    # The node heard once only (tele-2) has one raw point, then a gap, not repeated values.
    assert len(history.query(ADMIN, silent, since="10m", resolution=10)["points"]) == 1  # type: ignore[union-attr]
    assert history.query(ADMIN, node, since="1h")["resolution_s"] == 10  # type: ignore[union-attr]
    assert history.query(ADMIN, node, since="6h")["resolution_s"] == 60  # type: ignore[union-attr]
    assert history.query(ADMIN, node, since="7d")["resolution_s"] == 600  # type: ignore[union-attr]
    # An hour later the raw points are pruned; the minute mean stays (kept 24 h).
    clock.advance(3700)
    _beat(services, node, {"cpu_percent": 1.0})
    history.record()  # type: ignore[union-attr]
    assert [p["at"] for p in history.query(ADMIN, node, since="2h", resolution=10)["points"]] == \
        [int(clock.now()) // 10 * 10]  # type: ignore[union-attr]
    assert any(p["at"] == int(T0) for p in history.query(ADMIN, node, since="2h", resolution=60)["points"])  # type: ignore[union-attr]


def test_history_refuses_bad_input_and_other_domains(world):
    services, _clock = world
    history = services.telemetry_history
    node = _join(services, "tele-3", "giver")
    with pytest.raises(ValidationError, match="neither a duration"):
        history.query(ADMIN, node, since="soon")  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="resolution 7s is not kept"):
        history.query(ADMIN, node, resolution=7)  # type: ignore[union-attr]
    with pytest.raises(NotPermitted):
        history.query(Principal("token", "at-v", "v", Role.VIEWER, ("other",)), node)  # type: ignore[union-attr]


def test_extract_and_parse_since():
    assert extract({"cpu_percent": 5, "load1": None, "gpus": []}) == {
        "cpu_percent": 5.0, "memory_percent": None, "memory_used_bytes": None, "disk_percent": None,
        "load1": None, "gpu_percent": None, "gpu_memory_used_bytes": None}
    assert extract({"cpu_percent": float("nan"), "memory_percent": True})["cpu_percent"] is None
    assert parse_since("90s", 1000.0) == 910.0 and parse_since("2h", 10_000.0) == 2800.0
    assert parse_since(None, 5000.0) == 1400.0  # default: one hour back
    assert parse_since("1800000000", 5.0) == 1_800_000_000.0  # unix seconds
