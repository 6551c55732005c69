"""Automatic quarantine, pure: the failure ledger, the verdict, probation; and drain steps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyfabric.domain.drain import DrainStep, MoveMode, drain_step, move_reason
from polyfabric.domain.node_states import TRANSITIONS, NodeState, Trigger
from polyfabric.domain.quarantine import (
    ELIGIBLE_STATES,
    FailureEvidence,
    FailureLedger,
    NodeObservation,
    QuarantinePolicy,
    healthy,
    probation_left,
    quarantine_verdict,
)

POLICY = QuarantinePolicy()
FLAP = {"flap_window": 600.0, "flap_threshold": 3}


def verdict(**kwargs):
    kwargs.setdefault("state", NodeState.ACTIVE)
    return quarantine_verdict(NodeObservation("n-1", **kwargs), POLICY, **FLAP)


# -- the ledger ---------------------------------------------------------------------------------


def test_a_failure_counts_against_a_node_only_once_its_task_succeeds_on_another_node() -> None:
    ledger = FailureLedger(600.0)
    ledger.record("bad", "t1", "failed", 10.0)
    assert ledger.evidence("bad", 11.0) == FailureEvidence(confirmed=0, failed=1, ended=1)
    ledger.record("good", "t1", "succeeded", 12.0)
    assert ledger.evidence("bad", 13.0) == FailureEvidence(confirmed=1, failed=1, ended=1, tasks=("t1",))
    assert ledger.evidence("good", 13.0) == FailureEvidence(confirmed=0, failed=0, ended=1)


def test_a_task_that_fails_everywhere_or_succeeds_on_the_same_node_blames_nobody() -> None:
    ledger = FailureLedger(600.0)
    for node in ("a", "b", "c"):  # a bug in the task: it fails on every node, never succeeds
        ledger.record(node, "broken", "failed", 1.0)
    ledger.record("a", "flaky", "failed", 2.0)  # fails then succeeds on the same node: the task's own doing
    ledger.record("a", "flaky", "succeeded", 3.0)
    for node in ("a", "b", "c"):
        assert ledger.evidence(node, 4.0).confirmed == 0
    assert ledger.nodes() == []


def test_other_outcomes_say_nothing_about_the_node() -> None:
    ledger = FailureLedger(600.0)
    for outcome in ("cancelled", "preempted", "rejected", "lost", "evicted"):
        ledger.record("a", "t", outcome, 1.0)
    assert ledger.evidence("a", 2.0) == FailureEvidence()


def test_evidence_older_than_the_window_is_forgotten() -> None:
    ledger = FailureLedger(600.0)
    ledger.record("bad", "t1", "failed", 0.0)
    ledger.record("good", "t1", "succeeded", 1.0)
    assert ledger.evidence("bad", 500.0).confirmed == 1
    ledger.prune(700.0)
    assert ledger.evidence("bad", 700.0) == FailureEvidence()
    # A failure awaiting confirmation past the window is dropped: a late success confirms nothing.
    ledger.record("bad", "t2", "failed", 800.0)
    ledger.prune(1500.0)
    ledger.record("good", "t2", "succeeded", 1500.0)
    assert ledger.evidence("bad", 1500.0).confirmed == 0


def test_forgiving_drops_the_evidence_and_ignores_later_confirmations_of_older_failures() -> None:
    ledger = FailureLedger(600.0)
    for i in range(3):
        ledger.record("bad", f"t{i}", "failed", 10.0 + i)
    ledger.record("good", "t0", "succeeded", 20.0)
    ledger.forgive("bad", 30.0)
    assert ledger.evidence("bad", 31.0) == FailureEvidence()
    ledger.record("good", "t1", "succeeded", 40.0)  # a failure from before the release
    assert ledger.evidence("bad", 41.0).confirmed == 0
    ledger.record("bad", "t9", "failed", 50.0)  # and a new one after it counts again
    ledger.record("good", "t9", "succeeded", 51.0)
    assert ledger.evidence("bad", 52.0) == FailureEvidence(confirmed=1, failed=1, ended=1, tasks=("t9",))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["t1", "t2", "t3", "t4"]),
                          st.sampled_from(["succeeded", "failed"]), st.floats(0, 2000)), max_size=60))
def test_ledger_counts_are_bounded_by_what_happened_in_the_window(events) -> None:
    ledger = FailureLedger(600.0)
    now = 0.0
    for node, task, outcome, step in sorted(events, key=lambda e: e[3]):
        now = step
        ledger.record(node, task, outcome, now)
        ledger.prune(now)
    for node in ("a", "b", "c"):
        evidence = ledger.evidence(node, now)
        assert evidence.confirmed >= 0
        assert evidence.failed <= evidence.ended
        in_window = [e for e in events if e[0] == node and e[3] >= now - 600.0 - 10.0]  # a bucket of slack
        assert evidence.ended <= len(in_window)
        assert evidence.confirmed <= sum(1 for e in in_window if e[2] == "failed")


# -- the verdict --------------------------------------------------------------------------------


def test_nothing_wrong_no_verdict() -> None:
    assert verdict() is None
    assert verdict(flaps=2, degraded_for=POLICY.degraded_after,
                   failures=FailureEvidence(confirmed=2, failed=2, ended=2)) is None


def test_flapping_quarantines_with_the_health_trigger() -> None:
    v = verdict(state=NodeState.DOWN, flaps=3)
    assert v is not None and (v.rule, v.trigger) == ("flapping", Trigger.HEALTH)
    assert v.reason == "flapping: went Down 3 times within 600s (threshold 3)"


def test_health_checks_failing_past_the_bound_quarantine() -> None:
    assert verdict(degraded_for=POLICY.degraded_after) is None  # at the bound: not yet
    v = verdict(degraded_for=POLICY.degraded_after + 1)
    assert v is not None and (v.rule, v.trigger) == ("degraded", Trigger.HEALTH)
    assert v.reason == "health checks failing for 301s (bound 300s)"


def test_confirmed_failures_quarantine_with_the_policy_trigger_only_above_the_ratio() -> None:
    many = FailureEvidence(confirmed=3, failed=3, ended=4, tasks=("t1", "t2", "t3"))
    v = verdict(failures=many)
    assert v is not None and (v.rule, v.trigger) == ("failures", Trigger.POLICY)
    assert "3 attempts failed here within 600s and then succeeded on other nodes" in v.reason
    assert "(3 of 4 attempts here failed; threshold 3 and 50%): t1, t2, t3" in v.reason
    # A busy node that fails now and then stays in service.
    assert verdict(failures=FailureEvidence(confirmed=5, failed=5, ended=100)) is None


@pytest.mark.parametrize("state", sorted(set(NodeState) - ELIGIBLE_STATES))
def test_only_eligible_states_are_quarantined(state: NodeState) -> None:
    assert verdict(state=state, flaps=10) is None


def test_every_eligible_state_can_reach_quarantine_with_the_triggers_used() -> None:
    for state in ELIGIBLE_STATES:
        allowed = TRANSITIONS[(state, NodeState.QUARANTINED)]
        assert {Trigger.HEALTH, Trigger.POLICY} <= allowed
    assert Trigger.SYSTEM in TRANSITIONS[(NodeState.QUARANTINED, NodeState.ACTIVE)]
    assert Trigger.SYSTEM in TRANSITIONS[(NodeState.DRAINING, NodeState.RETIRED)]


def test_zero_turns_a_rule_off() -> None:
    off = QuarantinePolicy(min_failures=0, degraded_after=0, flapping=False)
    obs = NodeObservation("n-1", NodeState.ACTIVE, flaps=9, degraded_for=1e6,
                          failures=FailureEvidence(confirmed=9, failed=9, ended=9))
    assert quarantine_verdict(obs, off, **FLAP) is None


# -- probation ----------------------------------------------------------------------------------


def test_probation_runs_from_the_later_of_quarantine_and_health() -> None:
    left = probation_left(quarantined_at=100.0, healthy_since=50.0, automatic=True, policy=POLICY, now=400.0)
    assert left == pytest.approx(600.0)
    left = probation_left(quarantined_at=100.0, healthy_since=300.0, automatic=True, policy=POLICY, now=1300.0)
    assert left == 0.0
    assert probation_left(quarantined_at=0.0, healthy_since=None, automatic=True, policy=POLICY, now=1e6) is None
    # An operator's quarantine, or probation turned off: only an operator ends it.
    assert probation_left(quarantined_at=0.0, healthy_since=0.0, automatic=False, policy=POLICY, now=1e6) is None
    assert probation_left(quarantined_at=0.0, healthy_since=0.0, automatic=True,
                          policy=QuarantinePolicy(probation=0), now=1e6) is None


def test_healthy_means_reachable_not_degraded_not_flapping() -> None:
    def conditions(**status: bool) -> list[dict]:
        base = {"Ready": False, "Unreachable": False, "Degraded": False, "Flapping": False}
        base.update(status)
        return [{"type": k, "status": v, "reason": ""} for k, v in base.items()]

    assert healthy(conditions())
    assert not healthy(conditions(Unreachable=True))
    assert not healthy(conditions(Degraded=True))
    assert not healthy(conditions(Flapping=True))
    assert not healthy([])  # not looked at yet


# -- drains -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempts", "deadline", "now", "step"), [
    (0, None, 0.0, DrainStep.RETIRE),
    (0, 10.0, 0.0, DrainStep.RETIRE),
    (2, None, 1e9, DrainStep.WAIT),
    (2, 10.0, 9.9, DrainStep.WAIT),
    (2, 10.0, 10.0, DrainStep.MOVE),
])
def test_drain_steps(attempts: int, deadline: float | None, now: float, step: DrainStep) -> None:
    assert drain_step(attempts=attempts, deadline=deadline, now=now) is step


def test_move_reason_names_the_node_and_the_checkpoint_hook() -> None:
    assert move_reason("n-1", 100.0) == (
        "drain deadline of node n-1 passed (100): stopped and queued again for another node")
    assert "stop after checkpoint" in move_reason("n-1", 100.0, MoveMode.STOP_AFTER_CHECKPOINT)
