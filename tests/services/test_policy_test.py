"""`policy test` predicts what the scheduler then does (services/policies.py PolicyService.test
against JobRuntime's real scheduling passes): a `remediation` policy with `action: block`, and a
CPU-share limit that counts what other domains already hold on the node.

NodeService + JobRuntime + PolicyService over a real store (SQLite), driven by a FakeClock; no
agent: a placement is the task leased to the node.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from polyfabric.coordinator.bootstrap import UuidIds
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.conditions import DetectorSettings
from polyfabric.domain.policy import parse_owner_policy
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
SETTINGS = DetectorSettings(heartbeat_interval=2.0, unreachable_after=5.0, down_after=8.0, check_interval=0.5)


@dataclass
class World:
    store: SqlStore
    services: Services
    token: str

    def join(self, name: str, cpu_millis: int = 4000, owner: dict[str, Any] | None = None, **labels: str) -> str:
        """A node of domain lab; `owner`: the owner policy its agent advertises (facts.owner_policy)."""
        facts = {"owner_policy": parse_owner_policy(owner).advertised()} if owner is not None else {}
        reg = Registration(public_key=public_key_raw(generate_private_key()), name=name, labels=dict(labels),
                           capacity=Resources(cpu_millis=cpu_millis, memory_bytes=8 << 30, slots=8), facts=facts)
        node = self.services.nodes.register(reg, self.token)
        self.services.nodes.heartbeat(node.id, {}, [])
        self.services.nodes.settle(node.id)
        return node.id

    def apply(self, **doc: Any) -> None:
        assert self.services.policies is not None
        self.services.policies.apply(ADMIN, {"scope": "network", **doc})

    def predicted(self, doc: dict[str, Any], domain: str, node_id: str) -> dict[str, Any]:
        """What `policy test` says of the job's task `a` on the node (the policies in force)."""
        assert self.services.policies is not None
        out = self.services.policies.test(ADMIN, policies=None, workflow=doc, params=None, domain=domain,
                                          nodes=[node_id])
        [entry] = out["nodes"]
        return {"foreign_cpu": entry["foreign_cpu"], **entry["tasks"]["a"]}

    def placed(self, doc: dict[str, Any], domain: str) -> tuple[str | None, str | None]:
        """Submit the job, run a scheduling pass: the node its task `a` went to (or None), and
        why it waits (or None)."""
        runtime = self.services.runtime
        job_id = runtime.submit(ADMIN, doc, {}, domain)["id"]
        runtime.schedule_once()
        [task] = self.services.jobs.tasks(ADMIN, job_id, status=None, after=None, limit=10)
        shown = self.services.jobs.task(ADMIN, task["id"])
        return shown["node_id"], shown.get("pending_reason")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = SqlStore(f"sqlite:///{tmp_path / 'polyfabric.db'}")
    migrate.upgrade(store.engine)
    ctx = ServiceContext(store=store, clock=FakeClock(), ids=UuidIds(), signer=TestSigner(), detector=SETTINGS)
    services = Services.build(ctx)
    for name in ("lab", "ops"):
        services.domains.create(ADMIN, name, "")
    token = services.tokens.create_join(ADMIN, domain="lab", ttl_s=None, uses=None).token
    yield World(store, services, token)
    store.close()


