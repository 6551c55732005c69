"""The autoscaler's idle clock (services/pools.py) against the runtime's own record of when a node
last gave up an attempt: a pool node that ran a task between two of the autoscaler's looks (once a
second) is idle only since that task ended, not since the look before it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyfabric.coordinator.bootstrap import UuidIds
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.conditions import DetectorSettings
from polyfabric.domain.resources import Resources
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.nodes import Registration
from polyfabric.services.pools import AgentLaunch
from polyfabric.store import migrate
from polyfabric.store.unit_of_work import SqlStore
from polyfabric.testing import FakeClock
from polyfabric.testing.signer import TestSigner

ADMIN = Principal("token", "at-admin", "admin", Role.ADMIN, ("*",))
IDLE_S = 2.0


class StubProvider:
    """Starts nothing, in the local provider's place: the test plays the member's agent (it joins
    with the launch's token)."""

    name = "local"

    def __init__(self) -> None:
        self.launches: list[AgentLaunch] = []

    def start(self, launch: AgentLaunch) -> dict[str, Any]:
        self.launches.append(launch)
        return {"member": launch.member_id}

    def stop(self, handle: dict[str, Any], grace_s: float = 5.0, config: dict[str, Any] | None = None) -> None:
        pass


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Services, FakeClock, StubProvider]]:
    store = SqlStore(f"sqlite:///{tmp_path / 'polyfabric.db'}")
    migrate.upgrade(store.engine)
    clock = FakeClock()
    ctx = ServiceContext(store=store, clock=clock, ids=UuidIds(), signer=TestSigner(),
                         detector=DetectorSettings(heartbeat_interval=1, unreachable_after=1000, down_after=2000))
    services = Services.build(ctx)
    services.domains.create(ADMIN, "lab", "")
    provider = StubProvider()
    services.pools.providers["local"] = provider
    yield services, clock, provider
    store.close()


def test_a_node_that_worked_between_two_looks_is_idle_only_since_its_task_ended(world):
    services, clock, provider = world
    pools, runtime = services.pools, services.runtime
    pools.create(ADMIN, name="p", domain="lab", provider="local", min_nodes=0, max_nodes=1, labels={"role": "r"},
                 idle_s=IDLE_S, scale_up_after_s=0.0, start_timeout_s=60.0, slots=1, cpu_millis=1000,
                 memory_bytes=1 << 30, gpus=0, provider_config={})
    job = runtime.submit(ADMIN, {"name": "one", "tasks": {"a": {"command": ["true"], "constraints": {"role": "r"},
                                                                "resources": {"cpu": "100m"}}}}, {}, "lab")["id"]
    pools.autoscale_once()  # the waiting task starts a member
    [launch] = provider.launches
    node = services.nodes.register(Registration(
        public_key=public_key_raw(generate_private_key()), name="member", labels=dict(launch.labels),
        capacity=Resources(cpu_millis=1000, memory_bytes=1 << 30, slots=1)), launch.join_token)
    services.nodes.heartbeat(node.id, {}, [])
    services.nodes.settle(node.id)
    # The autoscaler links the member and, the task not placed yet, starts its idle clock.
    pools.autoscale_once()
    looked_idle_at = clock.now()
    assert _member(pools)["idle_since"] == looked_idle_at

    # Within the next second the task is placed on the node, starts and ends.
    assert runtime.schedule_once() == 1
    clock.advance(0.3)
    [task] = services.jobs.tasks(ADMIN, job, status=None, after=None, limit=10)
    at = clock.now()
    events = [{"type": "started", "task_id": task["id"], "attempt": 1, "at": at},
              {"type": "finished", "task_id": task["id"], "attempt": 1, "at": at, "status": "succeeded",
               "exit_code": 0}]
    assert not runtime.report(node.id, events, [], [])["refused"]
    ended_at = clock.now()
    assert runtime.attempts_on(node.id) == 0

    clock.advance(0.7)  # the autoscaler's next look: idle, but only since the task ended
    pools.autoscale_once()
    assert _member(pools)["idle_since"] == ended_at
    clock.advance(IDLE_S - 1.0 + 0.1)  # the idle period from the first look, not from the task's end
    pools.autoscale_once()
    assert _member(pools)["state"] == "active"
    clock.advance(0.5)  # the idle period since the task ended: it drains
    pools.autoscale_once()
    assert _member(pools)["state"] == "draining", _member(pools)


def _member(pools: Any) -> dict[str, Any]:
    [member] = pools.show(ADMIN, "p")["members"]
    return member
