"""Scorers alone: binpack prefers fuller nodes, spread emptier ones, both within 0..100."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from polyfabric.domain.resources import Resources
from polyfabric.scheduling import Scope
from polyfabric.scheduling.scorers import BinPackScorer, SpreadScorer
from polyfabric.scheduling.scorers.binpack import fullness

from .builders import GI, cycle, node, res, running, task


def _score(scorer: BinPackScorer | SpreadScorer, busy_cpu: float, busy_mem: float) -> float:
    n = node("n1", cpu=8, mem_gi=32, running=[running("r", "n1", resources=res(busy_cpu, busy_mem))]
             if busy_cpu or busy_mem else [])
    return scorer.score(task("t", resources=res(1, 2)), n, cycle(n))


def test_binpack_prefers_the_fuller_node() -> None:
    empty, half, nearly = (_score(BinPackScorer(), c, m) for c, m in ((0, 0), (4, 16), (6, 28)))
    assert empty < half < nearly


def test_binpack_bounds() -> None:
    assert fullness(Resources(), Resources(), Resources()) == 0.0
    cap = res(4, 8)
    assert fullness(res(0, 0), cap, cap) == 0.0
    assert abs(fullness(cap, cap, cap) - 100.0) < 1e-9


def test_binpack_rewards_balanced_nodes() -> None:
    """Ending half full in both dimensions beats full in one and empty in the other (same mean)."""
    cap = res(8, 32)
    balanced = fullness(res(4, 16), cap, cap)
    lopsided = fullness(res(8, 0), cap, cap)
    assert balanced > lopsided


def test_gpus_count_only_for_gpu_tasks() -> None:
    cap = res(8, 32, gpus=4)
    free_no_gpu = Resources(cap.cpu_millis, cap.memory_bytes, 0, 0, cap.slots)
    cpu_task = res(2, 8)
    assert fullness(cpu_task, cap, cap) == fullness(cpu_task, free_no_gpu, cap)
    assert fullness(res(2, 8, gpus=2), cap, cap) > fullness(cpu_task, cap, cap)


def test_spread_mirrors_binpack() -> None:
    for busy in ((0, 0), (4, 16), (6, 28)):
        assert abs(_score(SpreadScorer(), *busy) + _score(BinPackScorer(), *busy) - 100.0) < 1e-9
    assert _score(SpreadScorer(), 0, 0) > _score(SpreadScorer(), 6, 28)


def test_scorers_declare_scope_and_fields() -> None:
    for scorer in (BinPackScorer(), SpreadScorer()):
        assert scorer.scope is Scope.CYCLE
        assert scorer.task_fields == ("resources",)


@given(
    st.integers(0, 64_000), st.integers(0, 64), st.integers(0, 8),
    st.integers(-8_000, 64_000), st.integers(-8, 64), st.integers(0, 8),
    st.integers(1, 64_000), st.integers(1, 64), st.integers(0, 8),
)
def test_scores_stay_within_0_and_100(rc: int, rm: int, rg: int, fc: int, fm: int, fg: int,
                                      cc: int, cm: int, cg: int) -> None:
    request = Resources(rc, rm * GI, 0, rg, 1)
    free = Resources(fc, fm * GI, 0, fg, 1)
    cap = Resources(cc, cm * GI, 0, cg, 1)
    assert 0.0 <= fullness(request, free, cap) <= 100.0
