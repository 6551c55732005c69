"""What every use case needs: the store, the clock, the id source, the detector settings, and
whether this coordinator leads (the fence leader-only writes pass)."""

from __future__ import annotations

from dataclasses import dataclass, field

from polyfabric.domain.conditions import DetectorSettings
from polyfabric.services.leadership import Leadership
from polyfabric.services.liveness import LivenessTable
from polyfabric.services.ports import Clock, IdSource, Signer, Store

__all__ = ["ServiceContext"]


@dataclass
class ServiceContext:
    store: Store
    clock: Clock
    ids: IdSource
    signer: Signer
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    liveness: LivenessTable = field(default_factory=LivenessTable)
    leadership: Leadership = field(default_factory=Leadership.single)
