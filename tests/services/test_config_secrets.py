"""The configuration manager and the secret service as use cases, over a real SQLite store with a
FakeClock: which version reaches which node (canary, halt, rollback), and secrets that only ever
leave the store sealed to one node for one attempt."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from polyfabric.coordinator.bootstrap import UuidIds
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.errors import Conflict, NotPermitted, ValidationError
from polyfabric.domain.resources import Resources
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.security.sealing import SealError, open_sealed
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.nodes import Registration
from polyfabric.store import migrate
from polyfabric.store.unit_of_work import SqlStore
from polyfabric.testing import FakeClock
from polyfabric.testing.signer import TestSigner

ADMIN = Principal("token", "at-admin", "admin", Role.ADMIN, ("*",))
OPERATOR = Principal("token", "at-ops", "ops", Role.OPERATOR, ("test",))


@pytest.fixture
def world(tmp_path):
    store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate.upgrade(store.engine)
    ctx = ServiceContext(store=store, clock=FakeClock(), ids=UuidIds(), signer=TestSigner())
    services = Services.build(ctx)
    services.secrets.configure(tmp_path / "secrets.key")
    token = services.tokens.create_join(ADMIN, domain="test", ttl_s=None, uses=None).token
    keys, nodes = {}, []
    for name in ("a", "b", "c"):
        key = generate_private_key()
        node = services.nodes.register(Registration(public_key=public_key_raw(key), name=name,
                                                    labels={"zone": name}, capacity=Resources(slots=2)), token)
        keys[node.id] = key
        nodes.append(node.id)
    yield services, sorted(nodes), keys, tmp_path
    store.close()


def _sync(services, node_id, acked=None, failed=None):
    return services.config.agent_sync(node_id, acked, failed)


def _ack(services, node_id):
    reply = _sync(services, node_id)
    return _sync(services, node_id, {"version": reply["version"], "docs": reply["docs"], "applied": {}})


def test_canary_promote_halt_and_rollback(world):
    services, nodes, _, _ = world
    v1 = services.config.publish(ADMIN, {"max_concurrent_tasks": 2, "labels": {"t": "1"}}, "network")["version"]
    v2 = services.config.publish(OPERATOR, {"labels": {"t": "2"}}, "domain:test", canary=1)["version"]
    replies = {n: _sync(services, n) for n in nodes}
    assert replies[nodes[0]]["docs"] == [v1, v2] and replies[nodes[0]]["config"]["labels"] == {"t": "2"}
    assert replies[nodes[1]]["docs"] == [v1] and replies[nodes[1]]["config"] == {"max_concurrent_tasks": 2,
                                                                                   "labels": {"t": "1"}}
    with pytest.raises(Conflict, match="still a canary"):
        services.config.publish(ADMIN, {}, "domain:test")
    services.config.promote(ADMIN)
    assert all(_sync(services, n)["version"] == v2 for n in nodes)
    for n in nodes[:2]:
        _ack(services, n)
    # Node c cannot apply v3: it is halted, stays off every other node, and cannot be promoted.
    v3 = services.config.publish(ADMIN, {"max_concurrent_tasks": 9}, "network", canary=3)["version"]
    _sync(services, nodes[0], {"version": v3, "docs": [v1, v2, v3], "applied": {}})  # a applied it
    _sync(services, nodes[2], failed={"version": v3, "docs": [v1, v2, v3], "error": "max_concurrent_tasks: no"})
    doc = services.config.get(ADMIN, v3)
    assert doc["state"] == "halted" and nodes[2] in doc["halted_reason"]
    assert _sync(services, nodes[0])["version"] == v3  # kept where it was acknowledged
    assert _sync(services, nodes[2])["version"] == v2
    with pytest.raises(Conflict, match="halted"):
        services.config.promote(ADMIN, v3)
    status = {r["node_id"]: r for r in services.config.status(ADMIN)}
    assert status[nodes[2]]["error_version"] == v3 and status[nodes[1]]["drift"] is False
    back = services.config.rollback(ADMIN, reason="bad")
    assert back["version"] == v3 and back["now_applies"] == v1
    assert all(_sync(services, n)["version"] == v2 for n in nodes)


def test_scope_precedence_and_permissions(world):
    services, nodes, _, _ = world
    services.config.publish(ADMIN, {"labels": {"k": "net", "x": "1"}, "health": {"interval_s": 5}}, "network")
    services.config.publish(ADMIN, {"labels": {"k": "zone"}}, "selector:zone=a")
    services.config.publish(OPERATOR, {"labels": {"k": "node"}, "health": {"timeout_s": 3}}, f"node:{nodes[0]}")
    services.config.publish(OPERATOR, {"labels": {"k": "dom"}}, "domain:test")
    got = {n: _sync(services, n)["config"] for n in nodes}
    with services.ctx.store.unit_of_work(readonly=True) as uow:
        zone = {n: uow.nodes.get(n).labels["zone"] for n in nodes}
    assert got[nodes[0]]["labels"]["k"] == "node" and got[nodes[0]]["labels"]["x"] == "1"  # node scope wins
    assert got[nodes[0]]["health"] == {"interval_s": 5.0, "timeout_s": 3.0}  # section merged field by field
    for n in nodes[1:]:
        assert got[n]["labels"]["k"] == ("zone" if zone[n] == "a" else "dom")  # selector beats domain
    with pytest.raises(NotPermitted, match="admin"):
        services.config.publish(OPERATOR, {}, "network")
    with pytest.raises(NotPermitted):
        services.config.publish(OPERATOR, {}, "domain:other")
    with pytest.raises(ValidationError, match="max_concurrent_tasks"):
        services.config.publish(ADMIN, {"max_concurrent_tasks": -1}, "network")


def test_secrets_are_stored_encrypted_and_sealed_to_one_attempt(world):
    services, nodes, keys, tmp_path = world
    value = b"very-secret-value-123"
    services.secrets.set(OPERATOR, "test", "api", value)
    with services.ctx.store.unit_of_work(readonly=True) as uow:
        rows = [dict(r) for r in uow._conn.execute(sa.text("SELECT * FROM secrets")).mappings()]  # type: ignore
    assert len(rows) == 1 and value not in repr(rows).encode()
    assert value not in (tmp_path / "db.sqlite").read_bytes()
    assert [s["name"] for s in services.secrets.list(OPERATOR)] == ["api"]
    assert "ciphertext" not in services.secrets.list(OPERATOR)[0]
    lease = {"task_id": "t-1", "job_id": "j-1", "attempt": 2,
             "secret_refs": {"domain": "test", "items": {"API": ("env", "api"), "f.txt": ("file", "api")}}}
    [sealed] = services.secrets.seal_leases(nodes[0], [dict(lease)])
    assert "secret_refs" not in sealed and sealed["secrets"]["names"] == ["api"]
    plain = json.loads(open_sealed(keys[nodes[0]], sealed["secrets"]["sealed"], f"{nodes[0]}|t-1|2"))
    assert set(plain["env"]) == {"API"} and set(plain["files"]) == {"f.txt"}
    with pytest.raises(SealError):
        open_sealed(keys[nodes[1]], sealed["secrets"]["sealed"], f"{nodes[1]}|t-1|2")
    rotated = services.secrets.rotate_key(ADMIN)
    assert rotated["rewrapped"] == 1
    [again] = services.secrets.seal_leases(nodes[0], [dict(lease)])
    assert json.loads(open_sealed(keys[nodes[0]], again["secrets"]["sealed"], f"{nodes[0]}|t-1|2")) == plain
    missing = dict(lease, secret_refs={"domain": "test", "items": {"X": ("env", "nope")}})
    [failed] = services.secrets.seal_leases(nodes[0], [missing])
    assert "nope" in failed["secrets"]["error"] and "sealed" not in failed["secrets"]
    with pytest.raises(NotPermitted):
        services.secrets.set(Principal("token", "v", "v", Role.VIEWER, ("test",)), "test", "x", b"1234")
    with pytest.raises(ValidationError):
        services.secrets.set(OPERATOR, "test", "bad name", b"1234")
