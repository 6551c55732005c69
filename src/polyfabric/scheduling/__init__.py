"""The scheduler core: where pending tasks run, planned on a snapshot, as pure functions.

    ClusterView + TaskRequests ──▶ schedule(view, tasks, profile, rng) ──▶ Plan
                                        │ gates → filters → scorers → select (per task class)
                                        └ preemption for tasks nothing could take
    Plan ──▶ applier: verify_node(placements, fresh node) per node ──▶ accepted / rejected

PURE: imports only `polyfabric.domain` and the standard library; never reads the clock, the
environment or a random source. The caller passes `rng` (and `now`, where a plugin needs it).
Plugins (gates, filters, scorers, victim filters) plug in through a `Registry` and a `Profile`;
see README.md in this package for the pipeline and its plugin points.
"""

from __future__ import annotations

from polyfabric.scheduling.framework import (
    DEFAULT_TASK_FIELDS,
    PASS,
    CycleState,
    Filter,
    Gate,
    Scope,
    Scorer,
    Status,
    Verdict,
    VictimFilter,
    class_key_function,
)
from polyfabric.scheduling.limits import ConcurrencyGate
from polyfabric.scheduling.pipeline import default_candidates, schedule
from polyfabric.scheduling.plan import (
    Placement,
    Plan,
    Preemption,
    Rejection,
    Unplaced,
    describe_reasons,
    verify_node,
)
from polyfabric.scheduling.preemption import VictimSet, choose_victims, find_preemption
from polyfabric.scheduling.registry import (
    DEFAULT_FILTERS,
    DEFAULT_GATES,
    DEFAULT_SCORERS,
    NodeOrder,
    Profile,
    Registry,
    WeightedScorer,
    builtin_registry,
    default_profile,
)
from polyfabric.scheduling.view import (
    ClusterView,
    ConcurrencyLimits,
    NodeView,
    RunningTask,
    TaskRequest,
    Usage,
)

__all__ = [
    "DEFAULT_FILTERS",
    "DEFAULT_GATES",
    "DEFAULT_SCORERS",
    "DEFAULT_TASK_FIELDS",
    "PASS",
    "ClusterView",
    "ConcurrencyGate",
    "ConcurrencyLimits",
    "CycleState",
    "Filter",
    "Gate",
    "NodeOrder",
    "NodeView",
    "Placement",
    "Plan",
    "Preemption",
    "Profile",
    "Registry",
    "Rejection",
    "RunningTask",
    "Scope",
    "Scorer",
    "Status",
    "TaskRequest",
    "Unplaced",
    "Usage",
    "Verdict",
    "VictimFilter",
    "VictimSet",
    "WeightedScorer",
    "builtin_registry",
    "choose_victims",
    "class_key_function",
    "default_candidates",
    "default_profile",
    "describe_reasons",
    "find_preemption",
    "schedule",
    "verify_node",
]
