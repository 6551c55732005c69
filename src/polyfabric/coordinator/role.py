"""Leader or not: what one coordinator runs, and the switch between the two.

On SQLite there is one coordinator and it always leads (`solo`): its state is loaded at start
and its controllers run until it stops; a second coordinator on the same SQLite file is refused
(an exclusive lock file next to the database).

On PostgreSQL every coordinator runs the election (`controllers.leadership`) and serves the API;
the one that leads also runs the controllers and holds the job runtime's live state:

    promote(epoch):  rebuild the runtime from the store -> every node's liveness afresh (a new
                     grace period, as after a restart) -> controllers started -> serve
                     leader-only requests (the API gate opens)
    demote():        the gate closes -> long-polls answered -> controllers stopped (no final
                     pass: a deposed leader writes nothing more) -> the live state dropped

A clean stop of the leader makes the controllers' final pass and then releases the lease, so a
standby takes over within its next election pass instead of waiting for the lease to expire.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from polyfabric.controllers.leadership import LeaderElector, RoleKeeper
from polyfabric.controllers.runtime import Controller, LoopRunner
from polyfabric.domain.errors import Conflict
from polyfabric.services.container import Services

__all__ = ["FOLLOWER_POLL_S", "CoordinatorRole", "exclusive_lock"]

log = logging.getLogger("polyfabric.leadership")

FOLLOWER_POLL_S = 0.5
"""How often a long-poll on a coordinator that does not lead looks at the store again."""


def exclusive_lock(path: Path, what: str) -> IO[str]:
    """Hold an exclusive lock on `path` for as long as the returned file stays open (the kernel
    drops it when the process dies, however it dies). Conflict if another process holds it."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise Conflict(f"another coordinator is running on {what} ({path} is locked by {holder or 'it'}); "
                           "a SQLite store has exactly one coordinator, and each coordinator needs its "
                           "own data dir") from None
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


class CoordinatorRole:
    def __init__(self, services: Services, controllers: Callable[[], list[Controller]], notifier: Any,
                 loops: LoopRunner | None = None) -> None:
        self._services = services
        self._leadership = services.ctx.leadership
        self._controllers = controllers
        self._notifier = notifier
        self._loops = loops  # solo: built with the coordinator; elected: one per term as leader
        self._keeper = RoleKeeper(self._leadership, self.promote, self.demote)
        self._election: LoopRunner | None = None
        self._listeners: list[Any] = []
        self.promotions = 0
        if not self._leadership.solo:
            notifier.max_wait = FOLLOWER_POLL_S

    @property
    def solo(self) -> bool:
        return self._leadership.solo

    def start(self) -> None:
        if self.solo:
            if self._loops is None:
                self._loops = LoopRunner(self._controllers())
            self._loops.start()
            return
        # A first election pass before serving: a coordinator that finds the lease free (a fresh
        # database, its own lease from before a restart, a released one) leads from its first request.
        self._leadership.tick()
        try:
            self._keeper.run_once()
        except Exception:
            log.exception("could not become the leader yet; the election loop retries")
        self._election = LoopRunner([LeaderElector(self._leadership), self._keeper])
        self._election.start()

    def stop(self) -> None:
        if self._election is not None:
            self._election.stop(2.0, final=False)
        if self.solo:
            if self._loops is not None:
                self._loops.stop()
            return
        if self._keeper.promoted is not None and self._loops is not None:
            self._leadership.set_ready(None)
            self._loops.stop()  # with the final pass: heartbeat times flushed, audit head signed
            self._loops = None
        self._leadership.release()

    # -- the switch ---------------------------------------------------------------------------

    def promote(self, epoch: int) -> None:
        started = time.monotonic()
        runtime = self._services.runtime
        listeners = list(runtime.attempt_listeners)
        loops: LoopRunner | None = None
        try:
            jobs = runtime.rebuild()
            nodes = self._services.nodes.load_liveness()
            if self._leadership.epoch != epoch:
                raise self._leadership.not_leader("leading")
            loops = LoopRunner(self._controllers())
            loops.start()
            self._notifier.max_wait = None
            self._leadership.set_ready(epoch)
        except BaseException:
            if loops is not None:
                loops.stop(1.0, final=False)
            runtime.attempt_listeners[:] = listeners
            runtime.reset()
            raise
        self._loops, self._listeners = loops, listeners
        self.promotions += 1
        log.info("leading (epoch %d): %d unfinished job(s) and %d node(s) loaded, controllers started in %.2fs",
                 epoch, jobs, nodes, time.monotonic() - started)

    def demote(self) -> None:
        self._leadership.set_ready(None)
        self._notifier.max_wait = FOLLOWER_POLL_S
        self._notifier.wake_all()  # agents' lease long-polls: answered "not the leader" at once
        if self._loops is not None:
            self._loops.stop(1.0, final=False)
            self._loops = None
        runtime = self._services.runtime
        runtime.attempt_listeners[:] = self._listeners
        runtime.reset()
        log.warning("no longer leading: controllers stopped, live job state dropped (the leader has it)")
