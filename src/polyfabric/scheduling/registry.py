"""Plugin names → factories, and the `Profile` a pass runs with.

A `Registry` is a plain object, not module state: the coordinator builds one (`builtin_registry()`),
adds the plugins later features bring (policies, negotiation, topology), and builds profiles from
configuration by name. Profiles are immutable and hold plugin instances in evaluation order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from polyfabric.domain.errors import Conflict, NotFound, ValidationError
from polyfabric.scheduling.filters import (
    CapacityFilter,
    ExcludedFilter,
    LabelsFilter,
    MaxTasksFilter,
    NodeStateFilter,
)
from polyfabric.scheduling.filters.policy import OwnerRankScorer, PolicyFilter, PolicyRankScorer, PolicyShareFilter
from polyfabric.scheduling.framework import Filter, Gate, Scope, Scorer, VictimFilter
from polyfabric.scheduling.limits import ConcurrencyGate
from polyfabric.scheduling.scorers import (
    AffinityScorer,
    BinPackScorer,
    LocalityScorer,
    SpreadScorer,
    ZoneSpreadScorer,
)

__all__ = [
    "DEFAULT_FILTERS",
    "DEFAULT_GATES",
    "DEFAULT_SCORERS",
    "TOPOLOGY_SCORERS",
    "NodeOrder",
    "Profile",
    "Registry",
    "WeightedScorer",
    "builtin_registry",
    "default_profile",
    "with_owner_rank",
    "with_policies",
    "topology_profile",
    "with_topology",
]

DEFAULT_FILTERS = ("node_state", "excluded", "labels", "max_tasks", "capacity")
"""Cheap class-level questions first, then the ones that read the cycle's tallies."""
DEFAULT_SCORERS: Mapping[str, float] = {"binpack": 1.0}
TOPOLOGY_SCORERS: Mapping[str, float] = {"binpack": 1.0, "locality": 4.0, "zone_spread": 4.0, "affinity": 2.0}
"""binpack plus the topology TASK scorers, weighted so a task's own placement wishes outweigh
packing; tasks that ask for none of them get equal topology scores everywhere."""
DEFAULT_GATES = ("concurrency",)

Spec = str | tuple[str, Mapping[str, Any]]
"""A plugin named alone, or with keyword options for its factory."""

_KINDS = ("filter", "scorer", "gate", "victim_filter")


class NodeOrder(StrEnum):
    """The order in which a task class looks at nodes it has not seen yet. Scores still decide
    among the candidates found; the order decides which candidates are found first.

    BEST_FIT   least free first among nodes that can hold the request (pairs with binpack);
    WORST_FIT  most free first (pairs with spread);
    RANDOM     the pass's random order (Nomad's shuffled iteration).
    """

    BEST_FIT = "best_fit"
    WORST_FIT = "worst_fit"
    RANDOM = "random"


@dataclass(frozen=True, slots=True)
class WeightedScorer:
    scorer: Scorer
    weight: float


@dataclass(frozen=True, slots=True)
class Profile:
    """What one pass runs: gates, then filters in order, then weighted scorers; and whether
    preemption may evict lower-priority work (and which victims `victim_filters` allow)."""

    name: str
    filters: tuple[Filter, ...]
    scorers: tuple[WeightedScorer, ...] = ()
    gates: tuple[Gate, ...] = ()
    victim_filters: tuple[VictimFilter, ...] = ()
    preemption: bool = True
    node_order: NodeOrder = NodeOrder.BEST_FIT

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        object.__setattr__(self, "scorers", tuple(self.scorers))
        object.__setattr__(self, "gates", tuple(self.gates))
        object.__setattr__(self, "victim_filters", tuple(self.victim_filters))
        for kind, plugins in (("filter", self.filters), ("scorer", [w.scorer for w in self.scorers]),
                              ("gate", self.gates), ("victim filter", self.victim_filters)):
            names = [p.name for p in plugins]
            if len(set(names)) != len(names):
                raise ValidationError(f"profile {self.name}: a {kind} is listed twice ({', '.join(names)})")
        scoped: list[Filter | Scorer] = [*self.filters, *(w.scorer for w in self.scorers)]
        for plugin in scoped:
            if plugin.scope not in tuple(Scope):
                raise ValidationError(f"profile {self.name}: plugin {plugin.name} has no valid scope")
        for weighted in self.scorers:
            if weighted.scorer.scope is Scope.NODE:
                raise ValidationError(f"profile {self.name}: scorer {weighted.scorer.name} cannot be "
                                      "NODE-scoped (a score is for a task); use CLASS")
        for weighted in self.scorers:
            if not weighted.weight > 0:
                raise ValidationError(
                    f"profile {self.name}: scorer {weighted.scorer.name} needs a positive weight, "
                    f"got {weighted.weight}"
                )


