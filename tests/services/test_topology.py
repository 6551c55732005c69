"""TopologyService over a real store (SQLite and PostgreSQL): coordinates are kept in memory per
heartbeat and written in one batch by `flush()`; the tree counts nodes, states and free capacity;
estimates come from the coordinates; peers are sampled from nodes with an echo endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from polyfabric.domain.access import Principal, Role
from polyfabric.domain.errors import NotFound, NotPermitted, ValidationError
from polyfabric.domain.resources import Resources
from polyfabric.domain.vivaldi import Coordinate
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.services.nodes import Registration

from .test_node_health import ADMIN, World, make_world

VIEWER_B = Principal("token", "at-b", "b-viewer", Role.VIEWER, ("other",))


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'polyfabric.db'}"
    else:
        from polyfabric.testing import fresh_postgres_url, postgres_available

        if not postgres_available():
            pytest.skip("PostgreSQL is not available")
        url = fresh_postgres_url()
    w = make_world(url)
    yield w
    w.store.close()


def _join(world: World, name: str, labels: dict[str, str], cpu: int = 2000) -> str:
    reg = Registration(public_key=public_key_raw(generate_private_key()), name=name, labels=labels,
                       capacity=Resources(cpu_millis=cpu, memory_bytes=1 << 30, slots=2))
    node = world.services.nodes.register(reg, world.join_token)
    world.beat(node.id)
    return node.id


def _at(x: float) -> Coordinate:
    return Coordinate((x,) + (0.0,) * 7, 0.2, 0.0, 1e-5)  # 8 dimensions, as agents use


def test_coordinates_are_batched_and_estimates_read_them(world: World) -> None:
    topo = world.services.topology
    a = _join(world, "a", {"region": "eu", "zone": "eu-1", "rack": "r1"})
    b = _join(world, "b", {"region": "eu", "zone": "eu-1", "rack": "r2"})
    c = _join(world, "c", {"region": "us", "zone": "us-1"})
    for nid, x in ((a, 0.0), (b, 0.002), (c, 0.080)):
        answer = topo.observe(nid, _at(x), 0.01, f"127.0.0.1:{9000 + int(x * 1000)}")
        assert set(answer) == {"coordinator_coords", "peers"}
    with world.store.unit_of_work(readonly=True) as uow:
        assert uow.topology.coordinates() == {}  # nothing written per heartbeat
    assert topo.flush() == 3
    assert topo.flush() == 0  # nothing new
    with world.store.unit_of_work(readonly=True) as uow:
        stored = uow.topology.coordinates()
    assert set(stored) == {a, b, c} and stored[a]["echo"] == "127.0.0.1:9000"
    near, far = topo.rtt(ADMIN, "a", "b"), topo.rtt(ADMIN, a, "c")
    assert near["estimated_rtt_s"] < far["estimated_rtt_s"]
    assert abs(near["estimated_rtt_s"] - 0.002) < 0.001
    assert topo.rtt(ADMIN, "a", "a")["estimated_rtt_s"] == 0.0
    # an update overwrites (the flush's update path)
    topo.observe(b, _at(0.050), None, None)
    assert topo.flush() == 1
    with world.store.unit_of_work(readonly=True) as uow:
        assert uow.topology.coordinates()[b]["coords"]["vec"][0] == 0.05


def test_rtt_names_what_is_missing(world: World) -> None:
    topo = world.services.topology
    _join(world, "a", {})
    _join(world, "quiet", {})
    topo.observe(world.services.nodes.list(ADMIN)[0].id, _at(0.0), None, None)
    with pytest.raises(NotFound, match="no-such"):
        topo.rtt(ADMIN, "a", "no-such")
    with pytest.raises(NotFound, match="has not reported network coordinates"):
        topo.rtt(ADMIN, "a", "quiet")
    with pytest.raises(ValidationError):
        topo.rtt(ADMIN, "", "a")
    with pytest.raises(NotFound):  # a viewer of another domain does not see these nodes
        topo.rtt(VIEWER_B, "a", "a")


def test_tree_counts_states_and_free_capacity(world: World) -> None:
    topo = world.services.topology
    _join(world, "a", {"region": "eu", "zone": "eu-1", "rack": "r1"}, cpu=2000)
    _join(world, "b", {"region": "eu", "zone": "eu-1", "rack": "r2"}, cpu=4000)
    _join(world, "c", {"region": "eu", "zone": "eu-2"}, cpu=1000)
    _join(world, "d", {}, cpu=1000)
    world.services.nodes.act(ADMIN, "b", "cordon", "maintenance")
    tree = topo.tree(ADMIN)
    assert tree["nodes"] == 4 and tree["states"] == {"active": 3, "cordoned": 1}
    assert tree["capacity"]["cpu_millis"] == 8000
    assert tree["free"]["cpu_millis"] == 4000  # the cordoned node's capacity is not free
    regions = {r["name"]: r for r in tree["children"]}
    assert set(regions) == {"eu", "-"}
    zones = {z["name"]: z for z in regions["eu"]["children"]}
    assert zones["eu-1"]["nodes"] == 2 and zones["eu-2"]["nodes"] == 1
    racks = {r["name"]: r for r in zones["eu-1"]["children"]}
    assert [m["name"] for m in racks["r2"]["members"]] == ["b"] and racks["r2"]["members"][0]["state"] == "cordoned"
    with pytest.raises(NotPermitted):
        topo.tree(Principal("token", "x", "x", Role.VIEWER, ("other",)), domain="test")


def test_peers_are_a_sample_of_active_nodes_with_an_echo(world: World) -> None:
    topo = world.services.topology
    topo.peer_sample = 2
    ids = [_join(world, f"n{i}", {}) for i in range(5)]
    for i, nid in enumerate(ids):
        topo.observe(nid, _at(0.001 * i), None, f"127.0.0.1:{7000 + i}" if i < 4 else None)
    topo._echoes_at = 0.0  # the echo list is refreshed at most once a second
    peers = topo.peers_for(ids[0])
    assert len(peers) == 2
    assert all(p["node_id"] in ids[1:4] and p["echo"].startswith("127.0.0.1:") and p["coords"] for p in peers)


def test_the_coordinator_moves_its_own_coordinate_by_reported_round_trips(world: World) -> None:
    topo = world.services.topology
    nid = _join(world, "a", {})
    before = topo.coordinate()
    for _ in range(20):
        topo.observe(nid, _at(0.0), 0.040, None)
    after = topo.coordinate()
    assert after != before
    assert 0.02 < after.distance(_at(0.0)) < 0.08
    topo.observe(nid, _at(0.0), 99.0, None)  # an implausible sample changes nothing, refuses nothing
    assert topo.coordinate() == after
