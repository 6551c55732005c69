"""A delaying TCP proxy for tests: real sockets, real latency, without netem.

Each `DelayProxy` listens on one loopback port and forwards to one target. Every chunk of bytes,
in each direction, is held for the link's one-way delay before it is written on (order is kept,
bandwidth is not limited), so a round trip through it takes at least twice the delay. The delay
may depend on the client's source address: agents that probe from their own loopback address
(127.0.0.X) each get their own link through one proxy. All proxies share one asyncio loop on a
background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["DelayProxy", "ProxyLoop"]


class ProxyLoop:
    """One event loop thread for any number of proxies."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="delay-proxy", daemon=True)
        self._thread.start()
        self.proxies: list[DelayProxy] = []

    def proxy(self, target: tuple[str, int], delay_s: float | Mapping[str, float] | Callable[[str], float],
              *, listen_host: str = "127.0.0.1", default_s: float = 0.0) -> DelayProxy:
        """Start a proxy to `target`; `delay_s` is one-way seconds, or by source host (a mapping with
        `default_s` for the rest, or a function)."""
        if isinstance(delay_s, int | float):
            fixed = float(delay_s)
            delay: Callable[[str], float] = lambda _src: fixed  # noqa: E731
        elif isinstance(delay_s, Mapping):
            table = dict(delay_s)
            delay = lambda src: table.get(src, default_s)  # noqa: E731
        else:
            delay = delay_s
        proxy = DelayProxy(target, delay)
        asyncio.run_coroutine_threadsafe(proxy.start(listen_host), self.loop).result(10)
        self.proxies.append(proxy)
        return proxy

    def close(self) -> None:
        async def shutdown() -> None:
            for proxy in self.proxies:
                await proxy.stop()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class DelayProxy:
    def __init__(self, target: tuple[str, int], delay: Callable[[str], float]) -> None:
        self.target = target
        self.delay = delay
        self.port = 0
        self.host = "127.0.0.1"
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, host: str) -> None:
        self._server = await asyncio.start_server(self._handle, host, 0)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await asyncio.sleep(0.05)  # closing transports finish on the next loop iterations

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        me = asyncio.current_task()
        if me is not None:
            self._handlers.add(me)
            me.add_done_callback(self._handlers.discard)
        peer = writer.get_extra_info("peername")
        delay = max(0.0, float(self.delay(peer[0] if peer else "")))
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except BaseException as exc:  # refused, or cancelled while connecting (the proxy stops)
            writer.close()  # else the accepted connection's transport is left to the collector
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            if isinstance(exc, OSError):
                return
            raise
        pipes = [asyncio.ensure_future(self._pipe(reader, up_writer, delay)),
                 asyncio.ensure_future(self._pipe(up_reader, writer, delay))]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.ALL_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()
            for w in (writer, up_writer):  # let the transports finish closing before the loop ends
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(w.wait_closed(), 1.0)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
        """Forward chunks, each released `delay` after it arrived (a queue keeps their order)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    with contextlib.suppress(Exception):
                        writer.write_eof()
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(release())
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except OSError:
                    data = b""
                queue.put_nowait((time.monotonic() + delay, data))
                if not data:
                    break
            await sender
        except OSError:
            pass
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
