"""The node lifecycle state machine, driven by random moves."""

from __future__ import annotations

import re

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from polyfabric.domain.errors import Conflict, InvalidTransition
from polyfabric.domain.node_states import (
    LIVE_STATES,
    SCHEDULABLE_STATES,
    TRANSITIONS,
    NodeState,
    NodeTransition,
    Trigger,
    operator_target,
    transition,
)

NODE = "n-abcdefghijklmnopqrst"


def _move(current: NodeState, target: NodeState, trigger: Trigger, now: float = 0.0) -> NodeTransition:
    return transition(NODE, current, target, trigger=trigger, cause="test", actor="token:admin", now=now)


def _names_both_states(message: str, current: NodeState, target: NodeState) -> bool:
    if current == target:
        return f"is already {current}" in message
    return bool(re.search(rf"from {current} to {target}\b", message) or f"{current} -> {target} " in message)


class NodeLifecycle(RuleBasedStateMachine):
    """Random (target, trigger) pairs from any starting state, checked against TRANSITIONS."""

    def __init__(self) -> None:
        super().__init__()
        self.state = NodeState.PENDING
        self.events: list[NodeTransition] = []
        self.clock = 0.0

    @initialize(start=st.sampled_from(NodeState))
    def start(self, start: NodeState) -> None:
        self.state = start

    @rule(to=st.sampled_from(NodeState), trigger=st.sampled_from(Trigger))
    def move(self, to: NodeState, trigger: Trigger) -> None:
        current = self.state
        allowed = TRANSITIONS.get((current, to))
        self.clock += 1.0
        try:
            event = _move(current, to, trigger, now=self.clock)
        except InvalidTransition as exc:
            assert allowed is None or trigger not in allowed or current == to
            assert _names_both_states(str(exc), current, to), str(exc)
            assert NODE in str(exc)
            return
        assert allowed is not None and trigger in allowed, f"{current} -> {to} by {trigger} was accepted"
        assert event == NodeTransition(NODE, current, to, trigger, "test", "token:admin", self.clock)
        self.events.append(event)
        self.state = to

    @invariant()
    def retired_is_terminal(self) -> None:
        retired = [i for i, e in enumerate(self.events) if e.to_state == NodeState.RETIRED]
        if retired:
            assert retired[0] == len(self.events) - 1, "a node left RETIRED"
            assert self.state == NodeState.RETIRED

    @invariant()
    def down_is_only_entered_by_health(self) -> None:
        assert all(e.trigger == Trigger.HEALTH for e in self.events if e.to_state == NodeState.DOWN)

    @invariant()
    def events_chain(self) -> None:
        for before, after in zip(self.events, self.events[1:], strict=False):
            assert before.to_state == after.from_state


TestNodeLifecycle = NodeLifecycle.TestCase
TestNodeLifecycle.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


# --- the table itself ---------------------------------------------------------------------------


def test_retired_has_no_way_out() -> None:
    assert not [edge for edge in TRANSITIONS if edge[0] == NodeState.RETIRED]
    for target in NodeState:
        for trigger in Trigger:
            with pytest.raises(InvalidTransition) as info:
                _move(NodeState.RETIRED, target, trigger)
            if target != NodeState.RETIRED:
                assert "retired is final" in info.value.message


def test_down_is_entered_only_by_health() -> None:
    into_down = {edge: triggers for edge, triggers in TRANSITIONS.items() if edge[1] == NodeState.DOWN}
    assert into_down, "some state must be able to go Down"
    assert all(triggers == {Trigger.HEALTH} for triggers in into_down.values())
    assert {frm for frm, _ in into_down} >= LIVE_STATES


def test_no_edge_loops_and_every_edge_has_a_trigger() -> None:
    for (frm, to), triggers in TRANSITIONS.items():
        assert frm != to
        assert triggers


def test_every_live_state_can_come_back_from_down() -> None:
    for state in LIVE_STATES:
        assert _move(NodeState.DOWN, state, Trigger.HEALTH).to_state == state


def test_every_state_but_retired_can_be_retired_by_an_operator() -> None:
    for state in set(NodeState) - {NodeState.RETIRED}:
        assert Trigger.OPERATOR in TRANSITIONS[(state, NodeState.RETIRED)]


def test_only_active_nodes_are_schedulable() -> None:
    assert set(SCHEDULABLE_STATES) == {NodeState.ACTIVE}
    assert SCHEDULABLE_STATES <= LIVE_STATES


def test_refusals_explain_themselves() -> None:
    with pytest.raises(InvalidTransition, match="is already active"):
        _move(NodeState.ACTIVE, NodeState.ACTIVE, Trigger.OPERATOR)
    with pytest.raises(
        InvalidTransition, match=r"cannot go from pending to draining; from pending it can go"
    ):
        _move(NodeState.PENDING, NodeState.DRAINING, Trigger.OPERATOR)
    with pytest.raises(
        InvalidTransition, match=r"active -> down cannot be triggered by operator \(allowed: health\)"
    ):
        _move(NodeState.ACTIVE, NodeState.DOWN, Trigger.OPERATOR)


def test_invalid_transition_is_a_conflict() -> None:
    assert issubclass(InvalidTransition, Conflict)
    assert InvalidTransition.code == "invalid_transition"


# --- operator verbs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "verb, state",
    [
        ("cordon", NodeState.CORDONED),
        ("uncordon", NodeState.ACTIVE),
        ("suspend", NodeState.SUSPENDED),
        ("resume", NodeState.ACTIVE),
        ("drain", NodeState.DRAINING),
        ("retire", NodeState.RETIRED),
        ("quarantine", NodeState.QUARANTINED),
    ],
)
def test_operator_target(verb: str, state: NodeState) -> None:
    assert operator_target(verb) == state


@pytest.mark.parametrize(
    "verb, current",
    [
        ("cordon", NodeState.ACTIVE),
        ("uncordon", NodeState.CORDONED),
        ("suspend", NodeState.ACTIVE),
        ("resume", NodeState.SUSPENDED),
        ("drain", NodeState.CORDONED),
        ("retire", NodeState.DOWN),
        ("quarantine", NodeState.ACTIVE),
    ],
)
def test_each_verb_is_an_operator_move_somewhere(verb: str, current: NodeState) -> None:
    event = _move(current, operator_target(verb), Trigger.OPERATOR)
    assert event.trigger == Trigger.OPERATOR


@pytest.mark.parametrize("verb", ["", "Cordon", "delete", "restart", " drain"])
def test_unknown_operator_verbs_are_refused(verb: str) -> None:
    with pytest.raises(InvalidTransition) as info:
        operator_target(verb)
    assert repr(verb) in info.value.message
    assert "known: cordon, drain, quarantine, resume, retire, suspend, uncordon" in info.value.message
