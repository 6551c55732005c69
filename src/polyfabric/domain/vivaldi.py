"""Vivaldi network coordinates, as Serf and Consul run them (pure: no clock, no I/O; `rng` comes in).

Every node keeps a point in a small Euclidean space plus a *height* (its access-link delay, which
no path can avoid) and an *error* estimate. After each measured round trip to a peer whose
coordinate it knows, it moves a little along the line to the peer: away when the estimate was too
short, closer when too long, by a step weighted by how sure it is relative to the peer
(Dabek et al., "Vivaldi: A Decentralized Network Coordinate System", SIGCOMM 2004; the height
vectors, adaptive timestep, adjustment term, gravity and latency filter follow
hashicorp/serf/coordinate). Distances and round trips are in seconds.

    estimate(a, b) = |a.vec - b.vec| + a.height + b.height (+ a.adjustment + b.adjustment when > 0)
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from polyfabric.domain.errors import ValidationError

__all__ = ["Config", "Coordinate", "VivaldiClient", "estimate_rtt"]

_ZERO = 1.0e-6


@dataclass(frozen=True, slots=True)
class Config:
    """Serf's defaults (`coordinate.DefaultConfig`)."""

    dimensionality: int = 8
    error_max: float = 1.5
    ce: float = 0.25  # how fast the error estimate moves
    cc: float = 0.25  # the largest step, as a fraction of the estimate's error
    adjustment_window: int = 20
    height_min: float = 10.0e-6
    latency_filter_size: int = 3
    gravity_rho: float = 150.0  # seconds: how weakly the origin pulls a drifting system back


