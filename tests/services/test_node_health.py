"""The failure detector as a use case: NodeService + NodeHealthController.run_once() driven by a
FakeClock over a real SQLite store (and, for the one concurrency check, PostgreSQL too).

Heartbeats follow the API's path: `nodes.heartbeat()` in memory, then `nodes.settle()` when the
node's state must change. Time moves in controller periods (0.5 s), as the real loop runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from polyfabric.controllers.node_health import HealthPass, NodeHealthController
from polyfabric.coordinator.bootstrap import UuidIds
from polyfabric.domain import audit as chain
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.conditions import DetectorSettings
from polyfabric.domain.node_states import NodeState
from polyfabric.domain.nodes import Node
from polyfabric.domain.resources import Resources
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.nodes import Registration
from polyfabric.services.ports import AuditQuery
from polyfabric.store import migrate
from polyfabric.store.repositories.nodes import SqlNodeRepository
from polyfabric.store.unit_of_work import SqlStore
from polyfabric.testing import FakeClock
from polyfabric.testing.signer import TestSigner

SETTINGS = DetectorSettings(heartbeat_interval=2.0, unreachable_after=5.0, down_after=8.0, check_interval=0.5,
                            flap_window=600.0, flap_threshold=3)
ADMIN = Principal("token", "at-admin", "admin", Role.ADMIN, ("*",))
OPERATOR = Principal("token", "at-ops", "ops", Role.OPERATOR, ("*",))


@dataclass
class World:
    store: SqlStore
    clock: FakeClock
    services: Services
    controller: NodeHealthController
    join_token: str

    def join(self, name: str) -> str:
        """Register a node and deliver its first heartbeat: it is Active."""
        reg = Registration(public_key=public_key_raw(generate_private_key()), name=name, labels={},
                           capacity=Resources(cpu_millis=1000, slots=1))
        node = self.services.nodes.register(reg, self.join_token)
        self.beat(node.id)
        assert self.node(node.id).state == NodeState.ACTIVE
        return node.id

    def beat(self, *node_ids: str, health: list[dict] | None = None) -> None:
        """A heartbeat, as the API handles it."""
        for node_id in node_ids:
            entry = self.services.nodes.heartbeat(node_id, {"memory_percent": 10.0, "disk_percent": 10.0}, health)
            if self.services.nodes.needs_settle(entry):
                self.services.nodes.settle(node_id)

    def tick(self, seconds: float, *, beating: tuple[str, ...] = (), step: float = 0.5) -> list[HealthPass]:
        """Let `seconds` pass one controller period at a time; `beating` nodes heartbeat every step."""
        passes = []
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.beat(*beating)
            passes.append(self.controller.run_once())
        return passes

    def node(self, node_id: str) -> Node:
        with self.store.unit_of_work(readonly=True) as uow:
            node = uow.nodes.get(node_id)
        assert node is not None
        return node

    def audit(self, node_id: str, action: str) -> list:
        with self.store.unit_of_work(readonly=True) as uow:
            return uow.audit.query(AuditQuery(subject=f"node:{node_id}", action=action, limit=10000))

    def condition(self, node_id: str, kind: str) -> dict:
        return next(c for c in self.node(node_id).conditions if c["type"] == kind)

    def chain_ok(self) -> bool:
        with self.store.unit_of_work(readonly=True) as uow:
            return chain.verify_chain(uow.audit.iter_all()).ok


def make_world(db_url: str) -> World:
    store = SqlStore(db_url)
    migrate.upgrade(store.engine)
    clock = FakeClock()
    ctx = ServiceContext(store=store, clock=clock, ids=UuidIds(), signer=TestSigner(), detector=SETTINGS)
    services = Services.build(ctx)
    token = services.tokens.create_join(ADMIN, domain="test", ttl_s=None, uses=None).token
    controller = NodeHealthController(ctx, services.nodes)
    controller.run_once()
    return World(store, clock, services, controller, token)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(f"sqlite:///{tmp_path / 'polyfabric.db'}")
    yield w
    w.store.close()


def test_silent_node_goes_down_after_down_after_and_comes_back_on_its_next_heartbeat(world: World):
    silent, alive = world.join("silent"), world.join("alive")
    world.tick(SETTINGS.unreachable_after + 0.5, beating=(alive,))
    assert world.condition(silent, "Unreachable")["status"] is True  # the warning comes first
    assert world.node(silent).state == NodeState.ACTIVE

    passes = world.tick(SETTINGS.down_after, beating=(alive,))
    downs = [(i, p) for i, p in enumerate(passes) if p.marked_down]
    assert len(downs) == 1 and downs[0][1].marked_down == [silent]
    # Down on the first pass after the bound: silent 8.5 s, i.e. within down_after + check_interval.
    silence = SETTINGS.unreachable_after + 0.5 + (downs[0][0] + 1) * 0.5
    assert SETTINGS.down_after < silence <= SETTINGS.down_after + SETTINGS.check_interval

    node = world.node(silent)
    assert node.state == NodeState.DOWN and node.resume_state == NodeState.ACTIVE
    [record] = [r for r in world.audit(silent, "node.transition") if r.details["to"] == "down"]
    assert record.actor == "system:health"
    assert record.details == {"from": "active", "to": "down", "trigger": "health"}
    assert record.cause == f"no heartbeat for {silence:.1f}s (Down bound 8s)"
    assert world.node(alive).state == NodeState.ACTIVE

    # A heartbeat again: back to Active at once, audited, and Ready once the detector looks again.
    world.beat(silent)
    node = world.node(silent)
    assert node.state == NodeState.ACTIVE and node.resume_state is None
    last = world.audit(silent, "node.transition")[-1]
    assert last.details == {"from": "down", "to": "active", "trigger": "health"}
    assert last.cause == "heartbeats resumed"
    world.tick(1.0, beating=(silent, alive))
    assert world.condition(silent, "Ready")["status"] is True
    assert world.condition(silent, "Unreachable")["status"] is False
    assert [r.details["to"] for r in world.audit(alive, "node.transition")] == ["active"]
    assert world.chain_ok()


@pytest.mark.parametrize("verbs", [["cordon"], ["suspend"], ["drain"], ["cordon", "suspend"]])
def test_down_node_returns_to_the_state_it_left(world: World, verbs: list[str]):
    node_id = world.join("n1")
    for verb in verbs:
        world.services.nodes.act(OPERATOR, node_id, verb, "test")
    before = world.node(node_id).state
    world.tick(SETTINGS.down_after + 1)
    assert world.node(node_id).state == NodeState.DOWN
    assert world.node(node_id).resume_state == before
    world.beat(node_id)
    assert world.node(node_id).state == before
    assert world.audit(node_id, "node.transition")[-1].details == {"from": "down", "to": before.value,
                                                                   "trigger": "health"}


def test_pending_node_that_never_heartbeats_goes_down_and_becomes_active_on_its_first_heartbeat(world: World):
    reg = Registration(public_key=public_key_raw(generate_private_key()), name="late", labels={},
                       capacity=Resources(cpu_millis=1000))
    node_id = world.services.nodes.register(reg, world.join_token).id
    world.tick(SETTINGS.down_after + 1)
    assert world.node(node_id).state == NodeState.DOWN
    world.beat(node_id)
    assert world.node(node_id).state == NodeState.ACTIVE


def test_a_late_controller_pass_forgives_the_silence_instead_of_marking_everyone_down(world: World):
    nodes = [world.join(f"n{i}") for i in range(3)]
    world.tick(2.0, beating=tuple(nodes))

    # The coordinator stalls for a minute (GC pause, SIGSTOP, overloaded host): no heartbeat was
    # processed meanwhile, and then the next pass runs.
    world.clock.advance(60.0)
    result = world.controller.run_once()
    assert result.marked_down == []
    assert result.forgiven_s == pytest.approx(60.0 - 2 * SETTINGS.check_interval - 0.5)
    assert all(world.node(n).state == NodeState.ACTIVE for n in nodes)
    assert not any(r.details["to"] == "down" for n in nodes for r in world.audit(n, "node.transition"))

    # Forgiven is not forgotten: a node that stays silent after the stall still goes Down.
    dead, *live = nodes
    passes = world.tick(SETTINGS.down_after, beating=tuple(live))
    assert [p.marked_down for p in passes if p.marked_down] == [[dead]]
    assert all(world.node(n).state == NodeState.ACTIVE for n in live)


def test_ordinary_passes_forgive_nothing(world: World):
    node_id = world.join("n1")
    passes = world.tick(30.0, beating=(node_id,))
    assert all(p.forgiven_s == 0 and not p.marked_down for p in passes)
    # Even a pass somewhat late (within 2 periods + 0.5 s of slack) is not a stall.
    world.clock.advance(1.5)
    assert world.controller.run_once().forgiven_s == 0


def test_repeated_downs_raise_the_flapping_condition_until_the_window_passes(world: World):
    node_id = world.join("flappy")
    world.tick(0.5, beating=(node_id,))
    for round_ in range(SETTINGS.flap_threshold):
        assert world.condition(node_id, "Flapping")["status"] is False
        world.tick(SETTINGS.down_after + 1)
        assert world.node(node_id).state == NodeState.DOWN, round_
        world.beat(node_id)
        world.tick(1.0, beating=(node_id,))

    flapping = world.condition(node_id, "Flapping")
    assert flapping == {"type": "Flapping", "status": True,
                        "reason": "went Down 3 times within 600s (threshold 3)"}
    assert world.node(node_id).state == NodeState.ACTIVE  # a condition: it is up, but not to be trusted
    flips = [r for r in world.audit(node_id, "node.condition") if "Flapping true" in r.cause]
    assert len(flips) == 1 and flips[0].actor == "system:health"
    with world.store.unit_of_work(readonly=True) as uow:
        assert len(uow.nodes.down_times(node_id)) == 3

    # Staying up for the whole window clears it.
    world.tick(SETTINGS.flap_window, beating=(node_id,), step=1.0)
    assert world.condition(node_id, "Flapping")["status"] is False
    assert any("Flapping false" in r.cause for r in world.audit(node_id, "node.condition"))
    assert world.chain_ok()


def test_flap_history_survives_a_coordinator_restart(world: World):
    node_id = world.join("flappy")
    for _ in range(2):
        world.tick(SETTINGS.down_after + 1)
        world.beat(node_id)
    # A new coordinator process on the same store: memory is rebuilt from the database.
    ctx = ServiceContext(store=world.store, clock=world.clock, ids=UuidIds(), signer=TestSigner(), detector=SETTINGS)
    services = Services.build(ctx)
    assert services.nodes.load_liveness() == 1
    restarted = World(world.store, world.clock, services, NodeHealthController(ctx, services.nodes),
                      world.join_token)
    restarted.tick(SETTINGS.down_after + 1)
    restarted.beat(node_id)
    restarted.tick(1.0, beating=(node_id,))
    assert restarted.condition(node_id, "Flapping")["status"] is True


def test_saving_conditions_never_overwrites_a_concurrent_transition(db_url: str, backend: str, monkeypatch):
    """The health pass saves conditions while the node's first heartbeat moves it Pending -> Active:
    the transition must survive (it once did not on PostgreSQL: the whole row was written back)."""
    world = make_world(db_url)
    try:
        reg = Registration(public_key=public_key_raw(generate_private_key()), name="racy", labels={},
                           capacity=Resources(cpu_millis=1000))
        node_id = world.services.nodes.register(reg, world.join_token).id
        read, release = threading.Event(), threading.Event()
        original = SqlNodeRepository.get

        def get_then_pause(self, ref):  # the saver reads the node, then waits while the heartbeat lands
            node = original(self, ref)
            if threading.current_thread().name == "saver":
                read.set()
                release.wait(30)
            return node

        monkeypatch.setattr(SqlNodeRepository, "get", get_then_pause)
        conditions = [{"type": "Ready", "status": False, "reason": "no heartbeat received yet"}]
        saver = threading.Thread(name="saver", target=world.services.nodes.save_conditions,
                                 args=([(node_id, conditions, ["Ready false"])],))
        saver.start()
        assert read.wait(30)
        settler = threading.Thread(name="settler", target=world.beat, args=(node_id,))
        settler.start()
        if backend == "postgresql":  # row versions, not a database lock: the heartbeat completes first
            settler.join(30)
            assert not settler.is_alive()
        # (SQLite serializes writers: the heartbeat waits for the saver's transaction.)
        release.set()
        saver.join(30)
        settler.join(30)
        assert not saver.is_alive() and not settler.is_alive()

        node = world.node(node_id)
        assert node.state == NodeState.ACTIVE
        assert node.conditions == conditions
        assert world.audit(node_id, "node.transition")[-1].details["to"] == "active"
    finally:
        world.store.close()
