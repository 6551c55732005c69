"""Fair share (scheduling/fairshare.py): scores from ledger balances, and the planning order."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyfabric.scheduling import default_profile, schedule
from polyfabric.scheduling.fairshare import FairShare, order, share_score

from .builders import node, res, task, view

ON = FairShare(enabled=True, prior_s=60.0, cap=4.0)


def test_off_by_default_changes_nothing():
    tasks = [task("a", domain="taker", seq=1), task("b", domain="giver", seq=2)]
    assert order(tasks, {"giver": (1e6, 0.0), "taker": (0.0, 1e6)}, FairShare()) == tasks
    assert share_score(1e6, 0.0, FairShare()) == 0.0


def test_scores_follow_the_balance_and_are_bounded():
    assert share_score(0.0, 0.0, ON) == 0.0  # a new domain is neutral
    assert share_score(300.0 - 60.0, 0.0, ON) > 0 > share_score(0.0, 300.0 - 60.0, ON)
    assert abs(share_score(4 * 60.0 - 60.0, 0.0, ON) - 2.0) < 1e-9  # 4x -> two doublings
    assert share_score(1e12, 0.0, ON) == 4.0 and share_score(0.0, 1e12, ON) == -4.0


def test_equal_priorities_are_ordered_by_balance_then_submission():
    tasks = [task("t1", domain="taker", seq=1), task("g1", domain="giver", seq=2),
             task("n1", domain="new", seq=3), task("g2", domain="giver", seq=4)]
    ranked = order(tasks, {"giver": (5000.0, 10.0), "taker": (0.0, 5000.0)}, ON)
    assert [t.task_id for t in ranked] == ["g1", "g2", "n1", "t1"]
    assert [t.submitted_seq for t in ranked] == [0, 1, 2, 3]
    assert [t.priority for t in ranked] == [0, 0, 0, 0]  # priorities are never changed


def test_an_explicit_priority_always_wins():
    tasks = [task("low", domain="giver", priority=0, seq=1), task("high", domain="taker", priority=5, seq=2)]
    ranked = order(tasks, {"giver": (1e9, 0.0), "taker": (0.0, 1e9)}, ON)
    assert [t.task_id for t in ranked] == ["high", "low"]


def test_the_scheduler_places_the_contributor_first_when_one_slot_is_free():
    v = view(node("n1", slots=1))
    tasks = [task("taker-task", domain="taker", seq=1, resources=res(1, 1)),
             task("giver-task", domain="giver", seq=2, resources=res(1, 1))]
    balances = {"giver": (3600.0, 0.0), "taker": (0.0, 3600.0)}
    plain = schedule(v, tasks, default_profile(), random.Random(0))
    fair = schedule(v, order(tasks, balances, ON), default_profile(), random.Random(0))
    assert [p.task_id for p in plain.placements] == ["taker-task"]
    assert [p.task_id for p in fair.placements] == ["giver-task"]


_balance = st.tuples(st.integers(0, 10**7).map(float), st.integers(0, 10**7).map(float))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(-3, 3)), max_size=30),
       st.dictionaries(st.sampled_from("abcd"), _balance))
def test_order_is_a_permutation_sorted_by_priority(specs, balances):
    tasks = [task(f"t{i}", domain=d, priority=p, seq=i) for i, (d, p) in enumerate(specs)]
    ranked = order(tasks, balances, ON)
    assert sorted(t.task_id for t in ranked) == sorted(t.task_id for t in tasks)
    assert [t.priority for t in ranked] == sorted((t.priority for t in tasks), reverse=True)
    assert len({t.submitted_seq for t in ranked}) == len(ranked)
    # Within one priority and one domain, submission order is kept.
    for domain in "abcd":
        for prio in range(-3, 4):
            ids = [t.task_id for t in ranked if t.domain == domain and t.priority == prio]
            assert ids == sorted(ids, key=lambda i: int(i[1:]))