def job(name: str, cpu: str = "100m", requires: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": name, "tasks": {"a": {"command": ["true"], "resources": {"cpu": cpu}}}}
    if requires is not None:
        doc["requires"] = requires
    return doc


def test_a_blocking_remediation_policy_is_predicted_as_the_scheduler_applies_it(world):
    bad, good = world.join("bad"), world.join("good", zone="a")
    world.apply(name="zoned", kind="remediation", action="block", allow="has(node.labels.zone)",
                reason="every node declares its zone")
    for node_id, name in ((bad, "bad"), (good, "good")):
        pinned = job(f"pinned-{name}", requires=f'node.name == "{name}"')
        predicted = world.predicted(pinned, "lab", node_id)
        placed_on, waiting = world.placed(pinned, "lab")
        assert predicted["allowed"] == (placed_on == node_id), (name, predicted, placed_on, waiting)
    # What each said, in words: the violating node is ruled out by the policy, named with its version.
    denied = world.predicted(job("again", requires='node.name == "bad"'), "lab", bad)
    assert not denied["allowed"] and "zoned v1" in denied["reasons"][0]
    assert "every node declares its zone" in denied["reasons"][0]
    placed_on, waiting = world.placed(job("again", requires='node.name == "bad"'), "lab")
    assert placed_on is None and waiting is not None and "policy zoned v1" in waiting


def test_a_cpu_share_limit_counts_what_other_domains_already_hold_on_the_node(world):
    host = world.join("host", cpu_millis=4000)  # domain lab; ops may hold at most 2000m of it
    world.apply(name="half", kind="limits", limits={"max_cpu_share": 0.5}, reason="lab keeps half")
    first = job("first", cpu="1500m")
    predicted_first = world.predicted(first, "ops", host)
    assert predicted_first["allowed"] and predicted_first["foreign_cpu"] == 0
    assert world.placed(first, "ops")[0] == host

    # 1500m of ops runs there now: 1000m more would make 2500m > 2000m; 500m more is exactly 2000m.
    over, fits, own = job("over", cpu="1000m"), job("fits", cpu="500m"), job("own", cpu="1000m")
    predicted_over = world.predicted(over, "ops", host)
    assert predicted_over["foreign_cpu"] == 1500
    assert not predicted_over["allowed"] and "2500m of 4000m" in predicted_over["reasons"][0]
    placed_on, waiting = world.placed(over, "ops")
    assert placed_on is None and waiting is not None and "policy half v1" in waiting

    assert world.predicted(own, "lab", host)["allowed"]  # the node's own domain is not capped
    assert world.placed(own, "lab")[0] == host
    assert world.predicted(fits, "ops", host)["allowed"]
    assert world.placed(fits, "ops")[0] == host


def test_an_advertised_owner_policy_is_predicted_and_followed(world):
    """What a node's owner accepts, as its agent advertised it: `policy test` says so, and the
    scheduler never offers the node the rest (no attempt, so no decline), counting it by name."""
    picky = world.join("picky", owner={"accept": {"domains": ["lab"], "max_cpu_share": 0.5}, "reason": "mine"})
    pinned = job("pinned", requires='node.name == "picky"')
    denied = world.predicted(pinned, "ops", picky)
    assert not denied["allowed"] and "owner v1" in denied["reasons"][0] and "mine" in denied["reasons"][0]
    placed_on, waiting = world.placed(pinned, "ops")
    assert placed_on is None and waiting is not None and "policy owner v1 (node)" in waiting
    assert world.predicted(pinned, "lab", picky)["allowed"]
    assert world.placed(pinned, "lab")[0] == picky

    # The owner reloads a policy that takes ops too: the agent says so (hello), it is audited, and
    # the very next pass follows it (the runtime reads the nodes again; the clock has not moved).
    reloaded = parse_owner_policy({"accept": {"domains": ["lab", "ops"]}}, version=2).advertised()
    world.services.nodes.hello(picky, Registration(
        public_key=b"", name="picky", labels={}, capacity=Resources(cpu_millis=4000, memory_bytes=8 << 30, slots=8),
        facts={"owner_policy": reloaded}))
    [record] = world.services.audit.query(ADMIN, AuditQuery(action="node.owner_policy"))
    assert record.subject == f"node:{picky}" and record.details["owner_policy"]["version"] == 2
    assert world.predicted(job("later", requires='node.name == "picky"'), "ops", picky)["allowed"]
    assert world.placed(job("later", requires='node.name == "picky"'), "ops")[0] == picky


def test_an_owners_advertised_rank_steers_jobs_to_the_nodes_whose_owners_prefer_them(world):
    """The other side of a job's `rank:`: an owner's preference over jobs (its advertised `rank`)
    wins a task the nodes would otherwise tie for, and loses one it ranks below a neutral node."""
    keen = world.join("keen", owner={"rank": "job.priority >= 5 ? 100 : 0"})
    plain = world.join("plain")
    for i in range(2):
        urgent = {**job(f"urgent-{i}"), "priority": 9}
        assert world.placed(urgent, "ops")[0] == keen, i
        routine = {**job(f"routine-{i}"), "priority": 0}
        assert world.placed(routine, "ops")[0] == plain, i
