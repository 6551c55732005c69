"""The pure parts of triggers and retention: cron parsing and due times, the catch-up split,
webhook signatures, and the retention fields of a workflow."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyfabric.domain.errors import ValidationError
from polyfabric.services.schedules import due_times, next_due, parse_cron, plan_fires
from polyfabric.services.triggers import _check, sign_webhook
from polyfabric.workflow.spec import parse_workflow, retention_of

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC, a whole hour


def test_cron_fields_time_zones_and_due_times():
    expr, utc = parse_cron("*/15  * * * *", "UTC")
    assert expr == "*/15 * * * *"
    assert next_due(expr, utc, T0) == T0 + 900
    assert list(due_times(expr, utc, T0, T0 + 3600)) == [T0 + 900 * i for i in range(5)]
    seconds, _ = parse_cron("* * * * * */10", "UTC")
    assert next_due(seconds, utc, T0) == T0 + 10
    expr, paris = parse_cron("0 10 * * *", "Europe/Paris")
    assert next_due(expr, paris, T0) == T0 + 3600  # 10:00 in Paris is 09:00 UTC in January
    expr, _ = parse_cron("0 9 * * *", "Europe/Paris")
    assert next_due(expr, paris, T0) == T0 + 86400  # strictly after: T0 is 09:00 in Paris
    for bad in ("* * *", "61 * * * *", "a b c d e"):
        with pytest.raises(ValidationError):
            parse_cron(bad, "UTC")
    with pytest.raises(ValidationError, match="time zone"):
        parse_cron("* * * * *", "Mars/Olympus")


@given(st.lists(st.integers(0, 10_000), unique=True, max_size=60), st.integers(0, 20), st.integers(0, 600))
def test_plan_fires_splits_every_due_time_exactly_once(offsets, catch_up, grace):
    now = T0 + 10_000
    dues = sorted(T0 + o for o in offsets)
    fire, missed = plan_fires(dues, now, float(grace), catch_up)
    assert sorted(fire + missed) == dues  # nothing lost, nothing twice
    late = [t for t in dues if t < now - grace]
    caught = [t for t in fire if t < now - grace]
    assert len(caught) == min(catch_up, len(late))
    assert caught == late[len(late) - len(caught):]  # the most recent of the missed ones
    assert all(t >= now - grace for t in fire if t not in caught)


def test_webhook_signature_checks():
    body = b'{"ref": "main"}'
    good = sign_webhook("s3cret", "1800000000", body)
    assert good.startswith("sha256=") and len(good) == 7 + 64
    assert _check("s3cret", good, "1800000000", body, T0 + 10) is None
    assert "bad signature" in _check("other", good, "1800000000", body, T0)
    assert "bad signature" in _check("s3cret", good, "1800000000", body + b" ", T0)
    assert "bad signature" in _check("s3cret", good, "1800000001", body, T0)  # the timestamp is signed
    assert "away from" in _check("s3cret", good, "1800000000", body, T0 + 301)
    assert "missing signature" in _check("s3cret", "", "1800000000", body, T0)
    assert "missing timestamp" in _check("s3cret", good, "", body, T0)
    assert "not unix seconds" in _check("s3cret", good, "yesterday", body, T0)


def test_retention_fields_of_a_workflow():
    doc = {"name": "w", "ttl": "12h", "keep": ["a"], "tasks": {"a": {"command": ["true"]},
                                                             "b": {"command": ["true"], "keep": True},
                                                             "c": {"command": ["true"]}}}
    spec = parse_workflow(doc)
    assert spec.ttl_s == 12 * 3600 and spec.keep == ("a",) and spec.tasks["b"].keep
    assert retention_of(doc) == (12 * 3600, frozenset({"a", "b"}))
    assert retention_of({**doc, "ttl": "never"})[0] == float("inf")
    assert retention_of({"name": "w", "tasks": {}}) == (None, frozenset())
    with pytest.raises(ValidationError) as exc:
        parse_workflow({**doc, "ttl": "soon", "keep": ["zz"], "tasks": {**doc["tasks"], "d": {"command": ["x"],
                                                                                          "keep": "yes"}}})
    text = str(exc.value)
    assert "ttl 'soon'" in text and "'zz'" in text and "keep must be true or false" in text
