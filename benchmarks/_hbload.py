"""The heartbeat load: a real coordinator, and N simulated nodes in separate generator processes.

Shared by `benchmarks.heartbeats` and `benchmarks.detection`.

The coordinator is a real `polyfabric server` process (CoordinatorProcess) with the default
detector settings. Each simulated node has its own Ed25519 key, registers with a real signed
`POST /v1/agent/register` and then sends real signed `POST /v1/agent/heartbeat` requests over its
own keep-alive HTTP/1.1 connection, as a real agent does. Every heartbeat is signed at the moment
it is sent (its `created` parameter is the send time); nothing is signed in advance.

Why not the real agent's code: one Python agent per node would need 10,000 processes, and the
agent's signer (`security.http_signatures.sign_request`, built on `http_message_signatures`) costs
~0.55 ms per request, so one core could offer at most ~1,800 heartbeats/s. The generator
therefore builds the same RFC 9421 signature directly (`FastSigner`: SHA-256 Content-Digest, the
signature base, one Ed25519 signature), and checks at start-up that its headers are byte for byte
the ones `sign_request` makes for the same request and time (Ed25519 is deterministic). The HTTP
client is a minimal asyncio protocol on uvloop for the same reason (httpx costs ~0.3 ms a request).

Schedule: node i beats at epoch + phase_i + k * interval, with phase_i = i / N * interval (the
nodes spread evenly over the interval) plus an independent jitter of ±jitter * interval on each
beat, so the offered rate is exactly N / interval. Like the real agent, a node has at most one
heartbeat in flight: a beat whose reply comes late moves that node's next beat to the next slot
after the reply (closed loop per node), so an overloaded coordinator shows up as achieved <
offered and as latency, never as an unbounded queue made by the generator. A reply slower than
`timeout` (10 s, the agent's) counts as an error and the connection is dropped and reopened.

Latency is measured from the write of the request (after signing) to the end of the reply.
`lag` is how late the generator sent a beat after its slot: when it grows, the generator (not
the coordinator) is the bottleneck and more `--generators` are needed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import math
import multiprocessing
import os
import random
import shutil
import tempfile
import time
import traceback
import urllib.parse
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmarks._common import ProcessSampler, log, percentile, pin_to_cpus

__all__ = ["FastSigner", "LoadConfig", "run_load"]

HEARTBEAT_PATH = "/v1/agent/heartbeat"
REGISTER_PATH = "/v1/agent/register"


# --------------------------------------------------------------------------------------------
# signing: the same bytes as polyfabric.security.http_signatures.sign_request, made directly


class FastSigner:
    """RFC 9421 signature headers for one node, identical to `sign_request`'s output."""

    __slots__ = ("_key", "_key_id")

    def __init__(self, private_key: Any, key_id: str) -> None:
        self._key = private_key
        self._key_id = key_id

    def headers(self, method: str, url: str, body: bytes, now: float) -> tuple[str, str, str]:
        """(Content-Digest, Signature-Input, Signature) for a request; `url` already canonical."""
        digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"
        params = (f'("@method" "@target-uri" "content-digest");created={int(now)};'
                  f'keyid="{self._key_id}";alg="ed25519"')
        base = (f'"@method": {method}\n"@target-uri": {url}\n"content-digest": {digest}\n'
                f'"@signature-params": {params}').encode("ascii")
        signature = base64.b64encode(self._key.sign(base)).decode("ascii")
        return digest, f"pf={params}", f"pf=:{signature}:"


def check_fast_signer(url: str) -> None:
    """Refuse to run unless FastSigner makes exactly the headers the real signer makes."""
    from polyfabric.agent.identity import NodeIdentity
    from polyfabric.security.http_signatures import canonical_url, sign_request, verify_request
    from polyfabric.security.keys import generate_private_key

    identity = NodeIdentity.from_private_key(generate_private_key())
    body = orjson.dumps({"telemetry": {"cpu_percent": 1.5}, "health": None, "seq": 7})
    now = time.time()
    real = sign_request(method="POST", url=url, headers={"content-type": "application/json"}, body=body,
                        private_key=identity.private_key, key_id=identity.node_id, now=now)
    fast = FastSigner(identity.private_key, identity.node_id).headers("POST", canonical_url(url), body, now)
    expected = (real["Content-Digest"], real["Signature-Input"], real["Signature"])
    if fast != expected:
        raise RuntimeError(f"FastSigner differs from sign_request:\n{fast}\n{expected}")
    verify_request(method="POST", url=url, headers={"Content-Digest": fast[0], "Signature-Input": fast[1],
                                                    "Signature": fast[2]},
                   body=body, resolve_key=lambda _k: identity.public_key_raw, now=now)


