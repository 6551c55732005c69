"""The concurrency gate: every kind of limit, and the reason it gives."""

from __future__ import annotations

import pytest

from polyfabric.scheduling import PASS, ConcurrencyGate, ConcurrencyLimits, Status

from .builders import cycle, node, running, task


def _gate(limits: ConcurrencyLimits, *, runs: int = 2, t: object = None) -> object:
    n = node("n1", running=[running(f"r{i}", "n1", workflow="wf", semaphore="gpu-lab") for i in range(runs)])
    return ConcurrencyGate().admit(t or task("t", semaphore="gpu-lab"), cycle(n, limits=limits))


@pytest.mark.parametrize(
    ("limits", "reason", "summary"),
    [
        (ConcurrencyLimits(global_max=2), "global limit 2/2", "global limit"),
        (ConcurrencyLimits(per_domain={"acme": 2}), "domain acme cap 2/2", "domain cap"),
        (ConcurrencyLimits(per_workflow={"wf": 2}), "workflow wf cap 2/2", "workflow cap"),
        (ConcurrencyLimits(semaphores={"gpu-lab": 2}), "semaphore gpu-lab full 2/2", "semaphore full"),
    ],
)
def test_each_full_limit_blocks_with_its_count(limits: ConcurrencyLimits, reason: str, summary: str) -> None:
    verdict = _gate(limits)
    assert verdict.status is Status.NOT_NOW
    assert verdict.plugin == "concurrency"
    assert verdict.reason == reason
    assert verdict.summary == summary


def test_room_left_passes() -> None:
    limits = ConcurrencyLimits(global_max=3, per_domain={"acme": 3}, per_workflow={"wf": 3},
                               semaphores={"gpu-lab": 3})
    assert _gate(limits) is PASS


def test_other_keys_are_not_limited() -> None:
    limits = ConcurrencyLimits(per_domain={"globex": 0}, per_workflow={"other": 0}, semaphores={"x": 0})
    assert _gate(limits) is PASS


def test_unknown_semaphore_is_unbounded() -> None:
    assert _gate(ConcurrencyLimits(semaphores={"gpu-lab": 2}), t=task("t", semaphore="nope")) is PASS


def test_counts_placements_of_the_plan() -> None:
    n = node("n1")
    c = cycle(n, limits=ConcurrencyLimits(per_workflow={"wf": 1}))
    assert ConcurrencyGate().admit(task("a"), c) is PASS
    c.commit(task("a"), "n1")
    assert ConcurrencyGate().admit(task("b"), c).reason == "workflow wf cap 1/1"
