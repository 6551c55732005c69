"""Plugins by name, and the profiles built from them."""

from __future__ import annotations

import pytest

from polyfabric.domain.errors import Conflict, NotFound, ValidationError
from polyfabric.scheduling import (
    DEFAULT_FILTERS,
    PASS,
    CycleState,
    NodeOrder,
    NodeView,
    Profile,
    Scope,
    TaskRequest,
    Verdict,
    WeightedScorer,
    builtin_registry,
    default_profile,
)
from polyfabric.scheduling.filters import CapacityFilter
from polyfabric.scheduling.scorers import BinPackScorer, SpreadScorer


class _Zone:
    scope = Scope.CLASS
    task_fields = ()

    def __init__(self, zone: str = "a") -> None:
        self.name = "zone"
        self.zone = zone

    def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
        return PASS


def test_default_profile() -> None:
    profile = default_profile()
    assert [f.name for f in profile.filters] == list(DEFAULT_FILTERS)
    assert DEFAULT_FILTERS == ("node_state", "excluded", "labels", "max_tasks", "capacity")
    assert [(w.scorer.name, w.weight) for w in profile.scorers] == [("binpack", 1.0)]
    assert [g.name for g in profile.gates] == ["concurrency"]
    assert profile.preemption is True
    assert profile.node_order is NodeOrder.BEST_FIT


def test_names_and_unknown_plugins() -> None:
    registry = builtin_registry()
    assert {"capacity", "excluded", "labels", "max_tasks", "node_state", "policy", "policy_share"} == set(
        registry.names("filter"))
    assert {"affinity", "binpack", "locality", "spread", "zone_spread"} <= set(registry.names("scorer"))
    with pytest.raises(NotFound, match="no filter named 'nope'; known: capacity"):
        registry.profile(filters=["nope"])
    with pytest.raises(ValidationError, match="unknown plugin kind"):
        registry.names("widget")


def test_custom_plugins_with_options_and_weights() -> None:
    registry = builtin_registry()
    registry.add_filter("zone", _Zone)
    profile = registry.profile("mine", filters=["node_state", ("zone", {"zone": "b"}), "capacity"],
                               scorers=[("binpack", 1), ("spread", 3)], node_order="worst_fit")
    assert [f.name for f in profile.filters] == ["node_state", "zone", "capacity"]
    assert profile.filters[1].zone == "b"  # type: ignore[attr-defined]
    assert [(w.scorer.name, w.weight) for w in profile.scorers] == [("binpack", 1.0), ("spread", 3.0)]
    assert profile.node_order is NodeOrder.WORST_FIT
    with pytest.raises(Conflict):
        registry.add_filter("zone", _Zone)
    registry.add("filter", "zone", _Zone, replace=True)


def test_factory_must_build_the_named_plugin() -> None:
    registry = builtin_registry()
    registry.add_filter("alias", CapacityFilter)
    with pytest.raises(ValidationError, match="named 'capacity'"):
        registry.profile(filters=["alias"])


def test_profile_validation() -> None:
    with pytest.raises(ValidationError, match="listed twice"):
        Profile("p", filters=(CapacityFilter(), CapacityFilter()))
    with pytest.raises(ValidationError, match="positive weight"):
        Profile("p", filters=(), scorers=(WeightedScorer(SpreadScorer(), 0),))
    node_scoped = BinPackScorer()
    node_scoped.scope = Scope.NODE  # type: ignore[misc]
    with pytest.raises(ValidationError, match="cannot be NODE-scoped"):
        Profile("p", filters=(), scorers=(WeightedScorer(node_scoped, 1),))