# --------------------------------------------------------------------------------------------
# a minimal HTTP/1.1 keep-alive client


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight; replies go to `on_reply`."""

    __slots__ = ("_buf", "closed", "node", "transport")

    def __init__(self, node: _SimNode) -> None:
        self.node = node
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                length = 0
            else:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17:stop if stop >= 0 else len(head)].strip())
            total = end + 4 + length
            if len(buf) < total:
                return
            status = int(head[9:12])
            body = bytes(buf[end + 4:total])
            keep = b"\r\nconnection: close" not in head
            del buf[:total]
            self.node.on_reply(status, body)
            if not keep:
                self.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        if not was_closed:
            self.node.on_conn_lost(self)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


# --------------------------------------------------------------------------------------------
# the generator process


@dataclass
class _Stats:
    window: tuple[float, float] = (math.inf, math.inf)
    latencies_ms: array = field(default_factory=lambda: array("f"))
    lags_ms: array = field(default_factory=lambda: array("f"))
    sent: int = 0
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    states: Counter = field(default_factory=Counter)
    in_flight_window: int = 0

    def in_window(self, t: float) -> bool:
        return self.window[0] <= t < self.window[1]


class _SimNode:
    __slots__ = ("conn", "due", "gen", "index", "last_ack", "last_latency", "last_send", "name", "node_id",
                 "phase", "sent_at", "sent_wall", "signer", "silenced", "slot", "startup_future", "timer")

    def __init__(self, gen: _Generator, index: int, phase: float) -> None:
        from polyfabric.domain.ids import node_id_from_public_key
        from polyfabric.security.keys import generate_private_key, public_key_raw

        self.gen = gen
        self.index = index
        self.phase = phase
        key = generate_private_key()
        self.node_id = node_id_from_public_key(public_key_raw(key))
        self.signer = FastSigner(key, self.node_id)
        self.name = f"sim-{gen.run_id}-{index:05d}"
        self.conn: _Conn | None = None
        self.sent_at = 0.0  # perf_counter of the request in flight; 0 when none
        self.sent_wall = 0.0
        self.due = 0.0
        self.last_send = 0.0
        self.last_ack = 0.0
        self.last_latency = 0.0
        self.silenced = False
        self.slot = -(2**62)
        self.startup_future: asyncio.Future | None = None
        self.timer: asyncio.TimerHandle | None = None

    @property
    def public_key_b64(self) -> str:
        from polyfabric.security.keys import b64e, public_key_raw

        return b64e(public_key_raw(self.signer._key))

    # -- sending

    async def connect(self) -> None:
        loop = self.gen.loop
        _, conn = await loop.create_connection(lambda: _Conn(self), self.gen.host, self.gen.port)
        self.conn = conn

    def _request(self, path: str, body: bytes) -> bytes:
        now = time.time()
        digest, sig_input, signature = self.signer.headers("POST", self.gen.base_url + path, body, now)
        return (f"POST {path} HTTP/1.1\r\nHost: {self.gen.host_header}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nContent-Digest: {digest}\r\nSignature-Input: {sig_input}\r\n"
                f"Signature: {signature}\r\n\r\n").encode("ascii") + body

    async def call(self, path: str, body: bytes) -> tuple[int, bytes]:
        """Start-up requests (register, the first heartbeat): awaited one by one."""
        if self.conn is None or self.conn.closed:
            await self.connect()
        assert self.conn is not None and self.conn.transport is not None
        self.startup_future = self.gen.loop.create_future()
        self.sent_at = time.perf_counter()
        self.conn.transport.write(self._request(path, body))
        try:
            return await asyncio.wait_for(self.startup_future, self.gen.timeout)
        finally:
            self.startup_future = None
            self.sent_at = 0.0

    def beat(self) -> None:
        """Steady state: send one heartbeat now (called by the loop's timer at the node's slot)."""
        self.timer = None
        if self.silenced:
            return
        gen = self.gen
        conn = self.conn
        if conn is None or conn.closed:
            gen.loop.create_task(self._reconnect_and_beat())
            return
        body = gen.heartbeat_body()
        request = self._request(HEARTBEAT_PATH, body)
        wall = time.time()
        stats = gen.stats
        if stats.in_window(wall):
            stats.sent += 1
            stats.in_flight_window += 1
            stats.lags_ms.append((wall - self.due) * 1000.0)
        self.sent_wall = wall
        self.last_send = wall
        self.sent_at = time.perf_counter()
        conn.transport.write(request)  # type: ignore[union-attr]

    async def _reconnect_and_beat(self) -> None:
        try:
            await self.connect()
        except OSError as exc:
            self.gen.count_error(self.sent_wall or time.time(), f"connect: {type(exc).__name__}")
            self.schedule_next(time.time() + 1.0)
            return
        self.beat()

    def schedule_next(self, after: float) -> None:
        """The next slot of this node strictly after `after`, with this beat's jitter."""
        if self.silenced:
            return
        gen = self.gen
        interval = gen.interval
        # The slot after this node's last one, or the first one still ahead when a reply came late.
        k = max(self.slot + 1, math.floor((after - gen.epoch - self.phase) / interval) + 1)
        self.slot = k
        due = gen.epoch + self.phase + k * interval + gen.rng.uniform(-gen.jitter, gen.jitter) * interval
        if due <= after:
            due = after
        self.due = due
        self.timer = gen.loop.call_at(gen.loop.time() + (due - time.time()), self.beat)

    # -- replies

    def on_reply(self, status: int, body: bytes) -> None:
        elapsed = time.perf_counter() - self.sent_at
        if self.startup_future is not None:
            if not self.startup_future.done():
                self.startup_future.set_result((status, body))
            return
        if self.sent_at == 0.0:
            return  # a reply to a request already given up on
        self.sent_at = 0.0
        now = time.time()
        gen = self.gen
        stats = gen.stats
        if stats.in_window(self.sent_wall):
            stats.in_flight_window -= 1
            if status == 200:
                stats.ok += 1
                stats.latencies_ms.append(elapsed * 1000.0)
                if gen.dump is not None:
                    gen.dump.append((self.sent_wall, elapsed * 1000.0, self.index))
                with contextlib.suppress(Exception):
                    stats.states[orjson.loads(body)["state"]] += 1
            else:
                stats.errors[f"http {status}"] += 1
        if status == 200:
            self.last_ack = now
            self.last_latency = elapsed
        self.schedule_next(now)

    def on_conn_lost(self, conn: _Conn) -> None:
        if self.startup_future is not None and not self.startup_future.done():
            self.startup_future.set_exception(ConnectionError("connection lost"))
            return
        if self.sent_at and not self.silenced:
            self.gen.count_error(self.sent_wall, "connection lost")
            self.sent_at = 0.0
            self.schedule_next(time.time())

    def drop_conn(self) -> None:
        if self.conn is not None:
            self.conn.closed = True  # not a loss to report again
            self.conn.close()
            self.conn = None

    def give_up(self) -> None:
        """No reply within the timeout: an error; drop the connection and go on like an agent."""
        self.gen.count_error(self.sent_wall, "timeout")
        self.sent_at = 0.0
        self.drop_conn()
        self.schedule_next(time.time())