class Registry:
    """Factories by kind and name. A factory takes keyword options and returns a plugin."""

    __slots__ = ("_factories",)

    def __init__(self) -> None:
        self._factories: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in _KINDS}

    def add(self, kind: str, name: str, factory: Callable[..., Any], *, replace: bool = False) -> None:
        table = self._table(kind)
        if name in table and not replace:
            raise Conflict(f"a {kind} named {name!r} is already registered")
        table[name] = factory

    def add_filter(self, name: str, factory: Callable[..., Filter]) -> None:
        self.add("filter", name, factory)

    def add_scorer(self, name: str, factory: Callable[..., Scorer]) -> None:
        self.add("scorer", name, factory)

    def add_gate(self, name: str, factory: Callable[..., Gate]) -> None:
        self.add("gate", name, factory)

    def add_victim_filter(self, name: str, factory: Callable[..., VictimFilter]) -> None:
        self.add("victim_filter", name, factory)

    def names(self, kind: str) -> list[str]:
        return sorted(self._table(kind))

    def make(self, kind: str, spec: Spec) -> Any:
        name, options = (spec, {}) if isinstance(spec, str) else spec
        table = self._table(kind)
        try:
            factory = table[name]
        except KeyError:
            raise NotFound(f"no {kind} named {name!r}; known: {', '.join(sorted(table)) or 'none'}") from None
        plugin = factory(**options)
        if getattr(plugin, "name", None) != name:
            raise ValidationError(f"the {kind} factory {name!r} built a plugin named "
                                  f"{getattr(plugin, 'name', None)!r}")
        return plugin

    def profile(
        self,
        name: str = "default",
        *,
        filters: Sequence[Spec] = DEFAULT_FILTERS,
        scorers: Mapping[str, float] | Sequence[tuple[Spec, float]] = DEFAULT_SCORERS,
        gates: Sequence[Spec] = DEFAULT_GATES,
        victim_filters: Sequence[Spec] = (),
        preemption: bool = True,
        node_order: NodeOrder | str = NodeOrder.BEST_FIT,
    ) -> Profile:
        """Build a profile from plugin names (and options), in the order given."""
        pairs = list(scorers.items()) if isinstance(scorers, Mapping) else list(scorers)
        return Profile(
            name=name,
            filters=tuple(self.make("filter", spec) for spec in filters),
            scorers=tuple(WeightedScorer(self.make("scorer", spec), float(w)) for spec, w in pairs),
            gates=tuple(self.make("gate", spec) for spec in gates),
            victim_filters=tuple(self.make("victim_filter", spec) for spec in victim_filters),
            preemption=preemption,
            node_order=NodeOrder(node_order),
        )

    def _table(self, kind: str) -> dict[str, Callable[..., Any]]:
        try:
            return self._factories[kind]
        except KeyError:
            raise ValidationError(f"unknown plugin kind {kind!r}; known: {', '.join(_KINDS)}") from None


