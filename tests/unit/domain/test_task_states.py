"""The task-instance lifecycle: one table, one door."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyfabric.domain.errors import InvalidTransition
from polyfabric.domain.task_states import (
    ACTIVE,
    IN_FLIGHT,
    TERMINAL,
    TRANSITIONS,
    TaskState,
    TaskTransition,
    transition,
)

S = TaskState


def test_values_are_lowercase_names() -> None:
    for state in TaskState:
        assert state.value == state.name.lower()


def test_state_sets() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.SKIPPED, S.CANCELLED} == TERMINAL
    assert {S.READY, S.LEASED, S.RUNNING, S.PREEMPTED} == IN_FLIGHT
    assert ACTIVE <= IN_FLIGHT
    assert not TERMINAL & IN_FLIGHT
    assert set(TRANSITIONS) == set(TaskState)


@pytest.mark.parametrize(
    ("frm", "to"),
    [
        (S.WAITING, S.READY),
        (S.WAITING, S.SKIPPED),
        (S.READY, S.LEASED),
        (S.LEASED, S.RUNNING),
        (S.RUNNING, S.SUCCEEDED),
        (S.RUNNING, S.FAILED),
        (S.RUNNING, S.READY),  # a failed attempt with retries left
        (S.RUNNING, S.PREEMPTED),
        (S.PREEMPTED, S.READY),  # preemption is not a failure
        (S.FAILED, S.READY),  # the operator's retry-failed
        (S.SKIPPED, S.WAITING),
    ],
)
def test_allowed_moves_return_the_event(frm: TaskState, to: TaskState) -> None:
    event = transition("work[3]", frm, to, "because", now=12.5)
    assert event == TaskTransition("work[3]", frm, to, "because", 12.5)


@pytest.mark.parametrize(
    ("frm", "to"),
    [(S.WAITING, S.RUNNING), (S.SUCCEEDED, S.READY), (S.PREEMPTED, S.FAILED), (S.READY, S.SUCCEEDED)],
)
def test_refused_moves_name_both_states(frm: TaskState, to: TaskState) -> None:
    with pytest.raises(InvalidTransition) as info:
        transition("split", frm, to, "test", now=0.0)
    message = str(info.value)
    assert "split" in message and f"from {frm} to {to}" in message


def test_succeeded_is_final() -> None:
    with pytest.raises(InvalidTransition, match="succeeded is final"):
        transition("split", S.SUCCEEDED, S.FAILED, "test", now=0.0)


def test_same_state_is_refused() -> None:
    with pytest.raises(InvalidTransition, match="already running"):
        transition("split", S.RUNNING, S.RUNNING, "test", now=0.0)


@given(st.sampled_from(TaskState), st.sampled_from(TaskState))
def test_door_agrees_with_the_table(frm: TaskState, to: TaskState) -> None:
    try:
        transition("t", frm, to, "random", now=1.0)
    except InvalidTransition:
        assert to not in TRANSITIONS[frm] or frm == to
    else:
        assert to in TRANSITIONS[frm]


def test_terminal_states_are_left_only_for_a_retry() -> None:
    for state in TERMINAL:
        assert TRANSITIONS[state] <= {S.WAITING, S.READY}
