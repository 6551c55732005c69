"""Topology scorers: locality (near an upstream node by measured RTT, else by labels), zone
spread across a fan-out, label affinity; alone and through the whole pipeline."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from polyfabric.domain.vivaldi import Coordinate
from polyfabric.scheduling import CycleState, NodeView, RunningTask, TaskRequest, schedule
from polyfabric.scheduling.registry import builtin_registry, default_profile, topology_profile
from polyfabric.scheduling.scorers import AffinityScorer, LocalityScorer, ZoneSpreadScorer
from polyfabric.scheduling.scorers.locality import label_closeness

from .builders import node, res, running, task, view


def _at(n: NodeView, x: float, y: float = 0.0) -> NodeView:
    """The node placed at (x, y) seconds in a 2-D coordinate space."""
    return dataclasses.replace(n, coords=Coordinate((x, y), 0.1, 0.0, 1e-5))


def _t(task_id: str, seq: int = 0, **topo: object) -> TaskRequest:
    return dataclasses.replace(task(task_id, seq=seq), **topo)


def _where(plan) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {p.task_id: p.node_id for p in plan.placements}


# -- locality ----------------------------------------------------------------------------------


def test_locality_orders_by_estimated_rtt() -> None:
    up, close, far = _at(node("up"), 0.0), _at(node("close"), 0.002), _at(node("far"), 0.050)
    cyc = CycleState(view(up, close, far))
    scorer = LocalityScorer()
    t = _t("t", near=frozenset({"up"}))
    s_up, s_close, s_far = (scorer.score(t, n, cyc) for n in (up, close, far))
    assert s_up == 100.0 > s_close > s_far > 0.0
    assert scorer.score(task("plain"), close, cyc) == 0.0


def test_locality_falls_back_to_labels_without_coordinates() -> None:
    a = node("a", labels={"region": "eu", "zone": "eu-1", "rack": "r1"})
    same_rack = node("b", labels={"region": "eu", "zone": "eu-1", "rack": "r1"})
    same_zone = node("c", labels={"region": "eu", "zone": "eu-1", "rack": "r2"})
    same_region = node("d", labels={"region": "eu", "zone": "eu-2", "rack": "r1"})
    elsewhere = node("e", labels={"region": "us", "zone": "us-1", "rack": "r1"})
    closeness = [label_closeness(a, n) for n in (a, same_rack, same_zone, same_region, elsewhere)]
    assert closeness == [100.0, 75.0, 50.0, 25.0, 0.0]
    cyc = CycleState(view(a, same_rack, same_zone, same_region, elsewhere))
    t = _t("t", near=frozenset({"a"}))
    scores = [LocalityScorer().score(t, n, cyc) for n in (same_rack, same_zone, same_region, elsewhere)]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]


def test_near_placement_picks_the_close_node_over_a_fuller_far_one() -> None:
    """binpack alone would pick the half-full far node; locality outweighs it."""
    up = _at(node("up", cpu=1, slots=1, running=[running("r0", "up", resources=res(1, 1))]), 0.0)
    close = _at(node("close"), 0.001)
    far = _at(node("far", running=[running("r1", "far", resources=res(2, 8))]), 0.080)
    v = view(up, close, far)
    t = _t("t", near=frozenset({"up"}))
    assert _where(schedule(v, [t], default_profile(), random.Random(0)))["t"] == "far"
    assert _where(schedule(v, [t], topology_profile(), random.Random(0)))["t"] == "close"


def test_near_prefers_the_upstream_node_itself_when_it_has_room() -> None:
    nodes = [_at(node(f"n{i}"), 0.001 * i) for i in range(40)]
    t = _t("t", near=frozenset({"n37"}))
    for seed in range(5):
        assert _where(schedule(view(*nodes), [t], topology_profile(), random.Random(seed)))["t"] == "n37"


def test_near_finds_the_closest_node_beyond_the_capacity_walk() -> None:
    """200 nodes; the upstream node is full and its one close neighbour is nowhere near the
    start of the best-fit walk: nomination brings it in."""
    nodes = [_at(node(f"n{i}", running=[running(f"r{i}", f"n{i}", resources=res(2, 8))]), 0.05 + 0.001 * i)
             for i in range(200)]
    nodes.append(_at(node("up", cpu=1, slots=1, running=[running("rup", "up", resources=res(1, 1))]), 0.0))
    nodes.append(_at(node("buddy", cpu=64, mem_gi=256), 0.0005))  # empty and huge: binpack's last choice
    t = _t("t", near=frozenset({"up"}))
    assert _where(schedule(view(*nodes), [t], topology_profile(), random.Random(1)))["t"] == "buddy"


# -- zone spread -------------------------------------------------------------------------------


def _zones(sizes: dict[str, int], **kw: object) -> list[NodeView]:
    return [node(f"{z}{i}", labels={"zone": z}, **kw) for z, n in sizes.items() for i in range(n)]  # type: ignore[arg-type]


def test_spread_puts_a_fan_out_across_zones() -> None:
    nodes = _zones({"a": 10, "b": 2, "c": 2})
    tasks = [_t(f"w{i}", i, spread="zone", group="job/work") for i in range(9)]
    plan = schedule(view(*nodes), tasks, topology_profile(), random.Random(0))
    where = _where(plan)
    per_zone = Counter(v.node(where[t.task_id]).labels["zone"] for t in tasks for v in [view(*nodes)])
    assert per_zone == Counter({"a": 3, "b": 3, "c": 3})


def test_binpack_alone_would_not_spread() -> None:
    nodes = _zones({"a": 10, "b": 2, "c": 2})
    tasks = [_t(f"w{i}", i, spread="zone", group="job/work") for i in range(9)]
    where = _where(schedule(view(*nodes), tasks, default_profile(), random.Random(0)))
    assert len({where[t.task_id][0] for t in tasks}) < 3


def test_spread_counts_running_siblings() -> None:
    a0 = node("a0", labels={"zone": "a"}, running=[
        RunningTask(f"old{i}", "wf", "acme", 0, res(1, 1), None, "a0", True, "job/work") for i in range(2)])
    nodes = [a0, node("b0", labels={"zone": "b"}), node("c0", labels={"zone": "c"})]
    tasks = [_t(f"w{i}", i, spread="zone", group="job/work") for i in range(4)]
    where = _where(schedule(view(*nodes), tasks, topology_profile(), random.Random(0)))
    assert Counter(where.values()) == Counter({"b0": 2, "c0": 2})


def test_spread_groups_do_not_mix() -> None:
    nodes = _zones({"a": 2, "b": 2})
    tasks = [_t(f"x{i}", i, spread="zone", group="j/x") for i in range(2)]
    tasks += [_t(f"y{i}", 10 + i, spread="zone", group="j/y") for i in range(2)]
    where = _where(schedule(view(*nodes), tasks, topology_profile(), random.Random(0)))
    assert {where["x0"][0], where["x1"][0]} == {"a", "b"}
    assert {where["y0"][0], where["y1"][0]} == {"a", "b"}


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=2, max_size=4), count=st.integers(1, 12),
       seed=st.integers(0, 1000))
def test_spread_is_balanced_while_zones_have_room(sizes: list[int], count: int, seed: int) -> None:
    """With room everywhere, zone counts never differ by more than one."""
    nodes = _zones({chr(ord("a") + i): n for i, n in enumerate(sizes)}, slots=16, cpu=32, mem_gi=64)
    tasks = [_t(f"w{i}", i, spread="zone", group="g") for i in range(count)]
    v = view(*nodes)
    where = _where(schedule(v, tasks, topology_profile(), random.Random(seed)))
    assert len(where) == count
    per = Counter(v.node(n).labels["zone"] for n in where.values())
    values = [per.get(chr(ord("a") + i), 0) for i in range(len(sizes))]
    assert max(values) - min(values) <= 1


def test_zone_spread_scorer_without_the_label() -> None:
    cyc = CycleState(view(node("x")))
    assert ZoneSpreadScorer().score(_t("t", spread="zone", group="g"), node("x"), cyc) == 0.0
    assert ZoneSpreadScorer().score(task("t"), node("x"), cyc) == 0.0


# -- affinity ----------------------------------------------------------------------------------


def test_affinity_scores() -> None:
    scorer = AffinityScorer()
    gpu = node("g", labels={"disk": "ssd", "zone": "a"})
    plain = node("p", labels={"disk": "hdd", "zone": "a"})
    cyc = CycleState(view(gpu, plain))
    t = _t("t", affinity=(("disk", "ssd", 10.0),))
    assert scorer.score(t, gpu, cyc) == 100.0 and scorer.score(t, plain, cyc) == 50.0
    avoid = _t("t", affinity=(("zone", "a", -5.0), ("disk", "ssd", 5.0)))
    assert scorer.score(avoid, gpu, cyc) == 50.0 and scorer.score(avoid, plain, cyc) == 25.0
    assert scorer.score(task("t"), gpu, cyc) == 0.0


def test_affinity_beats_binpack_and_reaches_beyond_the_walk() -> None:
    nodes = [node(f"n{i}", running=[running(f"r{i}", f"n{i}", resources=res(2, 8))]) for i in range(100)]
    nodes.append(node("fast", cpu=64, mem_gi=256, labels={"disk": "nvme"}))
    t = _t("t", affinity=(("disk", "nvme", 5.0),))
    assert _where(schedule(view(*nodes), [t], topology_profile(), random.Random(0)))["t"] == "fast"
    assert _where(schedule(view(*nodes), [task("t")], topology_profile(), random.Random(0)))["t"] != "fast"


def test_plain_tasks_plan_the_same_with_the_topology_profile() -> None:
    """Tasks that ask for no topology get the same plan as with the default profile."""
    nodes = [node(f"n{i}", cpu=4, running=[running(f"r{i}", f"n{i}", resources=res(i % 4, 1))] if i % 4 else [])
             for i in range(30)]
    tasks = [task(f"t{i}", seq=i) for i in range(40)]
    a = schedule(view(*nodes), tasks, default_profile(), random.Random(3))
    b = schedule(view(*nodes), tasks, topology_profile(), random.Random(3))
    assert _where(a) == _where(b)


def test_registry_knows_the_topology_scorers() -> None:
    names = builtin_registry().names("scorer")
    assert {"locality", "zone_spread", "affinity"} <= set(names)
