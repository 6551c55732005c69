"""Per-shard statistics for the shard-stats examples.

`process(shard)` computes the same numbers as the python3 snippet of shard_stats.yaml: a
reproducible sample (seeded by the shard number) and its count, sum, mean, min and max.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["process"]


def process(shard: int, size: int = 1000) -> dict[str, Any]:
    """Statistics of `size` samples drawn around shard / 2; the result must be JSON-able."""
    if isinstance(shard, bool) or not isinstance(shard, int) or shard < 0:
        raise ValueError(f"shard must be a whole number >= 0, got {shard!r}")
    rng = random.Random(shard)
    xs = [rng.gauss(shard / 2, 1.0) for _ in range(size)]
    return {
        "shard": shard,
        "n": len(xs),
        "sum": sum(xs),
        "mean": sum(xs) / len(xs) if xs else 0.0,
        "min": min(xs) if xs else None,
        "max": max(xs) if xs else None,
    }
