"""Configuration documents: validation names the field, scopes parse and match, and the merge by
scope is a pure function with the properties docs/config.md promises (Hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyfabric.domain.configdoc import env_allowed, merge, parse_document, parse_scope
from polyfabric.domain.errors import ValidationError

labels = st.dictionaries(st.sampled_from(["tier", "zone", "gpu", "team"]), st.sampled_from(["a", "b", "c"]),
                         max_size=3)
health = st.fixed_dictionaries({}, optional={"interval_s": st.sampled_from([1.0, 5.0]),
                                             "timeout_s": st.sampled_from([2.0, 9.0])})
documents = st.fixed_dictionaries({}, optional={
    "labels": labels,
    "max_concurrent_tasks": st.integers(0, 8),
    "allowed_env": st.lists(st.sampled_from(["A", "B_*", "C"]), max_size=2).map(tuple),
    "health": health,
}).map(lambda d: parse_document(d).to_dict())


@given(st.lists(documents, max_size=5))
def test_merge_is_valid_and_the_narrowest_setting_wins(docs):
    merged = merge(docs)
    parse_document(merged)  # still a valid document
    for field in ("max_concurrent_tasks", "allowed_env"):
        setters = [d[field] for d in docs if field in d]
        assert merged.get(field) == (setters[-1] if setters else None)
    for key in {k for d in docs for k in d.get("labels", {})}:
        assert merged["labels"][key] == [d["labels"][key] for d in docs if key in d.get("labels", {})][-1]
    for key in ("interval_s", "timeout_s"):
        setters = [d["health"][key] for d in docs if key in d.get("health", {})]
        assert (merged.get("health") or {}).get(key) == (setters[-1] if setters else None)


@given(st.lists(documents, max_size=4), st.lists(documents, max_size=4))
def test_merge_is_associative_and_empty_is_neutral(a, b):
    assert merge([merge(a), merge(b)]) == merge(a + b)
    assert merge([{}, *a, {}]) == merge(a)
    assert merge([merge(a)]) == merge(a)


@given(documents)
def test_merge_is_idempotent(doc):
    assert merge([doc, doc]) == merge([doc]) == doc


def test_a_bad_document_names_the_field():
    with pytest.raises(ValidationError) as bad:
        parse_document({"max_concurrent_tasks": "lots", "health": {"intervall_s": 3}})
    assert "max_concurrent_tasks" in bad.value.message
    assert "health.intervall_s" in bad.value.message and "unknown field" in bad.value.message
    with pytest.raises(ValidationError, match="labels"):
        parse_document({"labels": {"bad key!": "x"}})
    with pytest.raises(ValidationError, match="must be a mapping"):
        parse_document(["not", "a", "map"])


def test_durations_and_quantities_are_read_as_people_write_them():
    doc = parse_document({"health": {"interval_s": "5s"}, "reservations": {"cpu_millis": "500m",
                                                                           "memory_bytes": "1Gi"},
                          "execution": {"max_timeout_s": "1h"}})
    assert doc.health.interval_s == 5.0 and doc.execution.max_timeout_s == 3600.0
    assert doc.reservations.cpu_millis == 500 and doc.reservations.memory_bytes == 1 << 30


def test_scopes_parse_and_match():
    assert parse_scope("network").text == "network"
    selector = parse_scope("selector:zone=b, region=eu")
    assert selector.text == "selector:region=eu,zone=b"
    assert selector.applies("n-1", "d", {"region": "eu", "zone": "b", "x": "y"})
    assert not selector.applies("n-1", "d", {"region": "eu"})
    assert parse_scope("domain:lab-a").applies("n-1", "lab-a", {})
    assert not parse_scope("node:n-2").applies("n-1", "lab-a", {})
    for bad in ("", "cluster", "domain:", "selector:novalue", "node:bad id"):
        with pytest.raises(ValidationError):
            parse_scope(bad)


def test_env_allowed_globs():
    assert env_allowed("ANY", None)
    assert env_allowed("OMP_NUM_THREADS", ("OMP_*",))
    assert not env_allowed("LD_PRELOAD", ("OMP_*", "PYTHONHASHSEED"))
