"""The failure detector and condition keeper.

Each pass (every `check_interval`, 0.5 s by default) looks at every node's heartbeat age in
memory: silent past `down_after` -> Down (with the silence in the audit record); conditions
recomputed and written when a status flips. If the pass itself ran late (the coordinator was
starved or paused), the lost time is forgiven to every node rather than blamed on them: a
stalled coordinator must not declare a healthy fabric dead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from polyfabric.domain.conditions import compute_conditions, count_flaps
from polyfabric.domain.node_states import LIVE_STATES, NodeState
from polyfabric.services.context import ServiceContext
from polyfabric.services.nodes import NodeService

__all__ = ["HealthPass", "NodeHealthController"]

log = logging.getLogger("polyfabric.health")


@dataclass(frozen=True, slots=True)
class HealthPass:
    marked_down: list[str]
    conditions_changed: int
    forgiven_s: float


class NodeHealthController:
    name = "node-health"

    def __init__(self, ctx: ServiceContext, nodes: NodeService,
                 on_down: Callable[[str, str], object] | None = None) -> None:
        self._ctx = ctx
        self._nodes = nodes
        self._on_down = on_down
        self.period = ctx.detector.check_interval
        self._last_pass: float | None = None

    def run_once(self) -> HealthPass:
        settings = self._ctx.detector
        now = self._ctx.clock.now()
        forgiven = 0.0
        if self._last_pass is not None:
            late = (now - self._last_pass) - max(self.period, 0.0) * 2 - 0.5
            if late > 0:
                self._ctx.liveness.shift(late)
                forgiven = late
                log.warning("health pass ran %.1fs late; forgiving that silence to every node", late)
        self._last_pass = now

        marked: list[str] = []
        changes = []
        for entry in self._ctx.liveness.entries():
            if entry.revoked or entry.state in (NodeState.RETIRED,):
                continue
            age = now - entry.last_seen
            if age > settings.down_after and (entry.state in LIVE_STATES or
                                              entry.state == NodeState.PENDING):
                try:
                    if self._nodes.mark_down(entry.node_id, age) is not None:
                        marked.append(entry.node_id)
                        log.info("node %s is Down: silent for %.1fs", entry.node_id, age)
                        if self._on_down is not None:
                            self._on_down(entry.node_id, f"node went Down after {age:.1f}s of silence")
                except Exception:
                    log.exception("could not mark node %s Down", entry.node_id)
            conditions = [c.to_dict() for c in compute_conditions(
                state=entry.state,
                heartbeat_age=age if entry.heartbeats or entry.state != NodeState.PENDING else None,
                telemetry=entry.telemetry, health=entry.health,
                flaps=count_flaps(entry.down_times, now, settings.flap_window), settings=settings,
            )]
            before = {c["type"]: c["status"] for c in entry.conditions}
            after = {c["type"]: c["status"] for c in conditions}
            entry.conditions = conditions
            if before != after:
                # The first computation counts as a change from "all clear" (Ready aside): a node
                # that joins already Degraded gets that into the audit chain too.
                baseline = before or {k: (k == "Ready") for k in after}
                flipped = [f"{k} {'true' if v else 'false'}" for k, v in after.items() if baseline.get(k) != v]
                changes.append((entry.node_id, conditions, flipped))
        if changes:
            self._nodes.save_conditions(changes)
        return HealthPass(marked, len(changes), forgiven)
