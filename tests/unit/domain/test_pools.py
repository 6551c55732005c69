"""The autoscaler's decision (domain/pools.py): bounds, quota, idle rule, demand rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.pools import (
    MemberState,
    PoolMember,
    PoolSpec,
    WaitingTask,
    fits_pool,
    plan_scaling,
    validate_pool,
)
from polyfabric.domain.resources import Resources

NOW = 10_000.0


def spec(**kw):
    base = dict(name="burst", domain="lab", provider="local", min_nodes=1, max_nodes=4, slots=2,
                idle_s=60.0, scale_up_after_s=5.0, start_timeout_s=120.0)
    base.update(kw)
    return PoolSpec(**base)


def member(i, state=MemberState.ACTIVE, *, attempts=0, idle_for=None, started_ago=30.0):
    active = state is MemberState.ACTIVE
    return PoolMember(id=f"m{i}", state=state, started_at=NOW - started_ago, node_id=f"n-{i}" if active else None,
                      node_active=active, attempts=attempts,
                      idle_since=(NOW - idle_for) if idle_for is not None else None)


def task(i, waited=10.0, cpu=1000, constraints=None):
    return WaitingTask(task_id=f"t{i}", domain="lab", resources=Resources(cpu_millis=cpu, slots=1),
                       constraints=constraints or {}, waited_s=waited)


def test_below_minimum_starts_nodes_without_demand():
    d = plan_scaling(spec(min_nodes=2), [], [], now=NOW, quota_left=None)
    assert d.add == 2 and "minimum" in d.reason


def test_demand_adds_one_node_per_slots_tasks_minus_those_starting():
    members = [member(0), member(1, MemberState.STARTING)]
    d = plan_scaling(spec(), members, [task(i) for i in range(5)], now=NOW, quota_left=None)
    assert d.add == 2  # ceil(5 / 2) = 3 wanted, 1 already starting
    assert d.signal["waiting_tasks"] == 5 and "waited over 5s" in d.reason


def test_fresh_waits_and_tasks_that_do_not_fit_are_not_demand():
    waiting = [task(0, waited=1.0), task(1, cpu=64_000), task(2, constraints={"gpu": "a100"})]
    d = plan_scaling(spec(), [member(0)], waiting, now=NOW, quota_left=None)
    assert d.add == 0 and not d.changes


def test_quota_caps_scale_up_and_says_so():
    d = plan_scaling(spec(max_nodes=10), [member(0)], [task(i) for i in range(20)], now=NOW, quota_left=2)
    assert d.add == 2
    d = plan_scaling(spec(max_nodes=10), [member(0)], [task(i) for i in range(20)], now=NOW, quota_left=0)
    assert d.add == 0 and "quota" in d.reason


def test_idle_nodes_drain_down_to_min_but_busy_and_recent_ones_stay():
    members = [member(0, idle_for=600), member(1, idle_for=600), member(2, attempts=1), member(3, idle_for=10)]
    d = plan_scaling(spec(min_nodes=1), members, [], now=NOW, quota_left=None)
    assert set(d.drain) == {"m0", "m1"}
    d = plan_scaling(spec(min_nodes=3), members, [], now=NOW, quota_left=None)
    assert len(d.drain) == 1


def test_no_drain_while_demand_waits():
    members = [member(0, idle_for=600), member(1, idle_for=600)]
    d = plan_scaling(spec(min_nodes=0, max_nodes=2), members, [task(0)], now=NOW, quota_left=None)
    assert not d.drain


def test_a_member_that_never_came_up_is_given_up():
    members = [member(0, MemberState.STARTING, started_ago=500)]
    d = plan_scaling(spec(min_nodes=1), members, [], now=NOW, quota_left=None)
    assert d.give_up == ("m0",) and d.add == 1


def test_paused_pool_changes_nothing_but_gives_up_dead_starts():
    d = plan_scaling(spec(min_nodes=3, paused=True), [], [task(0)], now=NOW, quota_left=None)
    assert not d.changes and d.reason == "paused"


def test_validation_names_the_field():
    with pytest.raises(ValidationError, match="--max"):
        validate_pool(spec(min_nodes=3, max_nodes=2))
    with pytest.raises(ValidationError, match="--provider"):
        validate_pool(spec(provider="aws"))
    with pytest.raises(ValidationError, match="pool name"):
        validate_pool(spec(name="Bad Name"))
    validate_pool(spec())


def test_fits_pool_checks_resources_slots_and_labels():
    s = spec(labels={"pool": "burst", "zone": "a"})
    assert fits_pool(task(0, constraints={"zone": "a"}), s)
    assert not fits_pool(task(0, constraints={"zone": "b"}), s)
    assert not fits_pool(WaitingTask("t", "lab", Resources(slots=3), {}, 9.0), s)


_states = st.sampled_from(list(MemberState))


@st.composite
def _members(draw):
    out = []
    for i in range(draw(st.integers(0, 8))):
        state = draw(_states)
        attempts = draw(st.integers(0, 3))
        idle = draw(st.one_of(st.none(), st.floats(0, 1000)))
        out.append(PoolMember(id=f"m{i}", state=state, started_at=NOW - draw(st.floats(0, 1000)),
                              node_id=f"n{i}", node_active=state is MemberState.ACTIVE, attempts=attempts,
                              idle_since=None if idle is None or attempts else NOW - idle))
    return out


@settings(max_examples=400, deadline=None)
@given(members=_members(), n_waiting=st.integers(0, 30), min_nodes=st.integers(0, 4), extra=st.integers(0, 5),
       quota=st.one_of(st.none(), st.integers(0, 6)))
def test_decisions_respect_bounds_quota_and_busy_nodes(members, n_waiting, min_nodes, extra, quota):
    s = spec(min_nodes=min_nodes, max_nodes=max(min_nodes, 1) + extra)
    d = plan_scaling(s, members, [task(i) for i in range(n_waiting)], now=NOW, quota_left=quota)
    by_id = {m.id: m for m in members}
    alive = [m for m in members if m.state.alive and m.id not in d.give_up]
    # never past the maximum, never past the quota
    assert len(alive) + d.add <= max(s.max_nodes, len(alive))
    if quota is not None:
        assert d.add <= quota
    # never drains a node with work, a node not Active, or below the minimum
    for mid in d.drain:
        assert by_id[mid].state is MemberState.ACTIVE and by_id[mid].attempts == 0
    draining = sum(1 for m in alive if m.state is MemberState.DRAINING)
    if d.drain:
        assert len(alive) - draining - len(d.drain) >= s.min_nodes
        # only above the maximum may nodes go while tasks wait
        assert n_waiting == 0 or len(alive) - draining > s.max_nodes
    assert not (d.add and d.drain)
    assert d.reason


def test_resized_below_its_size_drains_idle_nodes_at_once_and_waits_for_busy_ones():
    members = [member(0, idle_for=1), member(1, attempts=2), member(2, idle_for=1)]
    d = plan_scaling(spec(min_nodes=0, max_nodes=0), members, [], now=NOW, quota_left=None)
    assert set(d.drain) == {"m0", "m2"} and "above the maximum" in d.reason
    d = plan_scaling(spec(min_nodes=0, max_nodes=0), [member(1, attempts=2)], [], now=NOW, quota_left=None)
    assert not d.drain and "busy" in d.reason
