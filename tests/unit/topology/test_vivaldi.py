"""Vivaldi alone: on a synthetic metric (points in a plane plus access delays) the coordinates
converge, and the estimates order pairs the way the true round trips do."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.vivaldi import Config, Coordinate, VivaldiClient


def _true_rtt(points: list[tuple[float, float, float]], i: int, j: int) -> float:
    (xa, ya, ha), (xb, yb, hb) = points[i], points[j]
    return math.hypot(xa - xb, ya - yb) + ha + hb


def _simulate(points: list[tuple[float, float, float]], rounds: int, seed: int) -> list[VivaldiClient]:
    """Every node probes a random peer each round (as agents probe a sample of peers)."""
    rng = random.Random(seed)
    clients = [VivaldiClient() for _ in points]
    n = len(points)
    for _ in range(rounds):
        for i in range(n):
            j = rng.randrange(n - 1)
            j = j + 1 if j >= i else j
            rtt = _true_rtt(points, i, j) * (1.0 + 0.05 * rng.random())  # some jitter
            clients[i].update(str(j), clients[j].coordinate, rtt, rng)
    return clients


points_st = st.lists(
    st.tuples(st.floats(0.0, 0.1), st.floats(0.0, 0.1), st.floats(0.0005, 0.005)),
    min_size=4, max_size=8,
)


@settings(max_examples=25, deadline=None)
@given(points=points_st, seed=st.integers(0, 2**32 - 1))
def test_converges_on_a_synthetic_metric(points: list[tuple[float, float, float]], seed: int) -> None:
    clients = _simulate(points, 400, seed)
    errors = []
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            true = _true_rtt(points, i, j)
            est = clients[i].distance_to(clients[j].coordinate)
            errors.append(abs(est - true) / true)
    errors.sort()
    median = errors[len(errors) // 2]
    assert median < 0.25, f"median relative error {median:.2f}"
    for c in clients:
        assert c.coordinate.is_valid()
        assert c.coordinate.error < Config().error_max


@settings(max_examples=25, deadline=None)
@given(points=points_st, seed=st.integers(0, 2**32 - 1))
def test_pairs_far_apart_in_truth_are_ordered_in_the_estimates(points: list[tuple[float, float, float]],
                                                              seed: int) -> None:
    """Wherever one pair's true round trip is at least twice another's, the estimates agree."""
    clients = _simulate(points, 400, seed)
    n = len(points)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    est = {p: clients[p[0]].distance_to(clients[p[1]].coordinate) for p in pairs}
    true = {p: _true_rtt(points, *p) for p in pairs}
    wrong = [(a, b) for a in pairs for b in pairs if true[a] * 2.0 <= true[b] and est[a] >= est[b]]
    assert not wrong, f"{len(wrong)} pairs misordered"


def test_two_clusters_far_apart() -> None:
    """Three nodes in a room (1 ms), three across an ocean (80 ms): every near pair beats every far one."""
    points = [(0.0, 0.0, 0.0005), (0.001, 0.0, 0.0005), (0.0, 0.001, 0.0005),
              (0.08, 0.0, 0.0005), (0.081, 0.0, 0.0005), (0.08, 0.001, 0.0005)]
    clients = _simulate(points, 150, 7)
    near = [clients[a].distance_to(clients[b].coordinate) for a, b in ((0, 1), (0, 2), (3, 4), (4, 5))]
    far = [clients[a].distance_to(clients[b].coordinate) for a, b in ((0, 3), (1, 4), (2, 5))]
    assert max(near) < 0.01 < 0.05 < min(far)


def test_the_same_seed_gives_the_same_coordinates() -> None:
    points = [(0.0, 0.0, 0.001), (0.02, 0.0, 0.001), (0.0, 0.03, 0.001)]
    a = _simulate(points, 20, 3)
    b = _simulate(points, 20, 3)
    assert [c.coordinate for c in a] == [c.coordinate for c in b]


def test_the_latency_filter_drops_a_lone_slow_sample() -> None:
    rng = random.Random(1)
    client = VivaldiClient()
    peer = Coordinate.origin()
    for _ in range(5):
        client.update("p", peer, 0.010, rng)
    before = client.distance_to(peer)
    client.update("p", peer, 5.0, rng)  # one outlier: the median of the last three is still 10 ms
    assert abs(client.distance_to(peer) - before) < 0.005


@pytest.mark.parametrize("rtt", [0.0, -1.0, 11.0, float("nan"), float("inf")])
def test_implausible_round_trips_are_refused(rtt: float) -> None:
    client = VivaldiClient()
    before = client.coordinate
    with pytest.raises(ValidationError):
        client.update("p", Coordinate.origin(), rtt, random.Random(0))
    assert client.coordinate == before


def test_a_peer_of_another_dimensionality_is_refused() -> None:
    with pytest.raises(ValidationError):
        VivaldiClient().update("p", Coordinate((0.0, 0.0)), 0.01, random.Random(0))


def test_wire_form_round_trips_and_rejects_garbage() -> None:
    c = Coordinate((0.1, -0.2, 0.0), 0.3, 0.001, 0.0002)
    assert Coordinate.from_dict(c.to_dict()) == c
    for bad in ({}, {"vec": "x"}, {"vec": [float("nan")]}, {"vec": [0.0], "height": -1}, {"vec": [0.0] * 17}):
        with pytest.raises(ValidationError):
            Coordinate.from_dict(bad)