@dataclass(frozen=True, slots=True)
class Coordinate:
    """One node's position. Immutable; `VivaldiClient` replaces it on every update."""

    vec: tuple[float, ...]
    error: float = 1.5
    adjustment: float = 0.0
    height: float = 10.0e-6

    @classmethod
    def origin(cls, config: Config = Config()) -> Coordinate:
        return cls((0.0,) * config.dimensionality, config.error_max, 0.0, config.height_min)

    def is_valid(self) -> bool:
        return all(math.isfinite(x) for x in (*self.vec, self.error, self.adjustment, self.height))

    def compatible(self, other: Coordinate) -> bool:
        return len(self.vec) == len(other.vec)

    def raw_distance(self, other: Coordinate) -> float:
        return math.dist(self.vec, other.vec) + self.height + other.height

    def distance(self, other: Coordinate) -> float:
        """Estimated round trip to `other`, in seconds (Serf's `DistanceTo`)."""
        dist = self.raw_distance(other)
        adjusted = dist + self.adjustment + other.adjustment
        return adjusted if adjusted > 0.0 else dist

    def to_dict(self) -> dict[str, Any]:
        return {"vec": list(self.vec), "error": self.error, "adjustment": self.adjustment, "height": self.height}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Coordinate:
        """Parse the wire form; a malformed or non-finite coordinate is a ValidationError."""
        try:
            vec = tuple(float(x) for x in data["vec"])
            coord = cls(vec, float(data.get("error", 1.5)), float(data.get("adjustment", 0.0)),
                        float(data.get("height", 10.0e-6)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"a coordinate needs vec (numbers), error, adjustment, height: {exc}") from None
        if not 1 <= len(vec) <= 16 or not coord.is_valid() or coord.height < 0 or coord.error < 0:
            raise ValidationError("a coordinate needs 1..16 finite dimensions and a non-negative height and error")
        return coord


def estimate_rtt(a: Coordinate, b: Coordinate) -> float:
    return a.distance(b)


def _diff(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _magnitude(v: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def _unit_vector_at(a: Sequence[float], b: Sequence[float], rng: random.Random) -> tuple[list[float], float]:
    """The unit vector pointing from b to a and the distance; a random direction when they meet."""
    ret = _diff(a, b)
    mag = _magnitude(ret)
    if mag > _ZERO:
        return [x / mag for x in ret], mag
    while True:
        ret = [rng.random() - 0.5 for _ in a]
        mag = _magnitude(ret)
        if mag > _ZERO:
            return [x / mag for x in ret], 0.0


def _apply_force(config: Config, coord: Coordinate, force: float, other: Coordinate,
                 rng: random.Random) -> Coordinate:
    unit, mag = _unit_vector_at(coord.vec, other.vec, rng)
    vec = tuple(x + u * force for x, u in zip(coord.vec, unit, strict=True))
    height = coord.height
    if mag > _ZERO:
        height = (coord.height + other.height) * force / mag + coord.height
    return Coordinate(vec, coord.error, coord.adjustment, max(height, config.height_min))


@dataclass(slots=True)
class VivaldiClient:
    """One node's side of the algorithm: its coordinate, the adjustment window and a small median
    filter of the latest round trips per peer (which removes the odd slow sample)."""

    config: Config = field(default_factory=Config)
    coord: Coordinate | None = None
    _samples: list[float] = field(default_factory=list)
    _index: int = 0
    _latency: dict[str, list[float]] = field(default_factory=dict)
    updates: int = 0
    resets: int = 0

    def __post_init__(self) -> None:
        if self.coord is None:
            self.coord = Coordinate.origin(self.config)

    @property
    def coordinate(self) -> Coordinate:
        assert self.coord is not None
        return self.coord

    def forget(self, peer: str) -> None:
        self._latency.pop(peer, None)

    def distance_to(self, other: Coordinate) -> float:
        return self.coordinate.distance(other)

    def update(self, peer: str, other: Coordinate, rtt: float, rng: random.Random) -> Coordinate:
        """Take one measured round trip (seconds) to `peer`, whose coordinate is `other`.

        Implausible samples (not positive, over 10 s, a peer of another dimensionality or with a
        broken coordinate) are refused with ValidationError and change nothing."""
        if not (0.0 < rtt <= 10.0) or not math.isfinite(rtt):
            raise ValidationError(f"a round trip must be in (0, 10] seconds, got {rtt!r}")
        if not other.is_valid() or not self.coordinate.compatible(other):
            raise ValidationError("the peer's coordinate is not usable here (dimensionality or non-finite)")
        rtt = self._filtered(peer, rtt)
        self._update_vivaldi(other, rtt, rng)
        self._update_adjustment(other, rtt)
        self._update_gravity(rng)
        if not self.coordinate.is_valid():  # never keep a poisoned coordinate (Serf resets too)
            self.coord = Coordinate.origin(self.config)
            self.resets += 1
        self.updates += 1
        return self.coordinate

    def _filtered(self, peer: str, rtt: float) -> float:
        window = self._latency.setdefault(peer, [])
        window.append(rtt)
        if len(window) > self.config.latency_filter_size:
            del window[0]
        ordered = sorted(window)
        return ordered[len(ordered) // 2]

    def _update_vivaldi(self, other: Coordinate, rtt: float, rng: random.Random) -> None:
        config = self.config
        coord = self.coordinate
        dist = coord.raw_distance(other)
        wrongness = abs(dist - rtt) / rtt
        total_error = max(coord.error + other.error, _ZERO)
        weight = coord.error / total_error
        error = min(config.ce * weight * wrongness + coord.error * (1.0 - config.ce * weight), config.error_max)
        force = config.cc * weight * (rtt - dist)
        moved = _apply_force(config, Coordinate(coord.vec, error, coord.adjustment, coord.height), force, other,
                             rng)
        self.coord = moved

    def _update_adjustment(self, other: Coordinate, rtt: float) -> None:
        window = self.config.adjustment_window
        if window == 0:
            return
        coord = self.coordinate
        sample = rtt - coord.raw_distance(other)
        if len(self._samples) < window:
            self._samples.append(sample)
        else:
            self._samples[self._index] = sample
        self._index = (self._index + 1) % window
        adjustment = sum(self._samples) / (2.0 * window)
        self.coord = Coordinate(coord.vec, coord.error, adjustment, coord.height)

    def _update_gravity(self, rng: random.Random) -> None:
        config = self.config
        coord = self.coordinate
        origin = Coordinate.origin(config)
        dist = origin.distance(coord)
        force = -1.0 * (dist / config.gravity_rho) ** 2
        self.coord = _apply_force(config, coord, force, origin, rng)
