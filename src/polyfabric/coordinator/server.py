"""The `polyfabric server` process: the ASGI server and the controller loops, with a clean stop.

SIGINT/SIGTERM stop uvicorn; then the loops stop and make a final pass (heartbeat times flushed,
audit head signed), a leader releases its lease (a standby takes over at once), and the process
exits 0. A kill -9 loses at most the last second of heartbeat times, which are soft state: every
lifecycle change and audit record was committed before it was acknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn

from polyfabric.coordinator.bootstrap import build
from polyfabric.coordinator.gc_settings import apply_gc_threshold
from polyfabric.coordinator.settings import CoordinatorSettings
from polyfabric.observability import configure_logging

__all__ = ["serve"]

log = logging.getLogger("polyfabric.server")


class _Server(uvicorn.Server):
    """uvicorn, minus one thing: after a signal-triggered shutdown uvicorn (>= 0.29) raises the
    signal again with the default handler restored, which kills the process on SIGTERM before
    `serve` can stop the loops and make their final pass. Here the shutdown just returns.
    And before uvicorn waits for open connections, every long-poll is woken to answer at once.
    `on_serving` runs once the socket listens, before the first request is handled."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None],
                 on_serving: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown
        self._on_serving = on_serving

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._on_serving is not None and not self.should_exit:
            self._on_serving()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve(settings: CoordinatorSettings) -> int:
    configure_logging(settings.log_level)
    thresholds = apply_gc_threshold(settings.gc_threshold)
    log.debug("garbage collector thresholds %s", thresholds)
    coordinator = build(settings)
    if coordinator.admin_token_created:
        log.info("created the admin API token; it is in %s (mode 0600)", settings.admin_token_path)
    else:
        log.info("admin token file: %s", settings.admin_token_path)
    log.info("audit heads are signed with key %s (public key %s); give it to whoever verifies exports",
             coordinator.services.ctx.signer.key_id, coordinator.services.ctx.signer.public_key_b64)
    config = uvicorn.Config(
        coordinator.app, host=settings.host, port=settings.port, log_level="warning",
        access_log=False, lifespan="off", timeout_keep_alive=30, backlog=4096,
    )
    leadership = coordinator.services.ctx.leadership

    def on_serving() -> None:
        # Agents can reach this process only from now on. So the fresh grace period every node gets
        # after a restart (lest it declare the fabric Down) counts from here, and the failure detector
        # and the other controllers start only now: under load, building the coordinator and starting
        # uvicorn can take longer than the Down bound (found by tests/faults: a node declared Down by a
        # restart). A PostgreSQL coordinator loads liveness afresh when it is promoted.
        if leadership.solo:
            coordinator.services.nodes.load_liveness()
        coordinator.start()
        log.info("coordinator serving on http://%s:%d (database %s)%s", settings.host, settings.port,
                 _redact(settings.db_url), "" if leadership.solo else
                 f"; advertised as {leadership.url}, {leadership.role()} (leader lease {leadership.ttl:g}s)")

    server = _Server(config, coordinator.app.state.notifier.close, on_serving)
    try:
        server.run()
    finally:
        coordinator.stop()
        coordinator.close()
        log.info("coordinator stopped")
    return 0


def _redact(url: str) -> str:
    """Never log a database password."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url
