"""The node lifecycle controller: automatic quarantine, probation, and drains that end by themselves.

Each pass (every second):

1. **Quarantine.** The evidence — Flapping (Downs since the last release), how long the Degraded
   condition has held, and the task failures the job runtime reported (`JobRuntime.
   attempt_listeners` feed a `FailureLedger`) — goes to `domain.quarantine.quarantine_verdict`.
   A node it names goes to QUARANTINED (trigger health or policy, the reason as the cause in the
   audit chain) and its attempts are queued again for other nodes as attempts it lost ("evicted":
   counted in the task's `lost`, not in its failures, no retry used; the node's late reports of
   them are fenced).
2. **Probation.** An automatic quarantine ends (QUARANTINED -> ACTIVE, trigger system) once the
   node stayed healthy for the whole probation; an operator's quarantine waits for an operator.
   Any release (this one or `node resume`) forgives the evidence gathered before it.
3. **Drains.** A Draining node with no attempt left is retired (trigger system); one whose drain
   deadline passed has its attempts moved first (`domain.drain`). A node an operator retired,
   revoked or quarantined keeps no attempt either: they are moved the same way.

What it remembers in memory — the failure ledger, since when a node is Degraded or healthy — starts
afresh when the coordinator starts (or another one takes over): a restart forgives, it never
blames. What it decides is written like every transition: with its audit record, in one
transaction, and only if the node is still in the state the decision was made on.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field

from polyfabric.domain.drain import DrainStep, MoveMode, drain_step, move_reason
from polyfabric.domain.node_states import NodeState, Trigger
from polyfabric.domain.quarantine import (
    ELIGIBLE_STATES,
    FailureLedger,
    NodeObservation,
    QuarantinePolicy,
    Verdict,
    healthy,
    probation_left,
    quarantine_verdict,
)
from polyfabric.services.context import ServiceContext
from polyfabric.services.liveness import NodeLiveness
from polyfabric.services.nodes import NodeService
from polyfabric.services.runtime import JobRuntime

__all__ = ["ACTOR", "LifecyclePass", "NodeLifecycleController"]

log = logging.getLogger("polyfabric.lifecycle")

ACTOR = "system:lifecycle"
_HOLD_NOTHING = frozenset({NodeState.RETIRED, NodeState.QUARANTINED})
_WATCHED_HEALTH = ELIGIBLE_STATES - {NodeState.DOWN}  # where "Degraded for how long" is measured


@dataclass
class LifecyclePass:
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (node, rule)
    released: list[str] = field(default_factory=list)
    moved: dict[str, int] = field(default_factory=dict)  # node -> attempts moved off it
    retired: list[str] = field(default_factory=list)


class NodeLifecycleController:
    name = "node-lifecycle"

    def __init__(self, ctx: ServiceContext, nodes: NodeService, runtime: JobRuntime,
                 policy: QuarantinePolicy | None = None, *, period: float = 1.0,
                 move_mode: MoveMode = MoveMode.REQUEUE, checkpoint_grace_s: float = 10.0) -> None:
        self._ctx = ctx
        self._nodes = nodes
        self._runtime = runtime
        self.policy = policy or QuarantinePolicy()
        self.period = period
        # How attempts leave a node whose drain deadline passed. The checkpoint work replaces
        # REQUEUE with STOP_AFTER_CHECKPOINT here (see `_move`).
        self.move_mode = move_mode
        self.checkpoint_grace_s = checkpoint_grace_s  # STOP_AFTER_CHECKPOINT: how long a task may take
        self.ledger = FailureLedger(self.policy.failure_window)
        # Bounded: if the passes stop (a coordinator that does not lead), the oldest evidence goes.
        self._inbox: deque[tuple[str, str, str, float]] = deque(maxlen=100_000)
        self._degraded_since: dict[str, float] = {}
        self._healthy_since: dict[str, float] = {}
        self._cutoff: dict[str, float] = {}  # node -> its last release from quarantine (evidence before is forgiven)
        self._last_state: dict[str, NodeState] = {}
        # One feed per runtime: a controller built for a new term as leader takes it over.
        runtime.attempt_listeners[:] = [
            listener for listener in runtime.attempt_listeners
            if not isinstance(getattr(listener, "__self__", None), NodeLifecycleController)]
        runtime.attempt_listeners.append(self._on_attempt)

    def _on_attempt(self, node_id: str, task_id: str, attempt: int, outcome: str, at: float) -> None:
        # Called under the runtime's lock from request threads: only queue it (deque appends are atomic).
        if outcome in ("succeeded", "failed"):
            self._inbox.append((node_id, task_id, outcome, at))

    # -- the pass -----------------------------------------------------------------------------

    def run_once(self) -> LifecyclePass:
        now = self._ctx.clock.now()
        while self._inbox:
            node_id, task_id, outcome, at = self._inbox.popleft()
            self.ledger.record(node_id, task_id, outcome, at)
        self.ledger.prune(now)
        done = LifecyclePass()
        everyone = self._ctx.liveness.entries()
        for entry in everyone:
            # A node retired, revoked or quarantined (by an operator too) keeps no work: what it
            # held runs elsewhere.
            if (entry.revoked or entry.state in _HOLD_NOTHING) and self._runtime.attempts_on(entry.node_id):
                what = "revoked" if entry.revoked else str(entry.state)
                moved = self._move(entry.node_id, f"node {entry.node_id} is {what}")
                done.moved[entry.node_id] = done.moved.get(entry.node_id, 0) + moved
        entries = [e for e in everyone if not e.revoked]
        for entry in entries:
            before = self._last_state.get(entry.node_id)
            if before == NodeState.QUARANTINED and entry.state != NodeState.QUARANTINED:
                self._forgive(entry.node_id, now)  # released (by an operator, or by us)
            self._last_state[entry.node_id] = entry.state
        for entry in entries:
            self._consider_quarantine(entry, now, done)
        self._probation(entries, now, done)
        self._drains(entries, now, done)
        return done

    # -- 1. quarantine --------------------------------------------------------------------------

    def _consider_quarantine(self, entry: NodeLiveness, now: float, done: LifecyclePass) -> None:
        node_id = entry.node_id
        degraded = any(c.get("type") == "Degraded" and c.get("status") for c in entry.conditions)
        if degraded and entry.state in _WATCHED_HEALTH:
            self._degraded_since.setdefault(node_id, now)
        else:  # healthy, or Down (no news from it): the clock starts over when it reports again
            self._degraded_since.pop(node_id, None)
        if entry.state not in ELIGIBLE_STATES:
            return
        verdict = self._verdict(entry, now)
        if verdict is not None and node_id not in self._cutoff:
            # Before acting, learn when the node was last released (a restart forgot it): the
            # evidence from before then does not count.
            node = self._nodes.peek(node_id)
            released = (node.quarantine or {}).get("released_at") if node is not None else None
            self._cutoff[node_id] = float(released) if released is not None else -math.inf
            verdict = self._verdict(entry, now)
        if verdict is None:
            return
        node = self._nodes.system_transition(
            node_id, NodeState.QUARANTINED, expect=ELIGIBLE_STATES, trigger=verdict.trigger,
            cause=verdict.reason, actor=ACTOR, extra={"rule": verdict.rule})
        if node is None:
            return
        log.warning("node %s quarantined (%s): %s", node_id, verdict.trigger, verdict.reason)
        done.quarantined.append((node_id, verdict.rule))
        self._last_state[node_id] = NodeState.QUARANTINED
        self._forgive(node_id, now)
        moved = self._runtime.node_lost(node_id, f"node {node_id} was quarantined: {verdict.reason}",
                                        status="evicted", actor=ACTOR, action="task.evicted")
        if moved:
            done.moved[node_id] = done.moved.get(node_id, 0) + moved

    def _verdict(self, entry: NodeLiveness, now: float) -> Verdict | None:
        cutoff = self._cutoff.get(entry.node_id, -math.inf)
        detector = self._ctx.detector
        flaps = sum(1 for t in entry.down_times if now - t <= detector.flap_window and t > cutoff)
        since = self._degraded_since.get(entry.node_id)
        degraded_for = now - max(since, cutoff) if since is not None else None
        observation = NodeObservation(entry.node_id, entry.state, flaps=flaps, degraded_for=degraded_for,
                                      failures=self.ledger.evidence(entry.node_id, now))
        return quarantine_verdict(observation, self.policy, flap_window=detector.flap_window,
                                  flap_threshold=detector.flap_threshold)

    def _forgive(self, node_id: str, now: float) -> None:
        self._cutoff[node_id] = now
        self.ledger.forgive(node_id, now)
        self._degraded_since.pop(node_id, None)
        self._healthy_since.pop(node_id, None)

    # -- 2. probation ---------------------------------------------------------------------------

    def _probation(self, entries: list[NodeLiveness], now: float, done: LifecyclePass) -> None:
        due = []
        for entry in entries:
            if entry.state != NodeState.QUARANTINED:
                self._healthy_since.pop(entry.node_id, None)
                continue
            if not healthy(entry.conditions):
                self._healthy_since.pop(entry.node_id, None)
                continue
            since = self._healthy_since.setdefault(entry.node_id, now)
            if self.policy.probation > 0 and now - since >= self.policy.probation:
                due.append(entry.node_id)
        if not due:
            return
        quarantined = {n.id: n for n in self._nodes.in_state(NodeState.QUARANTINED)}
        for node_id in due:
            node = quarantined.get(node_id)
            if node is None:
                continue
            record = node.quarantine or {}
            automatic = record.get("trigger") in (Trigger.HEALTH.value, Trigger.POLICY.value)
            left = probation_left(quarantined_at=node.state_since, healthy_since=self._healthy_since.get(node_id),
                                  automatic=automatic, policy=self.policy, now=now)
            if left is None or left > 0:
                continue
            released = self._nodes.system_transition(
                node_id, NodeState.ACTIVE, expect={NodeState.QUARANTINED}, trigger=Trigger.SYSTEM, actor=ACTOR,
                cause=f"probation over: healthy for {self.policy.probation:g}s in quarantine "
                      f"(quarantined for: {record.get('reason', '?')})",
                extra={"rule": "probation"})
            if released is not None:
                log.info("node %s released from quarantine after its probation", node_id)
                done.released.append(node_id)
                self._last_state[node_id] = NodeState.ACTIVE
                self._forgive(node_id, now)

    # -- 3. drains ------------------------------------------------------------------------------

    def _drains(self, entries: list[NodeLiveness], now: float, done: LifecyclePass) -> None:
        draining = [e.node_id for e in entries if e.state == NodeState.DRAINING]
        if not draining:
            return
        deadlines = {n.id: n.drain_deadline for n in self._nodes.in_state(NodeState.DRAINING)}
        for node_id in draining:
            if node_id not in deadlines:
                continue  # left Draining meanwhile
            deadline = deadlines[node_id]
            step = drain_step(attempts=self._runtime.attempts_on(node_id), deadline=deadline, now=now)
            if step is DrainStep.MOVE:
                assert deadline is not None
                moved = self._move(node_id, move_reason(node_id, deadline, self.move_mode), self.move_mode)
                if moved:
                    done.moved[node_id] = done.moved.get(node_id, 0) + moved
                step = drain_step(attempts=self._runtime.attempts_on(node_id), deadline=deadline, now=now)
            if step is not DrainStep.RETIRE:
                continue
            retired = self._nodes.system_transition(
                node_id, NodeState.RETIRED, expect={NodeState.DRAINING}, trigger=Trigger.SYSTEM, actor=ACTOR,
                cause="drain complete: no task left on the node", extra={"rule": "drain"})
            if retired is None:
                continue
            log.info("node %s drained and retired", node_id)
            done.retired.append(node_id)
            # A placement made on the strength of an older view of the node must not stay on it.
            self._move(node_id, f"node {node_id} retired after its drain")

    def _move(self, node_id: str, reason: str, mode: MoveMode = MoveMode.REQUEUE) -> int:
        """Take every attempt off the node and queue it again elsewhere (not a failure); the next
        attempt resumes from the task's last checkpoint, if it saved any.

        `MoveMode.STOP_AFTER_CHECKPOINT` (drains past their deadline): running attempts are first
        asked to checkpoint and stop (`JobRuntime.ask_checkpoint`: the agent makes
        `ctx.should_stop()` true and sends a command SIGTERM). One that saves a checkpoint is moved
        at once (`JobRuntime.note_checkpoint`), one that ends is moved by its report, and one still
        there after `checkpoint_grace_s` is moved anyway, from its last checkpoint. Attempts only
        leased (not started) are moved at once. Returns the attempts moved by this call."""
        if mode is MoveMode.REQUEUE or self.checkpoint_grace_s <= 0:
            return self._runtime.node_lost(node_id, reason, status="evicted", actor=ACTOR, action="task.evicted")
        _asked, moved = self._runtime.ask_checkpoint(node_id, reason)
        overdue = self._runtime.checkpoint_overdue(node_id, self.checkpoint_grace_s)
        if overdue:
            moved += self._runtime.node_lost(
                node_id, f"{reason}; no checkpoint within {self.checkpoint_grace_s:g}s: moved from its last one",
                status="evicted", actor=ACTOR, action="task.evicted", tasks=overdue)
        return moved