class _Generator:
    def __init__(self, cfg: dict[str, Any], pipe: Any) -> None:
        self.cfg = cfg
        self.pipe = pipe
        self.loop = asyncio.get_event_loop()
        parsed = urllib.parse.urlsplit(cfg["url"])
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.host_header = parsed.netloc
        self.base_url = f"http://{parsed.netloc}"
        self.run_id = cfg["run_id"]
        self.interval = cfg["interval"]
        self.jitter = cfg["jitter"]
        self.epoch = cfg["epoch"]
        self.timeout = cfg["timeout"]
        self.rng = random.Random(cfg["generator"])
        self.stats = _Stats()
        self.seq = 0
        self.telemetry = cfg["telemetry"]
        self.health = cfg["health"]
        total = cfg["nodes_total"]
        self.nodes = [_SimNode(self, i, i / total * self.interval) for i in cfg["indices"]]
        self.registration_ms = array("f")
        self.activation_ms = array("f")
        self.startup_errors: Counter = Counter()
        self.dump: list[tuple[float, float, int]] | None = [] if os.environ.get("PF_BENCH_DUMP") else None

    def heartbeat_body(self) -> bytes:
        self.seq += 1
        tel = dict(self.telemetry)
        tel["cpu_percent"] = round(self.rng.uniform(0, 100), 1)
        tel["load1"] = round(self.rng.uniform(0, 4), 2)
        return orjson.dumps({"telemetry": tel, "health": self.health, "seq": self.seq})

    def count_error(self, sent_wall: float, kind: str) -> None:
        if self.stats.in_window(sent_wall):
            self.stats.errors[kind] += 1
            self.stats.in_flight_window -= 1

    # -- phases

    async def start_node(self, node: _SimNode, sem: asyncio.Semaphore) -> None:
        async with sem:
            for attempt in range(5):
                try:
                    body = orjson.dumps({"join_token": self.cfg["join_token"], "public_key": node.public_key_b64,
                                         "node": {**self.cfg["declaration"], "name": node.name}})
                    started = time.perf_counter()
                    status, _ = await node.call(REGISTER_PATH, body)
                    if status == 201:
                        self.registration_ms.append((time.perf_counter() - started) * 1000)
                        break
                    if status == 409:  # registered by an attempt whose reply was lost
                        break
                    self.startup_errors[f"register http {status}"] += 1
                except (TimeoutError, OSError, ConnectionError) as exc:
                    self.startup_errors[f"register {type(exc).__name__}"] += 1
                    node.drop_conn()
                await asyncio.sleep(0.5 * (attempt + 1))
            else:
                return
            for _ in range(5):  # the first heartbeat: Pending -> Active (a committed transition)
                try:
                    started = time.perf_counter()
                    status, _ = await node.call(HEARTBEAT_PATH, self.heartbeat_body())
                    if status == 200:
                        self.activation_ms.append((time.perf_counter() - started) * 1000)
                        node.last_ack = time.time()
                        node.last_send = node.last_ack - (time.perf_counter() - started)
                        break
                    self.startup_errors[f"activate http {status}"] += 1
                except (TimeoutError, OSError, ConnectionError) as exc:
                    self.startup_errors[f"activate {type(exc).__name__}"] += 1
                    node.drop_conn()
                await asyncio.sleep(0.5)
        if not self.cfg.get("hold"):
            node.schedule_next(time.time())

    async def sweeper(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            cutoff = time.perf_counter() - self.timeout
            for node in self.nodes:
                if node.sent_at and node.startup_future is None and node.sent_at < cutoff:
                    node.give_up()

    async def run(self) -> None:
        sweeper = self.loop.create_task(self.sweeper())
        started = time.time()
        sem = asyncio.Semaphore(self.cfg["startup_concurrency"])
        await asyncio.gather(*(self.start_node(node, sem) for node in self.nodes))
        self.pipe.send(("registered", {
            "nodes": len(self.nodes), "seconds": time.time() - started,
            "registration_ms": self.registration_ms.tobytes(), "activation_ms": self.activation_ms.tobytes(),
            "errors": dict(self.startup_errors),
        }))
        commands: asyncio.Queue = asyncio.Queue()
        self.loop.add_reader(self.pipe.fileno(), lambda: commands.put_nowait(self.pipe.recv()))
        while True:
            command = await commands.get()
            if command[0] == "stop":
                break
            if command[0] == "go":  # the coordinator was restarted: reconnect and heartbeat from now on
                now = time.time()
                for node in self.nodes:
                    node.drop_conn()
                    node.schedule_next(now)
            if command[0] == "window":
                _, t0, t1, silence = command
                self.loop.create_task(self.measure(t0, t1, silence))
        sweeper.cancel()
        for node in self.nodes:
            if node.timer is not None:
                node.timer.cancel()
            if node.conn is not None:
                node.conn.close()

    async def measure(self, t0: float, t1: float, silence: tuple[float, list[int]] | None) -> None:
        import psutil

        self.stats.window = (t0, t1)
        await asyncio.sleep(max(0.0, t0 - time.time()))
        me = psutil.Process()
        cpu0 = sum(me.cpu_times()[:2])
        if silence is not None:
            self.loop.create_task(self.silence(*silence))
        await asyncio.sleep(max(0.0, t1 - time.time()))
        cpu = 100.0 * (sum(me.cpu_times()[:2]) - cpu0) / (t1 - t0)
        deadline = time.time() + self.timeout + 1.0
        while self.stats.in_flight_window > 0 and time.time() < deadline:
            await asyncio.sleep(0.05)
        s = self.stats
        if self.dump is not None:
            Path(f"{os.environ['PF_BENCH_DUMP']}.{self.cfg['generator']}").write_text(
                "\n".join(f"{t:.4f} {ms:.2f} {i}" for t, ms, i in self.dump))
        self.pipe.send(("results", {
            "sent": s.sent, "ok": s.ok, "errors": dict(s.errors), "states": dict(s.states),
            "latencies_ms": s.latencies_ms.tobytes(), "lags_ms": s.lags_ms.tobytes(),
            "unanswered": s.in_flight_window, "generator_cpu_percent": cpu,
        }))

    async def silence(self, at: float, indices: list[int]) -> None:
        """Stop heartbeating these nodes at `at`, as if their agents were killed."""
        await asyncio.sleep(max(0.0, at - time.time()))
        chosen = [n for n in self.nodes if n.index in set(indices)]
        for node in chosen:
            node.silenced = True
            if node.timer is not None:
                node.timer.cancel()
                node.timer = None
        while any(n.sent_at for n in chosen):  # a heartbeat in flight still counts: wait for its reply
            await asyncio.sleep(0.01)
        for node in chosen:
            if node.conn is not None:
                node.conn.close()
        self.pipe.send(("silenced", {n.node_id: {"last_send": n.last_send, "last_ack": n.last_ack,
                                                 "last_latency_ms": n.last_latency * 1000.0,
                                                 "silenced_at": at} for n in chosen}))


def generator_main(cfg: dict[str, Any], pipe: Any) -> None:
    """Entry point of a generator process (multiprocessing, spawn)."""
    try:
        pin_to_cpus(cfg.get("cpus"))
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        gen = _Generator(cfg, pipe)
        loop.run_until_complete(gen.run())
    except BaseException:
        with contextlib.suppress(Exception):
            pipe.send(("error", traceback.format_exc()))
        raise


# --------------------------------------------------------------------------------------------
# the orchestration


@dataclass
class LoadConfig:
    nodes: int = 1000
    duration: float = 30.0
    db: str | None = None
    generators: int = 1
    interval: float = 2.0
    jitter: float = 0.05
    timeout: float = 10.0
    startup_concurrency: int = 32
    coordinator_cpus: list[int] | None = None
    generator_cpus: list[int] | None = None
    startup: str = "restart"  # or "live": see run_load
    silence_count: int = 0
    silence_after: float = 5.0
    detection_timeout: float = 60.0
    keep: bool = False
    pythonpath: str | None = None  # import polyfabric for the coordinator from here (A/B of a change)
    nice: int = 0  # raise (negative) the priority of the coordinator and the generators on a shared machine
    quiet_wait: float = 300.0  # wait up to this long for other processes to calm down before a run
    profile: str | None = None  # py-spy output path (speedscope/flamegraph by extension)


def _default_cpus(cfg: LoadConfig) -> tuple[list[int] | None, list[int] | None]:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return cfg.coordinator_cpus, cfg.generator_cpus
    return cfg.coordinator_cpus or cpus[:1], cfg.generator_cpus or cpus[1:]


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0) + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def wait_until_quiet(max_wait: float = 300.0, threshold: float = 25.0) -> float:
    """Wait (up to max_wait s) until other processes use under `threshold` % CPU; the seconds waited."""
    started = time.time()
    said = False
    while time.time() - started < max_wait:
        t0, b0 = time.time(), _busy_seconds()
        time.sleep(2.0)
        busy = 100.0 * (_busy_seconds() - b0) / (time.time() - t0)
        if busy < threshold:
            return time.time() - started
        if not said:
            log(f"the machine is busy ({busy:.0f}% CPU used by others); waiting up to {max_wait:.0f}s for it to calm")
            said = True
    log("the machine stayed busy; running anyway (see others_cpu_percent)")
    return time.time() - started


