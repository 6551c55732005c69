"""Scorers: rank the nodes that passed every filter, 0 (worst) to 100 (best); a profile weighs them."""

from __future__ import annotations

from polyfabric.scheduling.scorers.affinity import AffinityScorer
from polyfabric.scheduling.scorers.binpack import BinPackScorer
from polyfabric.scheduling.scorers.locality import LocalityScorer
from polyfabric.scheduling.scorers.spread import SpreadScorer
from polyfabric.scheduling.scorers.zone_spread import ZoneSpreadScorer

__all__ = ["AffinityScorer", "BinPackScorer", "LocalityScorer", "SpreadScorer", "ZoneSpreadScorer"]
