"""Filters: one module per question a node must answer yes to before it may take a task.

Cheap, class-level questions (node state, exclusions, labels) come first in the default profile;
the ones that read the cycle's tallies (task cap, capacity) come last.
"""

from __future__ import annotations

from polyfabric.scheduling.filters.capacity import CapacityFilter
from polyfabric.scheduling.filters.excluded import ExcludedFilter
from polyfabric.scheduling.filters.labels import LabelsFilter
from polyfabric.scheduling.filters.max_tasks import MaxTasksFilter
from polyfabric.scheduling.filters.node_state import NodeStateFilter

__all__ = ["CapacityFilter", "ExcludedFilter", "LabelsFilter", "MaxTasksFilter", "NodeStateFilter"]