def _pin_process(pid: int, cpus: list[int] | None, nice: int = 0) -> None:
    """Pin every thread of a running process, and set its nice value (new threads inherit both
    from the thread that creates them; on Linux both are per thread). With autogroup scheduling
    (each session its own group, and the coordinator starts a session of its own) a nice value
    only ranks threads within their group, so the group's nice is set too."""
    if nice:  # where there are no autogroups, or it is not allowed, the per-thread nice still applies
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    for tid in os.listdir(f"/proc/{pid}/task"):
        if cpus is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), cpus)
        if nice:
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            except OSError as exc:
                log(f"cannot set nice {nice} ({exc}); running at the default priority")
                nice = 0


def _summary(values: array) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 50), "p95": percentile(ordered, 95), "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else None,
        "mean": sum(ordered) / len(ordered) if ordered else None,
    }


def _from_bytes(chunks: list[bytes]) -> array:
    out = array("f")
    for chunk in chunks:
        out.frombytes(chunk)
    return out


def _agent_payload_templates() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """What a real agent on this machine declares and reports, to give the simulated ones real sizes."""
    from polyfabric import __version__
    from polyfabric.agent import fingerprint, health, telemetry

    scratch = Path(tempfile.mkdtemp(prefix="pf-bench-agent-"))
    try:
        detected = fingerprint.detect(scratch, {})
        tel = telemetry.sample(scratch)
        checks = health.run_checks(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    declaration = {"labels": {"bench": "heartbeats"}, "capacity": detected["capacity"],
                   "facts": {"network": detected.get("network", {}), "platform": detected.get("platform", {})},
                   "agent_version": __version__}
    return tel, checks, declaration


_backlog: dict[int, list[tuple[str, Any]]] = {}


def _recv(pipe: Any, kind: str, timeout: float, procs: list[Any]) -> dict[str, Any]:
    """The next message of `kind` from one generator; others are kept for later calls."""
    pending = _backlog.setdefault(id(pipe), [])
    for i, (k, payload) in enumerate(pending):
        if k == kind:
            del pending[i]
            return payload
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pipe.poll(0.2):
            message = pipe.recv()
            if message[0] == "error":
                raise RuntimeError(f"generator failed:\n{message[1]}")
            if message[0] == kind:
                return message[1]
            pending.append(message)
        elif any(not p.is_alive() for p in procs):
            raise RuntimeError("a generator process died")
    raise TimeoutError(f"no {kind!r} from a generator within {timeout:.0f}s")


def _list_all(api: Any, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after: Any = None
    while True:
        page = api.get(path, after=after, **params)
        out.extend(page)
        if len(page) < params.get("limit", 500):
            return out
        after = page[-1][key]


def _api(coordinator: Any) -> Any:
    """An admin client with a long timeout: an overloaded coordinator answers late, not never."""
    from polyfabric.client import ApiClient

    return ApiClient(coordinator.url, coordinator.admin_token, timeout=180.0)


def node_transitions(api: Any, since: float) -> list[dict[str, Any]]:
    """Every `node.transition` in the audit chain since `since`, oldest first."""
    records = _list_all(api, "/v1/audit", "seq", kind="node.transition", since=since, limit=5000)
    for r in records:
        r["details"] = r.get("details") or {}
    return sorted(records, key=lambda r: r["seq"])


def run_load(cfg: LoadConfig) -> dict[str, Any]:
    """One run: coordinator up, nodes registered, `duration` s of heartbeats measured, figures back."""
    from polyfabric.domain.conditions import DetectorSettings
    from polyfabric.testing.processes import CoordinatorProcess

    coordinator_cpus, generator_cpus = _default_cpus(cfg)
    detector = DetectorSettings()  # the server's defaults: heartbeat 2 s, Unreachable 5 s, Down 8 s
    workdir = Path(tempfile.mkdtemp(prefix="pf-bench-hb-"))
    result: dict[str, Any] = {"nodes": cfg.nodes, "db": "postgresql" if cfg.db else "sqlite", "startup": cfg.startup,
                              "nice": cfg.nice,
                              "generators": cfg.generators, "duration_s": cfg.duration,
                              "offered_per_s": cfg.nodes / cfg.interval}
    if cfg.startup not in ("live", "restart"):
        raise ValueError(f"startup must be 'live' or 'restart', not {cfg.startup!r}")
    restart = cfg.startup == "restart"
    # "restart": the nodes register and make their first heartbeat (Pending -> Active) under a
    # detector that never declares Down, then the coordinator is restarted on the same database
    # with the default detector and every node heartbeats from then on (after a restart each node
    # gets a fresh grace period). This measures N nodes in steady state even where N nodes could
    # not all join while the others heartbeat. "live": each node heartbeats as soon as it has
    # registered, with the default detector throughout (start-up then includes that load).
    relaxed = {"unreachable_after": 3000.0, "down_after": 3600.0} if restart else {
        "unreachable_after": detector.unreachable_after, "down_after": detector.down_after}
    coordinator = CoordinatorProcess(workdir / "coordinator", cfg.db, heartbeat_interval=detector.heartbeat_interval,
                                     **relaxed)
    procs: list[Any] = []
    pipes: list[Any] = []
    sampler: ProcessSampler | None = None
    profiler: Any = None
    own_cpus = pin_to_cpus(generator_cpus)
    if cfg.quiet_wait > 0:
        result["waited_for_quiet_s"] = round(wait_until_quiet(cfg.quiet_wait), 1)
    env = ({"PYTHONPATH": os.pathsep.join([cfg.pythonpath, os.environ.get("PYTHONPATH", "")])}
           if cfg.pythonpath else None)
    coordinator.env = env
    try:
        t_start = time.time()
        coordinator.start(timeout=60)
        _pin_process(coordinator.pid, coordinator_cpus, cfg.nice)
        result["coordinator_start_s"] = time.time() - t_start
        sampler = ProcessSampler(coordinator.pid).start()
        check_fast_signer(coordinator.url + HEARTBEAT_PATH)
        join_token = coordinator.join_token(domain="bench", uses=None)
        telemetry, health, declaration = _agent_payload_templates()
        api = _api(coordinator)
        ctx = multiprocessing.get_context("spawn")
        run_id = os.urandom(3).hex()
        epoch = time.time()
        for g in range(cfg.generators):
            ours, theirs = ctx.Pipe()
            gen_cfg = {
                "url": coordinator.url, "run_id": run_id, "generator": g, "nodes_total": cfg.nodes,
                "indices": list(range(g, cfg.nodes, cfg.generators)), "interval": cfg.interval,
                "jitter": cfg.jitter, "epoch": epoch, "timeout": cfg.timeout, "join_token": join_token,
                "declaration": declaration, "telemetry": telemetry, "health": health,
                "startup_concurrency": max(1, cfg.startup_concurrency // cfg.generators), "cpus": generator_cpus,
                "hold": restart,
            }
            proc = ctx.Process(target=generator_main, args=(gen_cfg, theirs), name=f"pf-bench-gen-{g}", daemon=True)
            proc.start()
            _pin_process(proc.pid, None, cfg.nice)
            procs.append(proc)
            pipes.append(ours)
        log(f"{cfg.nodes} nodes: registering (coordinator pid {coordinator.pid} on CPUs {coordinator_cpus}, "
            f"{cfg.generators} generator(s) on CPUs {generator_cpus})")
        t_reg = time.time()
        startup_timeout = 120 + cfg.nodes * 0.05
        registered = [_recv(p, "registered", startup_timeout, procs) for p in pipes]
        result["startup_s"] = time.time() - t_reg
        reg_ms = _from_bytes([r["registration_ms"] for r in registered])
        act_ms = _from_bytes([r["activation_ms"] for r in registered])
        result["registered"] = len(reg_ms)
        result["registrations_per_s"] = len(reg_ms) / result["startup_s"] if result["startup_s"] else None
        result["register_ms"] = _summary(reg_ms)
        result["activate_ms"] = _summary(act_ms)
        restarted_at = 0.0
        startup_errors: Counter = Counter()
        for r in registered:
            startup_errors.update(r["errors"])
        result["startup_errors"] = dict(startup_errors)
        log(f"registered {len(reg_ms)} nodes in {result['startup_s']:.1f}s "
            f"(p50 {result['register_ms']['p50'] or 0:.1f} ms); heartbeating")
        if restart:
            api.close()
            sampler.stop()
            coordinator.stop(timeout=60)
            coordinator = CoordinatorProcess(
                workdir / "coordinator", cfg.db, port=coordinator.port, heartbeat_interval=detector.heartbeat_interval,
                unreachable_after=detector.unreachable_after, down_after=detector.down_after)
            coordinator.env = env
            t_restart = time.time()
            coordinator.start(timeout=120)
            _pin_process(coordinator.pid, coordinator_cpus, cfg.nice)
            result["restart_s"] = time.time() - t_restart
            sampler = ProcessSampler(coordinator.pid).start()
            api = _api(coordinator)
            restarted_at = time.time()
            for p in pipes:
                p.send(("go",))
            log(f"coordinator restarted with the default detector in {result['restart_s']:.1f}s; all nodes heartbeat")

        # Let every node settle into its slot, then measure.
        t0 = time.time() + cfg.interval + 1.0
        t1 = t0 + cfg.duration
        silence = None
        silenced_ids: list[int] = []
        if cfg.silence_count:
            silenced_ids = [i * cfg.nodes // cfg.silence_count for i in range(cfg.silence_count)]
            silence = (t0 + cfg.silence_after, silenced_ids)
        for p in pipes:
            p.send(("window", t0, t1, silence))
        time.sleep(max(0.0, t0 - time.time()))
        sampler.mark()
        machine_busy0 = _busy_seconds()
        if cfg.profile:
            profiler = _start_profiler(coordinator.pid, cfg.profile, cfg.duration)
        detection: dict[str, Any] | None = None
        if silence is not None:
            detection = _watch_detection(api, pipes, procs, silence[0], cfg)
        time.sleep(max(0.0, t1 - time.time()))
        result["coordinator_cpu_percent"] = sampler.window_cpu_percent()
        result["machine_cpu_percent"] = 100.0 * (_busy_seconds() - machine_busy0) / (time.time() - t0)
        result["coordinator_rss_window_peak_mb"] = sampler.window_peak_rss / 2**20
        results = [_recv(p, "results", cfg.timeout + 30, procs) for p in pipes]
        if profiler is not None:
            _stop_profiler(profiler)
        lat = _from_bytes([r["latencies_ms"] for r in results])
        lags = _from_bytes([r["lags_ms"] for r in results])
        errors: Counter = Counter()
        states: Counter = Counter()
        for r in results:
            errors.update(r["errors"])
            states.update(r["states"])
        result.update({
            "sent": sum(r["sent"] for r in results),
            "ok": sum(r["ok"] for r in results),
            "achieved_per_s": sum(r["ok"] for r in results) / cfg.duration,
            "errors": sum(errors.values()) + sum(r["unanswered"] for r in results),
            "error_kinds": dict(errors),
            "reply_states": dict(states),
            "latency_ms": _summary(lat),
            "generator_lag_ms": _summary(lags),
            "generator_cpu_percent": [round(r["generator_cpu_percent"], 1) for r in results],
        })
        # Coordinator CPU per answered heartbeat (health passes and flushes included): a cost that
        # other processes on a shared machine disturb less than latency.
        ok = result["ok"]
        result["coordinator_cpu_ms_per_heartbeat"] = (
            result["coordinator_cpu_percent"] / 100.0 * cfg.duration / ok * 1000.0 if ok else None)
        # CPU used by other processes on the machine during the window (a shared machine is noisy).
        result["others_cpu_percent"] = max(0.0, result["machine_cpu_percent"] - result["coordinator_cpu_percent"]
                                           - sum(r["generator_cpu_percent"] for r in results))
        # The load stops; then the audit chain says exactly which nodes went Down, and when.
        t_stop = time.time()
        for p in pipes:
            p.send(("stop",))
        transitions = node_transitions(api, t_start)
        silenced_node_ids = set(detection["silenced"]) if detection else set()
        false = [t for t in transitions if t["details"].get("to") == "down" and t["at"] < t_stop
                 and t["subject"].removeprefix("node:") not in silenced_node_ids]
        result["false_down"] = len([t for t in false if t["at"] >= t0])  # under the measured load
        result["false_down_startup"] = len([t for t in false if t["at"] < t0])  # while nodes joined
        result["false_down_at_s"] = [round(t["at"] - t0, 2) for t in false][:200]  # relative to the window
        state_at_stop: dict[str, str] = {}
        for t in transitions:
            if t["at"] < t_stop:
                state_at_stop[t["subject"]] = t["details"].get("to", "")
        result["down_at_end"] = len([n for n, st in state_at_stop.items()
                                     if st == "down" and n.removeprefix("node:") not in silenced_node_ids])
        result["coordinator_rss_peak_mb"] = sampler.peak_rss / 2**20
        if detection is not None:
            result["detection"] = _detection_figures(detection, transitions, restarted_at)
        api.close()
        return result
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        if sampler is not None:
            sampler.stop()
        if profiler is not None:
            _stop_profiler(profiler)
        coordinator.stop(timeout=30)
        if cfg.db and not cfg.keep:
            with contextlib.suppress(Exception):
                from polyfabric.testing.databases import drop_postgres_database

                drop_postgres_database(cfg.db)
        if cfg.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        if own_cpus is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def _watch_detection(api: Any, pipes: list[Any], procs: list[Any], silence_at: float,
                     cfg: LoadConfig) -> dict[str, Any]:
    """Wait for the silenced nodes' last replies, then poll the Down list until all are Down.

    The poll only says when to stop waiting (and when the Down was seen); the Down times come from
    the audit chain afterwards (`_detection_figures`).
    """
    from polyfabric.client import ApiError, CoordinatorUnreachable

    silenced: dict[str, dict[str, Any]] = {}
    for p in pipes:
        got = _recv(p, "silenced", max(60.0, silence_at - time.time() + 30), procs)
        silenced.update(got)
    seen: dict[str, float] = {}
    deadline = silence_at + cfg.detection_timeout
    while len(seen) < len(silenced) and time.time() < deadline:
        try:
            down = _list_all(api, "/v1/nodes", "name", state="down", limit=5000)
        except (ApiError, CoordinatorUnreachable) as exc:
            log(f"polling the Down list failed ({exc}); trying again")
            continue
        polled = time.time()
        for node in down:
            if node["id"] in silenced and node["id"] not in seen:
                seen[node["id"]] = polled
        time.sleep(0.1)
    return {"silenced": silenced, "seen": seen}


def _detection_figures(watch: dict[str, Any], transitions: list[dict[str, Any]],
                       restarted_at: float) -> dict[str, Any]:
    """Per silenced node: from its last heartbeat (the moment it was sent) to Down.

    A node that sent nothing after the coordinator restarted (an overloaded coordinator can leave
    it unable to connect) counts from the restart, where the coordinator gave it a fresh grace.
    """
    per_node = []
    for node_id, info in watch["silenced"].items():
        info["last_send"] = max(info["last_send"], restarted_at)
        down_at = next((t["at"] for t in transitions if t["subject"] == f"node:{node_id}"
                        and t["details"].get("to") == "down" and t["at"] >= info["last_send"]), None)
        per_node.append({
            "node_id": node_id, "last_ack": info["last_ack"], "last_send": info["last_send"],
            "last_latency_ms": info["last_latency_ms"], "down_at": down_at, "observed_at": watch["seen"].get(node_id),
            # From the last heartbeat the node sent. Not from its last reply: under overload the
            # last heartbeats a node sends can go unanswered within the agent's timeout and still
            # reach the coordinator, so its last reply can be minutes older than its last heartbeat.
            "detect_s": (down_at - info["last_send"]) if down_at else None,
            "detect_from_reply_s": (down_at - info["last_ack"]) if down_at else None,
        })
    times = sorted(n["detect_s"] for n in per_node if n["detect_s"] is not None)
    return {
        "silenced": sorted(watch["silenced"]), "detected": len(times), "missed": len(per_node) - len(times),
        "detect_s": {"min": times[0] if times else None, "median": percentile(times, 50),
                     "max": times[-1] if times else None},
        "nodes": per_node,
    }


def _start_profiler(pid: int, path: str, duration: float) -> Any:
    import subprocess
    import sys

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    fmt = "speedscope" if path.endswith(".json") else ("raw" if path.endswith(".txt") else "flamegraph")
    log(f"profiling the coordinator with py-spy for {duration:.0f}s into {path}")
    return subprocess.Popen([pyspy, "record", "--pid", str(pid), "--duration", str(int(duration)), "--rate", "100",
                             "--format", fmt, "--output", path, "--nonblocking", "--threads"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop_profiler(proc: Any) -> None:
    try:
        proc.wait(30)
    except Exception:
        proc.kill()


def config_dict(cfg: LoadConfig) -> dict[str, Any]:
    out = asdict(cfg)
    if out.get("db"):
        out["db"] = out["db"].rsplit("/", 1)[0] + "/<fresh>"
    return out
