"""The coordinator process's garbage-collector setting.

A scheduling pass or a burst of agent reports allocates hundreds of thousands of short-lived
containers (task requests, verdicts, rows) while the runtime holds a large, long-lived state (jobs,
queued tasks, attempts, policy caches). With CPython's default young-generation threshold (700
allocations) the collector runs hundreds of times a pass, each young collection promotes what the
pass still holds, and the full collections that follow walk the whole long-lived state. Raising
the threshold (`polyfabric server --gc-threshold`) lets most of a pass's objects die young, between
collections: the service-layer benchmark schedules 10,000 tasks with 10-13 % less CPU at 10,000
(`docs/performance.md`). Reference cycles are still collected, a little later.
"""

from __future__ import annotations

import gc

__all__ = ["DEFAULT_GC_THRESHOLD", "apply_gc_threshold"]

DEFAULT_GC_THRESHOLD = 10_000


def apply_gc_threshold(young: int) -> tuple[int, int, int]:
    """Set the young generation's threshold (0: leave CPython's); returns the thresholds now."""
    if young < 0:
        raise ValueError(f"the GC threshold must be 0 or more, got {young}")
    if young:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(young, middle, old)
    return gc.get_threshold()
