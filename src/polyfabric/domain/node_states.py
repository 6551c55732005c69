"""The node lifecycle: one state machine, every edge named with what may trigger it.

                 register             first heartbeat
    (none) ──────────────▶ PENDING ───────────────────▶ ACTIVE ◀──────────────┐
                                                        │  ▲                  │ uncordon/resume
                                      cordon/suspend    ▼  │ uncordon/resume  │
                                                   CORDONED / SUSPENDED ──────┘
                                                        │ drain
                                                        ▼
                                                    DRAINING ──(no work left)──▶ RETIRED
    any live state ──(silent past the Down bound)──▶ DOWN ──(heartbeat again)──▶ the state it left
    any live state ──(policy, flapping, operator)──▶ QUARANTINED ──(operator/probation)──▶ ACTIVE
    any state ──(retire, revoke)──▶ RETIRED  (terminal)

Every change goes through `transition()`, which refuses edges not in `TRANSITIONS` or triggers
not allowed on that edge, and returns the event to record (from, to, trigger, cause, actor, at).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from polyfabric.domain.errors import InvalidTransition

__all__ = [
    "LIVE_STATES",
    "SCHEDULABLE_STATES",
    "TRANSITIONS",
    "NodeState",
    "NodeTransition",
    "Trigger",
    "operator_target",
    "transition",
]


class NodeState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    CORDONED = "cordoned"
    SUSPENDED = "suspended"
    DRAINING = "draining"
    RETIRED = "retired"
    DOWN = "down"
    QUARANTINED = "quarantined"


class Trigger(StrEnum):
    """Who or what caused a transition."""

    OPERATOR = "operator"  # a person or tool with an operator token
    HEALTH = "health"  # the failure detector, health checks, heartbeats
    POLICY = "policy"  # a policy's remediation
    DEMAND = "demand"  # the autoscaler or workload changes
    SYSTEM = "system"  # the coordinator's own bookkeeping (registration, drain completion)


S, T = NodeState, Trigger
_OPS = frozenset({T.OPERATOR})

# (from, to) -> triggers allowed on that edge.
TRANSITIONS: dict[tuple[NodeState, NodeState], frozenset[Trigger]] = {
    (S.PENDING, S.ACTIVE): frozenset({T.SYSTEM, T.HEALTH, T.OPERATOR}),
    (S.PENDING, S.DOWN): frozenset({T.HEALTH}),
    (S.ACTIVE, S.CORDONED): frozenset({T.OPERATOR, T.POLICY}),
    (S.CORDONED, S.ACTIVE): _OPS,
    (S.ACTIVE, S.SUSPENDED): frozenset({T.OPERATOR, T.DEMAND, T.POLICY}),
    (S.CORDONED, S.SUSPENDED): _OPS,
    (S.SUSPENDED, S.ACTIVE): frozenset({T.OPERATOR, T.DEMAND}),
    (S.SUSPENDED, S.CORDONED): _OPS,
    (S.ACTIVE, S.DRAINING): frozenset({T.OPERATOR, T.DEMAND, T.POLICY}),
    (S.CORDONED, S.DRAINING): frozenset({T.OPERATOR, T.DEMAND, T.POLICY}),
    (S.SUSPENDED, S.DRAINING): frozenset({T.OPERATOR, T.DEMAND}),
    (S.DRAINING, S.ACTIVE): _OPS,
    (S.DRAINING, S.RETIRED): frozenset({T.SYSTEM, T.OPERATOR, T.DEMAND}),
    (S.QUARANTINED, S.ACTIVE): frozenset({T.OPERATOR, T.SYSTEM}),
    (S.QUARANTINED, S.DRAINING): _OPS,
}
for _live in (S.ACTIVE, S.CORDONED, S.SUSPENDED, S.DRAINING):
    TRANSITIONS[(_live, S.DOWN)] = frozenset({T.HEALTH})
    TRANSITIONS[(S.DOWN, _live)] = frozenset({T.HEALTH})
for _any in (S.PENDING, S.ACTIVE, S.CORDONED, S.SUSPENDED, S.DRAINING, S.DOWN):
    TRANSITIONS[(_any, S.QUARANTINED)] = frozenset({T.POLICY, T.HEALTH, T.OPERATOR})
for _any in (S.PENDING, S.ACTIVE, S.CORDONED, S.SUSPENDED, S.DOWN, S.QUARANTINED):
    TRANSITIONS[(_any, S.RETIRED)] = _OPS | ({T.DEMAND} if _any is not S.PENDING else frozenset())
del _live, _any

LIVE_STATES = frozenset({S.ACTIVE, S.CORDONED, S.SUSPENDED, S.DRAINING})
"""States of a node that is up and reachable: it heartbeats, may run work, can go Down."""

SCHEDULABLE_STATES = frozenset({S.ACTIVE})
"""Only Active nodes receive new work."""

# Operator verbs and the states they lead to.
_OPERATOR_VERBS: dict[str, NodeState] = {
    "cordon": S.CORDONED,
    "uncordon": S.ACTIVE,
    "suspend": S.SUSPENDED,
    "resume": S.ACTIVE,
    "drain": S.DRAINING,
    "retire": S.RETIRED,
    "quarantine": S.QUARANTINED,
}


def operator_target(verb: str) -> NodeState:
    """The state an operator verb leads to (`cordon` -> CORDONED)."""
    try:
        return _OPERATOR_VERBS[verb]
    except KeyError:
        raise InvalidTransition(
            f"unknown node action {verb!r}; known: {', '.join(sorted(_OPERATOR_VERBS))}"
        ) from None


@dataclass(frozen=True, slots=True)
class NodeTransition:
    """A recorded lifecycle change: the event every transition produces."""

    node_id: str
    from_state: NodeState
    to_state: NodeState
    trigger: Trigger
    cause: str
    actor: str
    at: float


def transition(
    node_id: str,
    current: NodeState,
    target: NodeState,
    *,
    trigger: Trigger,
    cause: str,
    actor: str,
    now: float,
) -> NodeTransition:
    """Validate one lifecycle move and return its event; raise InvalidTransition otherwise."""
    if current == target:
        raise InvalidTransition(f"node {node_id} is already {current}")
    allowed = TRANSITIONS.get((current, target))
    if allowed is None:
        reachable = sorted(to.value for (frm, to) in TRANSITIONS if frm == current)
        raise InvalidTransition(
            f"node {node_id} cannot go from {current} to {target}"
            + (f"; from {current} it can go to: {', '.join(reachable)}" if reachable else
               f"; {current} is final")
        )
    if trigger not in allowed:
        raise InvalidTransition(
            f"node {node_id}: {current} -> {target} cannot be triggered by {trigger} "
            f"(allowed: {', '.join(sorted(t.value for t in allowed))})"
        )
    return NodeTransition(node_id, current, target, trigger, cause, actor, now)
