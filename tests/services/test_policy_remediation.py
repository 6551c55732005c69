"""Remediation policies applied: the controller cordons / quarantines violating nodes, audits dry-runs.

NodeService + JobRuntime + PolicyService + the remediation controller over a real store (SQLite
here; the e2e module runs both stores with real processes), driven by a FakeClock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from polyfabric.controllers.policy_remediation import PolicyRemediationController
from polyfabric.coordinator.bootstrap import UuidIds
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.conditions import DetectorSettings
from polyfabric.domain.node_states import NodeState
from polyfabric.domain.resources import Resources
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.nodes import Registration
from polyfabric.services.ports import AuditQuery
from polyfabric.store import migrate
from polyfabric.store.unit_of_work import SqlStore
from polyfabric.testing import FakeClock
from polyfabric.testing.signer import TestSigner

ADMIN = Principal("token", "at-admin", "admin", Role.ADMIN, ("*",))
DOMAIN = "lab"
SETTINGS = DetectorSettings(heartbeat_interval=2.0, unreachable_after=5.0, down_after=8.0, check_interval=0.5)


@dataclass
class World:
    store: SqlStore
    clock: FakeClock
    services: Services
    controller: PolicyRemediationController
    token: str

    def join(self, name: str, **labels: str) -> str:
        reg = Registration(public_key=public_key_raw(generate_private_key()), name=name, labels=dict(labels),
                           capacity=Resources(slots=2))
        node = self.services.nodes.register(reg, self.token)
        self.services.nodes.heartbeat(node.id, {}, [])
        self.services.nodes.settle(node.id)
        assert self.state(node.id) == NodeState.ACTIVE
        return node.id

    def state(self, node_id: str) -> NodeState:
        node = self.services.nodes.peek(node_id)
        assert node is not None
        return node.state

    def apply(self, **doc: Any) -> None:
        assert self.services.policies is not None
        self.services.policies.apply(ADMIN, {"kind": "remediation", "scope": "network", **doc})

    def audit(self, action: str, node_id: str) -> list[Any]:
        with self.store.unit_of_work(readonly=True) as uow:
            return list(uow.audit.query(AuditQuery(subject=f"node:{node_id}", action=action, limit=1000)))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = SqlStore(f"sqlite:///{tmp_path / 'polyfabric.db'}")
    migrate.upgrade(store.engine)
    clock = FakeClock()
    ctx = ServiceContext(store=store, clock=clock, ids=UuidIds(), signer=TestSigner(), detector=SETTINGS)
    services = Services.build(ctx)
    services.domains.create(ADMIN, DOMAIN, "")
    token = services.tokens.create_join(ADMIN, domain=DOMAIN, ttl_s=None, uses=None).token
    yield World(store, clock, services, PolicyRemediationController(ctx, services.nodes, services.runtime), token)
    store.close()


ZONED = 'has(node.labels.zone)'


def test_a_violating_active_node_is_cordoned_naming_the_policy_and_a_conforming_one_is_untouched(world):
    bad, good = world.join("bad"), world.join("good", zone="a")
    world.apply(name="zoned", allow=ZONED, action="cordon", reason="every node declares its zone")
    done = world.controller.run_once()
    assert done.acted == [(bad, "cordon", "zoned v1")]
    assert world.state(bad) == NodeState.CORDONED and world.state(good) == NodeState.ACTIVE
    [record] = [r for r in world.audit("node.transition", bad) if r.details.get("to") == "cordoned"]
    assert record.actor == "system:policy" and record.details["trigger"] == "policy"
    assert record.details["policy"] == "zoned" and record.details["version"] == 1
    assert record.cause == "network policy zoned v1 (cordon): every node declares its zone"
    assert world.audit("node.transition", good)[-1].details.get("to") == "active"  # only its join

    # Nothing changed: nothing is evaluated again.
    assert world.controller.run_once().evaluated == 0


def test_quarantine_wins_over_cordon_and_dry_run_only_audits_once(world):
    node = world.join("n1", tier="x")
    world.apply(name="try-it", allow=ZONED, action="cordon", mode="dry-run")
    done = world.controller.run_once()
    assert done.acted == [] and done.would == [(node, "cordon", "try-it v1")]
    assert world.state(node) == NodeState.ACTIVE
    [audited] = world.audit("policy.dry_run", node)
    assert audited.cause.startswith("would cordon: network policy try-it v1")
    assert audited.details["policy"] == "try-it" and audited.details["action"] == "cordon"
    world.clock.advance(5)
    assert world.controller.run_once().would == []  # audited once per node and version
    assert len(world.audit("policy.dry_run", node)) == 1

    world.apply(name="no-x", allow='node.labels.tier != "x"', action="quarantine", reason="tier x is retired")
    world.apply(name="zoned", allow=ZONED, action="cordon")
    done = world.controller.run_once()
    assert done.acted == [(node, "quarantine", "no-x v1")]
    assert world.state(node) == NodeState.QUARANTINED
    stored = world.services.nodes.peek(node)
    assert stored is not None and stored.quarantine is not None
    assert stored.quarantine["trigger"] == "policy" and "no-x v1" in stored.quarantine["reason"]


def test_an_uncordoned_node_that_still_violates_is_cordoned_again_and_a_fixed_policy_stops_it(world):
    node = world.join("n2")
    world.apply(name="zoned", allow=ZONED, action="cordon")
    world.controller.run_once()
    assert world.state(node) == NodeState.CORDONED
    world.services.nodes.act(ADMIN, node, "uncordon", "operator says fine")
    world.controller.run_once()
    assert world.state(node) == NodeState.CORDONED
    world.services.nodes.act(ADMIN, node, "uncordon", "the policy is relaxed now")
    world.apply(name="zoned", allow='true', action="cordon")
    assert world.controller.run_once().acted == []
    assert world.state(node) == NodeState.ACTIVE


def test_block_policies_and_down_nodes_are_left_alone(world):
    node = world.join("n3")
    world.apply(name="blocker", allow=ZONED, action="block")
    assert world.controller.run_once().evaluated == 0  # only cordon / quarantine are this controller's
    assert world.state(node) == NodeState.ACTIVE
