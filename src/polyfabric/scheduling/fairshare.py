"""Fair share between domains: among tasks of equal priority, those of domains that gave the
fabric more than they took go first.

Pure: balances in, an order out. A domain's *share score* is

    clamp(log2((contributed + prior) / (consumed + prior)), -cap, +cap)

from its contributed and consumed CPU-seconds in the ledger (over the coordinator's balance
window); the prior (CPU-seconds added to both sides) keeps new domains near 0 and damps small
numbers. A domain that contributed 4x what it consumed scores +2; one that only consumed scores
down to -cap.

What it changes: the order in which the scheduler considers ready tasks *of the same priority*
(by score, then submission order). An explicit priority always wins, and a task's own priority
is never changed, so fair share never causes a preemption (preemption compares the tasks' own
priorities). Off (the default), the order is exactly priority then submission order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from polyfabric.scheduling.view import TaskRequest

__all__ = ["FairShare", "order", "share_score"]


@dataclass(frozen=True, slots=True)
class FairShare:
    enabled: bool = False
    prior_s: float = 60.0  # CPU-seconds added to both sides (damping)
    cap: float = 4.0  # the score's bound, in doublings, both ways


def share_score(contributed: float, consumed: float, policy: FairShare) -> float:
    """How far ahead (positive) or behind (negative) a domain's tasks go for its balance."""
    if not policy.enabled:
        return 0.0
    prior = max(policy.prior_s, 1e-9)
    ratio = (max(contributed, 0.0) + prior) / (max(consumed, 0.0) + prior)
    return max(-policy.cap, min(policy.cap, math.log2(ratio)))


def order(tasks: Sequence[TaskRequest], balances: Mapping[str, tuple[float, float]],
          policy: FairShare) -> list[TaskRequest]:
    """The tasks in planning order, each with `submitted_seq` renumbered to its rank, so that the
    scheduler's own (priority, submitted_seq) sort keeps fair share's order: priority first, then
    the domain's score (higher first), then submission order. `balances`: domain ->
    (contributed, consumed) CPU-seconds. Off: the tasks unchanged."""
    if not policy.enabled or not tasks:
        return list(tasks)
    scores = {domain: share_score(given, taken, policy) for domain, (given, taken) in balances.items()}
    ranked = sorted(tasks, key=lambda t: (-t.priority, -scores.get(t.domain, 0.0), t.submitted_seq))
    return [replace(task, submitted_seq=rank) for rank, task in enumerate(ranked)]
