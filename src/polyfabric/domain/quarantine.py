"""Automatic quarantine: when a node is taken out of service by itself, and when it may come back.

Pure: outcomes, conditions and times come in, verdicts go out; the coordinator's lifecycle
controller (`controllers/node_lifecycle.py`) feeds it and applies what it decides.

A node is quarantined automatically (state QUARANTINED, with the reason in the audit chain) when
one of these holds, counting only what happened since its last release from quarantine:

* **Flapping** (trigger `health`): it went Down `flap_threshold` times (3) within `flap_window`
  (600 s) — the Flapping condition.
* **Failing health checks** (trigger `health`): the Degraded condition held continuously for
  more than `degraded_after` (300 s).
* **Failing tasks** (trigger `policy`): within `failure_window` (600 s), at least `min_failures`
  (3) attempts failed *on this node* whose task then succeeded on another node, and failures are at
  least `min_failure_ratio` (50 %) of the attempts that ended on it. A task that fails everywhere
  (a bug in the task, bad input) is never confirmed by a success elsewhere, so it counts against no
  node; a node that runs mostly fine and fails now and then stays below the ratio.

An automatic quarantine ends by itself after `probation` (900 s) during which the node stayed
healthy: heartbeating (not Unreachable), not Degraded, not Flapping; every unhealthy observation
starts the probation over. A quarantine an operator ordered ends only by an operator
(`polyfabric node resume`). Either release forgives the evidence gathered before it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from polyfabric.domain.node_states import NodeState, Trigger

__all__ = [
    "ELIGIBLE_STATES",
    "FailureEvidence",
    "FailureLedger",
    "NodeObservation",
    "QuarantinePolicy",
    "Verdict",
    "healthy",
    "probation_left",
    "quarantine_verdict",
]

ELIGIBLE_STATES = frozenset({NodeState.ACTIVE, NodeState.CORDONED, NodeState.SUSPENDED, NodeState.DOWN})
"""States a node can be quarantined from automatically. Not Draining (it is on its way out and
takes no new work), not Pending (it never ran anything), not Retired or already Quarantined."""


@dataclass(frozen=True, slots=True)
class QuarantinePolicy:
    """Bounds of automatic quarantine (seconds, counts). 0 turns a rule off (`probation` 0: an
    automatic quarantine too is ended only by an operator)."""

    min_failures: int = 3
    failure_window: float = 600.0
    min_failure_ratio: float = 0.5
    degraded_after: float = 300.0
    flapping: bool = True
    probation: float = 900.0

    def describe(self) -> dict[str, Any]:
        return {"min_failures": self.min_failures, "failure_window_s": self.failure_window,
                "min_failure_ratio": self.min_failure_ratio, "degraded_after_s": self.degraded_after,
                "flapping": self.flapping, "probation_s": self.probation}


@dataclass(frozen=True, slots=True)
class FailureEvidence:
    """What the ledger knows of one node within the window."""

    confirmed: int = 0  # failures here whose task then succeeded on another node
    failed: int = 0  # every failed attempt that ended here
    ended: int = 0  # every attempt that ended here (succeeded or failed)
    tasks: tuple[str, ...] = ()  # the tasks of the confirmed failures (a few, for the reason)

    @property
    def ratio(self) -> float:
        return self.failed / self.ended if self.ended else 0.0


@dataclass(frozen=True, slots=True)
class NodeObservation:
    """One node as the lifecycle controller sees it on a pass."""

    node_id: str
    state: NodeState
    flaps: int = 0  # Downs within the flap window, since the last release
    degraded_for: float | None = None  # seconds the Degraded condition has held (None: not degraded)
    failures: FailureEvidence = field(default_factory=FailureEvidence)


@dataclass(frozen=True, slots=True)
class Verdict:
    rule: str  # "flapping" | "degraded" | "failures"
    trigger: Trigger
    reason: str


def quarantine_verdict(node: NodeObservation, policy: QuarantinePolicy, *, flap_window: float,
                       flap_threshold: int) -> Verdict | None:
    """Should this node be quarantined now, and why? None: no."""
    if node.state not in ELIGIBLE_STATES:
        return None
    if policy.flapping and flap_threshold > 0 and node.flaps >= flap_threshold:
        return Verdict("flapping", Trigger.HEALTH,
                       f"flapping: went Down {node.flaps} times within {flap_window:g}s "
                       f"(threshold {flap_threshold})")
    if policy.degraded_after > 0 and node.degraded_for is not None and node.degraded_for > policy.degraded_after:
        return Verdict("degraded", Trigger.HEALTH,
                       f"health checks failing for {node.degraded_for:.0f}s "
                       f"(bound {policy.degraded_after:g}s)")
    evidence = node.failures
    if (policy.min_failures > 0 and evidence.confirmed >= policy.min_failures
            and evidence.ratio >= policy.min_failure_ratio):
        shown = ", ".join(evidence.tasks[:5]) + (", ..." if len(evidence.tasks) > 5 else "")
        return Verdict("failures", Trigger.POLICY,
                       f"failing tasks: {evidence.confirmed} attempts failed here within "
                       f"{policy.failure_window:g}s and then succeeded on other nodes "
                       f"({evidence.failed} of {evidence.ended} attempts here failed; "
                       f"threshold {policy.min_failures} and {policy.min_failure_ratio:.0%}): {shown}")
    return None


def healthy(conditions: list[dict[str, Any]]) -> bool:
    """Heartbeating, health checks passing, not flapping (as the failure detector last saw it)."""
    status = {c.get("type"): c.get("status") for c in conditions}
    if "Unreachable" not in status:
        return False  # not looked at yet
    return not (status.get("Unreachable") or status.get("Degraded") or status.get("Flapping"))


def probation_left(*, quarantined_at: float, healthy_since: float | None, automatic: bool,
                   policy: QuarantinePolicy, now: float) -> float | None:
    """Seconds of probation left before an automatic release (0: release now); None: this
    quarantine is not ended automatically, or the node is not healthy now."""
    if not automatic or policy.probation <= 0 or healthy_since is None:
        return None
    start = max(quarantined_at, healthy_since)
    return max(0.0, start + policy.probation - now)


class FailureLedger:
    """Attempt outcomes per node over the failure window, and which failures were confirmed by a
    success of the same task on another node. Pure: times come in; bounded memory (counts in 60
    buckets per node; one entry per failure awaiting confirmation, dropped past the window)."""

    _BUCKETS = 60

    def __init__(self, window: float) -> None:
        self.window = max(window, 1e-3)
        self._width = self.window / self._BUCKETS
        self._counts: dict[str, deque[list[float]]] = {}  # node -> [bucket, ended, failed]
        self._confirmed: dict[str, deque[tuple[float, str]]] = {}  # node -> (failed at, task)
        self._pending: dict[str, list[tuple[str, float]]] = {}  # task -> [(node, failed at)]
        self._pending_order: deque[tuple[float, str]] = deque()
        self._cutoff: dict[str, float] = {}  # node -> evidence before this time is forgiven

    def record(self, node_id: str, task_id: str, outcome: str, at: float) -> None:
        """An attempt of `task_id` ended on `node_id` at `at` as `outcome` (succeeded or failed;
        anything else — cancelled, preempted, lost — says nothing about the node)."""
        if outcome not in ("succeeded", "failed"):
            return
        failed = outcome == "failed"
        bucket = math.floor(at / self._width)
        counts = self._counts.setdefault(node_id, deque())
        if counts and counts[-1][0] == bucket:
            counts[-1][1] += 1
            counts[-1][2] += failed
        else:
            counts.append([bucket, 1, int(failed)])
            while len(counts) > self._BUCKETS + 1:
                counts.popleft()
        if failed:
            self._pending.setdefault(task_id, []).append((node_id, at))
            self._pending_order.append((at, task_id))
            return
        for other, failed_at in self._pending.pop(task_id, []):
            if other != node_id and failed_at > self._cutoff.get(other, -math.inf):
                self._confirmed.setdefault(other, deque()).append((failed_at, task_id))

    def prune(self, now: float) -> None:
        """Forget what is older than the window."""
        horizon = now - self.window
        while self._pending_order and self._pending_order[0][0] < horizon:
            _at, task_id = self._pending_order.popleft()
            entries = self._pending.get(task_id)
            if entries is not None:
                kept = [e for e in entries if e[1] >= horizon]
                if kept:
                    self._pending[task_id] = kept
                else:
                    del self._pending[task_id]
        first = math.floor(horizon / self._width)
        for node_id in list(self._counts):
            counts = self._counts[node_id]
            while counts and counts[0][0] < first:
                counts.popleft()
            if not counts:
                del self._counts[node_id]
        for node_id in list(self._confirmed):
            confirmed = self._confirmed[node_id]
            while confirmed and confirmed[0][0] < horizon:
                confirmed.popleft()
            if not confirmed:
                del self._confirmed[node_id]

    def forgive(self, node_id: str, at: float) -> None:
        """Drop the node's evidence up to `at` (it was quarantined or released then); failures
        from before `at` confirmed later do not count either."""
        self._cutoff[node_id] = max(at, self._cutoff.get(node_id, -math.inf))
        self._counts.pop(node_id, None)
        self._confirmed.pop(node_id, None)

    def evidence(self, node_id: str, now: float) -> FailureEvidence:
        horizon = max(now - self.window, self._cutoff.get(node_id, -math.inf))
        first = math.floor(horizon / self._width)
        ended = failed = 0
        for bucket, n, f in self._counts.get(node_id, ()):
            if bucket >= first:
                ended += int(n)
                failed += int(f)
        confirmed = [task for at, task in self._confirmed.get(node_id, ()) if at >= horizon]
        return FailureEvidence(confirmed=len(confirmed), failed=failed, ended=ended,
                               tasks=tuple(dict.fromkeys(confirmed)))

    def nodes(self) -> list[str]:
        """Nodes with confirmed failures in the ledger (the only ones the failure rule can pick)."""
        return list(self._confirmed)
