"""Wake-ups for long-polls: threads say "this key changed", asyncio handlers wait for it.

Each key ("node:ID", "job:ID", "task:ID") has a version counter. A handler reads the version,
checks the store, and if there is nothing new waits for the version to move: a change between the
check and the wait is never missed.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = ["Notifier"]


class Notifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        # Set on a coordinator that does not lead: the changes happen on another one, so nothing
        # notifies here, and a long-poll looks at the store again every `max_wait` seconds.
        self.max_wait: float | None = None

    def version(self, key: str) -> int:
        return self._versions.get(key, 0)

    def notify(self, key: str) -> None:
        """Thread-safe; callable from any thread."""
        with self._lock:
            self._versions[key] = self._versions.get(key, 0) + 1
            waiters = self._waiters.pop(key, [])
        if waiters and self._loop is not None:
            self._loop.call_soon_threadsafe(_wake, waiters)

    def close(self) -> None:
        """The server is stopping: wake every long-poll now, and let none wait from here on."""
        with self._lock:
            self.closed = True
            waiters = [f for fs in self._waiters.values() for f in fs]
            self._waiters.clear()
        if waiters and self._loop is not None:
            self._loop.call_soon_threadsafe(_wake, waiters)

    def wake_all(self) -> None:
        """Wake every long-poll now (they look again, and see that this coordinator stopped leading)."""
        with self._lock:
            keys = list(self._waiters)
        for key in keys:
            self.notify(key)

    async def wait(self, key: str, seen: int, timeout: float) -> bool:
        """Wait until `key` moves past version `seen` or `timeout` passes. True if it moved."""
        if self.max_wait is not None:
            timeout = min(timeout, self.max_wait)
        if timeout <= 0 or self.closed:
            return self.version(key) > seen
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._versions.get(key, 0) > seen:
                return True
            self._waiters.setdefault(key, []).append(future)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters and future in waiters:
                    waiters.remove(future)
                    if not waiters:
                        del self._waiters[key]
            return self.version(key) > seen


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for future in waiters:
        if not future.done():
            future.set_result(None)
