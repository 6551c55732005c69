"""Latency measurement: the agent's Vivaldi coordinates, its echo endpoint, and peer probes.

* Every heartbeat is a probe of the coordinator: its round trip is timed, and the answer carries
  the coordinator's own coordinate, so the agent moves its coordinate by it (as Serf members do
  with each other). The heartbeat then reports the agent's coordinate and that round trip.
* An agent may expose an **echo endpoint** (off by default: `--echo-port` / `--echo-listen`): a
  TCP server that sends back each 16-byte ping. It advertises its address with its heartbeats; the
  coordinator answers each heartbeat with a few random peers that have one (their address and
  coordinate). A probe thread pings one of them each interval (connection set-up is not timed; the
  least of three pings is the sample) and updates the coordinate. Probes leave from the echo
  listen address's host, so a peer sees the same source whichever way it is reached.

The algorithm itself is pure (domain/vivaldi.py); this module only does the sockets and threads.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from typing import Any

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.vivaldi import Coordinate, VivaldiClient

__all__ = ["EchoServer", "Prober", "parse_address", "ping"]

log = logging.getLogger("polyfabric.agent.probes")

PING_SIZE = 16
_MAX_EXCHANGES = 64  # per connection, then the server closes it
_MAX_CONNECTIONS = 32
_IDLE_S = 5.0


def parse_address(value: str, *, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `PORT` -> (host, port); ValueError with a readable message."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{value!r} is not HOST:PORT") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"{value!r}: the port must be 0..65535")
    return (host.strip("[]") or default_host), number


class EchoServer:
    """A tiny TCP echo service on its own thread: reads 16-byte pings, writes them back. Bounded:
    at most 32 connections, 64 pings each, closed after 5 s idle."""

    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.create_server((host, port), reuse_port=False)
        self._sock.settimeout(0.5)
        self.host, self.port = self._sock.getsockname()[:2]
        self._stop = threading.Event()
        self._active = threading.Semaphore(_MAX_CONNECTIONS)
        self._thread = threading.Thread(target=self._serve, name="pf-echo", daemon=True)

    def start(self) -> EchoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._active.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._echo, args=(conn,), name="pf-echo-conn", daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(_IDLE_S)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(_MAX_EXCHANGES):
                data = _recv_exactly(conn, PING_SIZE)
                if data is None:
                    return
                conn.sendall(data)
        except OSError:
            return
        finally:
            conn.close()
            self._active.release()


def _recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    chunks = b""
    while len(chunks) < size:
        chunk = conn.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return chunks


def ping(address: str, *, count: int = 3, timeout: float = 2.0, source: str | None = None) -> float:
    """The least round trip (seconds) of `count` pings to an echo endpoint; OSError if unreachable."""
    host, port = parse_address(address, default_host="127.0.0.1")
    src = (source, 0) if source and source not in ("0.0.0.0", "::", "") else None
    with socket.create_connection((host, port), timeout=timeout, source_address=src) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        best = float("inf")
        for i in range(count):
            payload = i.to_bytes(4, "big") + random.randbytes(PING_SIZE - 4)
            started = time.perf_counter()
            conn.sendall(payload)
            echoed = _recv_exactly(conn, PING_SIZE)
            elapsed = time.perf_counter() - started
            if echoed != payload:
                raise OSError(f"echo endpoint {address} answered something else")
            best = min(best, elapsed)
        return best


class Prober:
    """The agent's coordinate and what it needs to move it: coordinator round trips from the
    heartbeat loop, peer round trips from its own thread."""

    def __init__(self, *, echo_advertise: str | None = None, source: str | None = None,
                 interval_s: float = 5.0, rng: random.Random | None = None) -> None:
        self.echo_advertise = echo_advertise
        self.source = source
        self.interval_s = interval_s
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._vivaldi = VivaldiClient()
        self._peers: list[dict[str, Any]] = []
        self.last_rtt: float | None = None  # to the coordinator
        self._recent: list[float] = []
        self.peer_samples = 0
        self.peer_failures = 0

    def coordinate(self) -> Coordinate:
        with self._lock:
            return self._vivaldi.coordinate

    def heartbeat_fields(self) -> dict[str, Any]:
        """What the next heartbeat reports: coordinate, last round trip to the coordinator, echo."""
        fields: dict[str, Any] = {"coords": self.coordinate().to_dict()}
        if self.last_rtt is not None:
            fields["rtt_s"] = round(self.last_rtt, 6)
        if self.echo_advertise:
            fields["echo"] = self.echo_advertise
        return fields

    def on_heartbeat(self, reply: dict[str, Any], rtt: float) -> None:
        """A heartbeat's round trip and answer: move by the coordinator, keep the peer sample.
        The time the coordinator says it spent on the heartbeat is not network: it is taken off."""
        handled = reply.get("handled_s")
        if isinstance(handled, int | float) and 0.0 <= handled < rtt:
            rtt -= handled
        if not 0.0 < rtt <= 10.0:
            return
        # A heartbeat waits in the coordinator's queues too: the least of the last few round trips
        # is the network's part (queueing only ever adds).
        self._recent.append(rtt)
        del self._recent[:-5]
        rtt = min(self._recent)
        self.last_rtt = rtt
        raw = reply.get("coordinator_coords")
        if raw:
            try:
                other = Coordinate.from_dict(raw)
                with self._lock:
                    self._vivaldi.update("coordinator", other, rtt, self._rng)
            except ValidationError as exc:
                log.debug("coordinator coordinate not usable: %s", exc)
        peers = reply.get("peers")
        if isinstance(peers, list):
            with self._lock:
                self._peers = [p for p in peers if isinstance(p, dict) and p.get("echo") and p.get("coords")]

    def probe_once(self) -> bool:
        """Ping one peer of the latest sample; True if a sample was taken."""
        with self._lock:
            peers = list(self._peers)
        if not peers:
            return False
        peer = self._rng.choice(peers)
        try:
            other = Coordinate.from_dict(peer["coords"])
            rtt = ping(str(peer["echo"]), source=self.source)
        except (OSError, ValueError, ValidationError) as exc:
            self.peer_failures += 1
            log.debug("probe of %s failed: %s", peer.get("node_id"), exc)
            return False
        try:
            with self._lock:
                self._vivaldi.update(str(peer.get("node_id")), other, rtt, self._rng)
        except ValidationError:
            return False
        self.peer_samples += 1
        return True

    def run(self, stop: threading.Event) -> None:
        """Probe a peer every interval (jittered) until `stop`."""
        while not stop.wait(self.interval_s * self._rng.uniform(0.8, 1.2)):
            try:
                self.probe_once()
            except Exception:  # never let a probe take the agent down
                log.exception("peer probe failed")
