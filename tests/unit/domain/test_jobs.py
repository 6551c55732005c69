"""Workflow specs as values: durations, retry policies, trigger rules, spec invariants."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.jobs import (
    DEFAULT_TASK_RESOURCES,
    RetryPolicy,
    TaskSpec,
    TriggerRule,
    WorkflowSpec,
    WorkflowState,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("250ms", 0.25),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("1.5s", 1.5),
        (" 10s ", 10.0),
        ("45", 45.0),
        ("0.5", 0.5),
        (12, 12.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "abc", "10x", "s", "5m3", "-5s", -1, True, None, [1], math.inf, "nan"])
def test_parse_duration_refuses(bad: object) -> None:
    with pytest.raises(ValidationError, match="duration"):
        parse_duration(bad)  # type: ignore[arg-type]


@given(st.floats(min_value=0.001, max_value=10**6))
def test_format_then_parse_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-3, abs=1e-3)


def test_format_duration_examples() -> None:
    assert format_duration(0.25) == "250ms"
    assert format_duration(90) == "1m30s"
    assert format_duration(3600) == "1h"


def test_retry_delay_grows_geometrically_and_is_capped() -> None:
    policy = RetryPolicy(limit=5, backoff_s=1.0, factor=2.0, max_backoff_s=5.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.delay(0) == 0.0
    assert policy.delay(10_000) == 5.0  # no overflow


def test_retry_limit_counts_retries_not_attempts() -> None:
    policy = RetryPolicy(limit=2)
    assert policy.allows(1) and policy.allows(2)
    assert not policy.allows(3)
    assert not RetryPolicy().allows(1)


@pytest.mark.parametrize(
    "kwargs", [{"limit": -1}, {"backoff_s": -1.0}, {"factor": 0.5}, {"max_backoff_s": -2.0}]
)
def test_retry_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_trigger_rules_are_lowercase_strings() -> None:
    assert [t.value for t in TriggerRule] == ["all_success", "all_done", "one_success"]
    assert TriggerRule("all_done") is TriggerRule.ALL_DONE
    assert {s.value for s in WorkflowState} >= {"running", "succeeded", "failed", "cancelled"}


def test_task_needs_exactly_one_of_command_and_function() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        TaskSpec(name="a")
    with pytest.raises(ValidationError, match="exactly one"):
        TaskSpec(name="a", command=("true",), function="m:f")
    task = TaskSpec(name="a", command=("true",))
    assert task.resources == DEFAULT_TASK_RESOURCES
    assert task.resources.slots == 1 and task.resources.cpu_millis == 0
    assert task.trigger is TriggerRule.ALL_SUCCESS
    assert not task.is_foreach
    assert TaskSpec(name="b", function="m:f", foreach=()).is_foreach


def test_workflow_order_defaults_to_file_order_and_must_be_topological() -> None:
    a = TaskSpec(name="a", command=("true",))
    b = TaskSpec(name="b", command=("true",), depends_on=("a",))
    assert WorkflowSpec(name="w", tasks={"a": a, "b": b}).order == ("a", "b")
    assert WorkflowSpec(name="w", tasks={"b": b, "a": a}, order=("a", "b")).order == ("a", "b")
    with pytest.raises(ValidationError, match="comes before its dependency"):
        WorkflowSpec(name="w", tasks={"b": b, "a": a})
    with pytest.raises(ValidationError, match="every task exactly once"):
        WorkflowSpec(name="w", tasks={"a": a, "b": b}, order=("a",))
