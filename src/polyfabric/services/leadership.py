"""Which coordinator leads, and the fence every leader-only write passes.

Several coordinators may share one PostgreSQL database. All of them serve the API; one, the
leader, runs the controllers (failure detector, scheduler, audit signer, ...) and holds the job
runtime's live state. The election is a lease in the database itself, table `leadership` (one
row): `holder` (the coordinator's key id), `epoch` (the fencing token: +1 on every change of
leader), `expires_at`, and the leader's advertised URL.

- `tick()` runs every `renew_every` (1 s) on the leader and every `poll_every` (0.5 s) on the
  others, in one transaction that locks the row (FOR UPDATE): the leader extends its lease to
  now + `ttl` (5 s); any other coordinator takes over a lease that has expired, with
  `epoch = epoch + 1` (a coordinator restarted on the same data dir takes its own lease back at
  once, also with a new epoch).
- The leader believes it leads only until `ttl - margin` after the start of its last successful
  renewal, by its own clock: past that (the database is unreachable, the process was paused) it
  stops serving leader-only requests and its controllers stop, before any other coordinator can
  take the lease over (clocks are assumed to agree within `margin`, 1 s).
- An election pass waits at most `lock_wait` (1 s) for the row. A coordinator that finds it held
  past that while the lease has expired ends the expired holder's database sessions (a process
  paused inside a fenced transaction would otherwise hold the row, and the election, until it
  runs again) and takes the lease over on its next pass.
- `fence(uow)` is the first statement of every transaction that writes leader-only state (the
  job runtime's group commit, the failure detector's verdicts, operator node actions): it reads
  the epoch FOR SHARE and refuses (NotLeader) unless it is ours. A takeover's UPDATE of the row
  waits for fenced transactions in flight, and fenced transactions after it see the new epoch,
  so no write of a deposed leader lands after its successor took over, whatever the clocks say.

SQLite has one coordinator: a `solo` Leadership always leads and fences nothing.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from polyfabric.domain.errors import NotLeader
from polyfabric.services.ports import Clock, LeaseRow, Store, UnitOfWork

__all__ = ["LEASE_TTL_S", "Leadership"]

log = logging.getLogger("polyfabric.leadership")

LEASE_TTL_S = 5.0
"""How long a lease lasts without renewal; the leader renews every fifth of it."""


class Leadership:
    """This coordinator's side of the election: its lease, what it knows of the leader, the fence."""

    def __init__(self, store: Store | None, clock: Clock | None, *, holder: str, url: str = "",
                 ttl: float = LEASE_TTL_S, renew_every: float | None = None, margin: float | None = None,
                 lock_wait: float | None = None, solo: bool = False) -> None:
        if not solo and (store is None or clock is None):
            raise ValueError("an elected Leadership needs the store and a clock")
        self._store = store
        self._clock = clock
        self.holder = holder
        self.url = url.rstrip("/")
        self.ttl = ttl
        self.renew_every = renew_every if renew_every is not None else ttl / 5
        self.poll_every = self.renew_every / 2
        self.margin = margin if margin is not None else min(1.0, ttl / 5)
        # A transaction holding the lease row's lock may sit idle this long before the database
        # ends it (a paused coordinator must not hold the election up); well under the lease.
        self.idle_timeout = min(2.0, ttl * 0.4)
        # How long an election pass waits for the lease row before it looks at who holds it up.
        self.lock_wait = lock_wait if lock_wait is not None else self.renew_every
        self.solo = solo
        self._lock = threading.Lock()
        self._epoch: int | None = 0 if solo else None  # the epoch we hold, while we hold one
        self._valid_until = math.inf if solo else -math.inf  # by our clock
        self._ready_epoch: int | None = 0 if solo else None  # promotion done for this epoch
        self._leader_url: str | None = self.url if solo else None
        self._leader_until = math.inf if solo else -math.inf
        self._generation = 0  # +1 whenever an epoch is taken or dropped here
        self.seen_epoch = 0  # the newest epoch seen in the store
        self.failures = 0  # election passes in a row that could not reach the store

    @classmethod
    def single(cls, url: str = "") -> Leadership:
        """The one coordinator of a SQLite store (and of service tests): always leads."""
        return cls(None, None, holder="solo", url=url, solo=True)

    # -- what the rest of the coordinator asks ----------------------------------------------

    @property
    def epoch(self) -> int | None:
        """The epoch this coordinator holds (None: it does not lead)."""
        return self._epoch if self.is_leader() else None

    def is_leader(self) -> bool:
        """Holds a lease it may still act on (by its own clock, with the margin)."""
        if self.solo:
            return True
        assert self._clock is not None
        return self._epoch is not None and self._clock.now() < self._valid_until

    def serving(self) -> bool:
        """Leads and has finished becoming leader (state rebuilt, controllers started): the API
        accepts leader-only requests only then."""
        return self.is_leader() and self._ready_epoch is not None and self._ready_epoch == self._epoch

    def set_ready(self, epoch: int | None) -> None:
        """Promotion for `epoch` is complete (None: no longer serving as leader)."""
        with self._lock:
            self._ready_epoch = epoch

    def role(self) -> str:
        if self.serving():
            return "leader"
        return "promoting" if self.is_leader() else "follower"

    def hint(self) -> str | None:
        """Where leader-only requests should go: the leader's advertised URL, if one is known."""
        if self.solo or self.is_leader():
            return self.url or None
        assert self._clock is not None
        if self._leader_url and self._clock.now() < self._leader_until:
            return self._leader_url
        return None

    def status(self) -> dict[str, Any]:
        return {"role": self.role(), "leader": self.hint(), "epoch": self._epoch if self.is_leader() else
                (None if self.solo else self.seen_epoch)}

    def not_leader(self, what: str = "this request") -> NotLeader:
        leader = self.hint()
        where = f"the leader is {leader}" if leader else "a leader is being elected; retry in a moment"
        return NotLeader(f"this coordinator is not the leader, which {what} needs: {where}", leader)

    # -- the fence ---------------------------------------------------------------------------

    def fence(self, uow: UnitOfWork) -> None:
        """First thing in a transaction that writes leader-only state: go on only if this
        coordinator still leads, by its clock and by the epoch in the store (read FOR SHARE, so
        no takeover can commit before this transaction ends). A refusal ends this epoch here for
        good: leading again takes a new one (and a new promotion)."""
        if self.solo:
            return
        mine = self._epoch
        if mine is None or not self.is_leader():
            if mine is not None:
                self._lose(mine, "its lease ran out by its own clock")
            raise self.not_leader("this write")
        current = uow.leadership.epoch(self.idle_timeout)
        if current != mine:
            self._lose(mine, f"the store holds epoch {current}, ours was {mine}")
            raise self.not_leader("this write")

    # -- the election ------------------------------------------------------------------------

    def tick(self) -> str:
        """One election pass (renew, take over, or follow); returns the role after it.

        An epoch is valid from the moment it is taken until it is lost, without a gap: a lease
        that ran out by this coordinator's clock is never renewed, even if nobody took it over;
        it is taken again with a new epoch. So whoever acts on "leader of epoch N" (the role
        keeper, the fence) can never miss an interruption."""
        if self.solo:
            return "leader"
        assert self._store is not None and self._clock is not None
        start = self._clock.now()
        with self._lock:
            if self._epoch is not None and start >= self._valid_until:
                log.warning("no longer the leader (epoch %d): its lease ran out by this coordinator's clock "
                            "(the store was slow or unreachable, or the process was paused)", self._epoch)
                self._drop("its lease ran out by its own clock")
            held, generation = self._epoch, self._generation
        try:
            with self._store.unit_of_work() as uow:
                locked = uow.leadership.lock(self.idle_timeout, self.lock_wait)
                if locked is not None:
                    row = locked
                    kind, epoch = self._decide(uow, row, start, held)
                    uow.commit()
            if locked is None:  # the row is held by a transaction that does not end
                row, kind, epoch = self._held_up(start), "follow", None
        except Exception as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 20 == 0:
                log.warning("leader election: cannot reach the store (%s); %s", exc,
                            "still leading until the lease runs out" if self.is_leader() else "retrying")
            return self.role()
        self.failures = 0
        with self._lock:
            self.seen_epoch = max(self.seen_epoch, epoch if epoch is not None else row.epoch)
            if kind == "renewed" and self._generation == generation:
                self._valid_until = start + self.ttl - self.margin
                self._leader_until = start + self.ttl
            elif kind == "renewed":
                pass  # fenced meanwhile: this epoch is over here; the next pass takes a new one
            elif kind == "taken":
                assert epoch is not None
                previous = f"from {row.holder} (lease expired {start - row.expires_at:.1f}s ago)" if \
                    row.holder and row.holder != self.holder else "(no live leader)"
                log.info("took the leader lease over %s: epoch %d", previous, epoch)
                self._generation += 1
                self._epoch = epoch
                self._valid_until = start + self.ttl - self.margin
                self._leader_url, self._leader_until = self.url, start + self.ttl
            else:
                if self._epoch is not None:
                    log.warning("lost the leader lease: %s holds it now (epoch %d)", row.holder or "nobody",
                                row.epoch)
                    self._drop(f"{row.holder or 'nobody'} holds the lease")
                self._leader_url, self._leader_until = (row.leader_url or None), row.expires_at
        return self.role()

    def _held_up(self, now: float) -> LeaseRow:
        """The lease row stayed locked past `lock_wait`. If its lease has expired, whoever holds
        the lock is the expired leader, paused or stuck inside a fenced transaction: end its
        database sessions (their transactions roll back, nothing of theirs lands), so that the
        next pass takes the lease over. A live lease is left alone: its leader is just busy."""
        assert self._store is not None
        with self._store.unit_of_work() as uow:
            row = uow.leadership.peek()
            if row.holder and row.holder != self.holder and row.expires_at <= now:
                ended = uow.leadership.evict(row.holder)
                uow.commit()
                log.warning("the lease of %s expired %.1fs ago but its transaction still holds the lease row "
                            "(a paused or stuck process): ended its %d database session(s)", row.holder,
                            now - row.expires_at, ended)
        return row

    def _decide(self, uow: UnitOfWork, row: LeaseRow, now: float, held: int | None) -> tuple[str, int | None]:
        if held is not None and row.holder == self.holder and row.epoch == held:
            if uow.leadership.renew(self.holder, row.epoch, now + self.ttl, now, self.url):
                return "renewed", row.epoch
            return "lost", None
        # An expired lease, none yet, or one this very coordinator (same key, same data dir: an
        # earlier run, or this one before its lease ran out) held: take it over, with a new epoch
        # that fences whoever held it.
        if row.holder == self.holder or not row.holder or row.expires_at <= now:
            if uow.leadership.take(self.holder, row.epoch, now + self.ttl, now, self.url):
                return "taken", row.epoch + 1
            return "lost", None
        return "follow", None

    def release(self) -> None:
        """A clean stop: end our lease now, so that a standby takes over on its next pass."""
        if self.solo or self._epoch is None:
            return
        assert self._store is not None and self._clock is not None
        with self._lock:
            epoch = self._epoch
            self._drop("released")
        if epoch is None:
            return
        try:
            with self._store.unit_of_work() as uow:
                released = uow.leadership.release(self.holder, epoch, self._clock.now())
                uow.commit()
            if released:
                log.info("released the leader lease (epoch %d)", epoch)
        except Exception as exc:
            log.warning("could not release the leader lease (it expires by itself): %s", exc)

    def _lose(self, epoch: int, why: str) -> None:
        with self._lock:
            if self._epoch == epoch:
                log.warning("no longer the leader (epoch %d): %s", epoch, why)
                self._drop(why)

    def _drop(self, why: str) -> None:
        """Forget the epoch we held (caller holds the lock)."""
        self._epoch = None
        self._ready_epoch = None
        self._leader_url = None  # someone else leads, or nobody yet: the next election pass says who
        self._generation += 1
