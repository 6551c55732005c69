"""Scorers: rank the nodes that passed every filter, 0 (worst) to 100 (best); a profile weighs them."""

from __future__ import annotations

from polyfabric.scheduling.scorers.binpack import BinPackScorer
from polyfabric.scheduling.scorers.spread import SpreadScorer

__all__ = ["BinPackScorer", "SpreadScorer"]
