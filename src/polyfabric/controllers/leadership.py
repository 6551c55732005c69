"""The two loops every coordinator on PostgreSQL runs, leader or not.

`LeaderElector` makes one election pass (`Leadership.tick`) every second on the leader (the
renewal) and every half second elsewhere (watching for an expired lease). `RoleKeeper` converges
what this coordinator *does* to what the election says, ten times a second: when it leads an epoch
it has not been promoted for, `promote(epoch)` (rebuild the live state from the store, fresh grace
for every node, start the controllers); when it no longer leads, `demote()` (stop the controllers,
forget the live state). It reads the leader's own clock-based view (`is_leader`), so a leader whose
lease ran out stops its controllers within 0.1 s even while the election pass is stuck on the
store. The two are separate loops so that a long promotion never delays a renewal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from polyfabric.services.leadership import Leadership

__all__ = ["LeaderElector", "RoleKeeper"]

log = logging.getLogger("polyfabric.leadership")


class LeaderElector:
    name = "leader-election"

    def __init__(self, leadership: Leadership) -> None:
        self._leadership = leadership
        self.period = leadership.poll_every

    def run_once(self) -> str:
        role = self._leadership.tick()
        lead = self._leadership
        self.period = lead.renew_every if lead.is_leader() else lead.poll_every
        return role


class RoleKeeper:
    name = "leader-role"
    period = 0.1

    def __init__(self, leadership: Leadership, promote: Callable[[int], None], demote: Callable[[], None]) -> None:
        self._leadership = leadership
        self._promote = promote
        self._demote = demote
        self.promoted: int | None = None  # the epoch this coordinator acts as leader for

    def run_once(self) -> int | None:
        epoch = self._leadership.epoch
        if epoch == self.promoted:
            return epoch
        if self.promoted is not None:
            self.promoted = None
            self._demote()
        if epoch is not None:
            self._promote(epoch)  # raises when it could not: the loop retries
            self.promoted = epoch
        return self.promoted