def builtin_registry() -> Registry:
    """A fresh registry holding the built-in plugins."""
    registry = Registry()
    registry.add_filter("node_state", NodeStateFilter)
    registry.add_filter("excluded", ExcludedFilter)
    registry.add_filter("labels", LabelsFilter)
    registry.add_filter("max_tasks", MaxTasksFilter)
    registry.add_filter("capacity", CapacityFilter)
    registry.add_scorer("binpack", BinPackScorer)
    registry.add_scorer("spread", SpreadScorer)
    registry.add_scorer("locality", LocalityScorer)
    registry.add_scorer("zone_spread", ZoneSpreadScorer)
    registry.add_scorer("affinity", AffinityScorer)
    registry.add_gate("concurrency", ConcurrencyGate)
    registry.add_filter("policy", PolicyFilter)
    registry.add_filter("policy_share", PolicyShareFilter)
    registry.add_scorer("policy_rank", PolicyRankScorer)
    registry.add_scorer("owner_rank", OwnerRankScorer)
    return registry


def with_policies(profile: Profile, policies: Sequence[Any] = (), *, rank_weight: float = 1.0) -> Profile:
    """`profile` plus the policy plugins (filters/policy.py): `policy` right after the CLASS
    filters it follows in cost (after `labels`, else first), `policy_share` last, `policy_rank`
    as a scorer. Any earlier policy plugins are replaced: call it again when policies change."""
    own = {"policy", "policy_share"}
    filters = [f for f in profile.filters if f.name not in own]
    names = [f.name for f in filters]
    at = names.index("labels") + 1 if "labels" in names else 0
    filters.insert(at, PolicyFilter(policies))
    filters.append(PolicyShareFilter(policies))
    scorers = [w for w in profile.scorers if w.scorer.name != "policy_rank"]
    scorers.append(WeightedScorer(PolicyRankScorer(), rank_weight))
    return Profile(profile.name, tuple(filters), tuple(scorers), profile.gates, profile.victim_filters,
                   profile.preemption, profile.node_order)


def with_owner_rank(profile: Profile, scorer: OwnerRankScorer | None = None, weight: float = 1.0) -> Profile:
    """`profile` plus the `owner_rank` TASK scorer (the nodes' owners' advertised preferences over
    jobs), replacing one already there. The runtime uses it only for passes where some node's
    owner advertises a rank, and hands the same scorer every time (its answers are kept)."""
    scorers = [w for w in profile.scorers if w.scorer.name != "owner_rank"]
    scorers.append(WeightedScorer(scorer if scorer is not None else OwnerRankScorer(), weight))
    return Profile(profile.name, profile.filters, tuple(scorers), profile.gates, profile.victim_filters,
                   profile.preemption, profile.node_order)


def with_topology(profile: Profile, weights: Mapping[str, float] | None = None) -> Profile:
    """`profile` plus the topology TASK scorers (locality, zone_spread, affinity), replacing any
    already there. The runtime uses it only for passes where some task asks for topology."""
    weights = dict(TOPOLOGY_SCORERS if weights is None else weights)
    weights.pop("binpack", None)
    factories = {"locality": LocalityScorer, "zone_spread": ZoneSpreadScorer, "affinity": AffinityScorer}
    scorers = [w for w in profile.scorers if w.scorer.name not in factories]
    scorers += [WeightedScorer(factories[name](), weight) for name, weight in weights.items()]
    return Profile(profile.name, profile.filters, tuple(scorers), profile.gates, profile.victim_filters,
                   profile.preemption, profile.node_order)


def topology_profile() -> Profile:
    """The default profile plus the topology scorers (locality, zone_spread, affinity)."""
    return builtin_registry().profile("topology", scorers=TOPOLOGY_SCORERS)


def default_profile() -> Profile:
    """node_state → excluded → labels → max_tasks → capacity; binpack, best fit first;
    concurrency gate; preemption on."""
    return builtin_registry().profile("default")
