"""heartbeat_path: the coordinator's CPU cost of one heartbeat, in process, without the network.

Builds the real coordinator app (SQLite in a temporary directory), registers nodes, then calls the
ASGI app directly with signed `POST /v1/agent/heartbeat` requests (signed before timing starts:
this measures the server side only) and reports CPU microseconds per request (CPU time of this process, which
other processes on a shared machine disturb much less than wall time; wall time is shown too),
with the share of the signature check (`verify_request`) measured on its own. Also reports one failure-detector pass
over all nodes. A quick way to see the effect of a change to the heartbeat path; the end-to-end
figures come from `benchmarks.heartbeats`.

    python -m benchmarks.heartbeat_path --nodes 1000 --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks._common import describe_machine, emit_json, log, machine, print_table

__all__ = ["main"]

HOST = "127.0.0.1:7340"


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": b"", "headers": headers, "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 7340), "state": {}}


async def _call(app: Any, scope: dict[str, Any], body: bytes) -> tuple[int, bytes]:
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def _signed(identity: Any, path: str, body: bytes) -> dict[str, Any]:
    headers = {"host": HOST, "content-type": "application/json", "content-length": str(len(body))}
    headers.update(identity.sign_headers("POST", f"http://{HOST}{path}", headers, body, time.time()))
    return _scope(path, [(k.lower().encode(), v.encode()) for k, v in headers.items()])


def run(nodes: int, requests: int) -> dict[str, Any]:
    from polyfabric.agent.identity import NodeIdentity
    from polyfabric.controllers.node_health import NodeHealthController
    from polyfabric.coordinator.bootstrap import build
    from polyfabric.coordinator.settings import CoordinatorSettings
    from polyfabric.security.http_signatures import verify_request
    from polyfabric.security.keys import generate_private_key

    workdir = Path(tempfile.mkdtemp(prefix="pf-bench-path-"))
    try:
        settings = CoordinatorSettings(db_url=f"sqlite:///{workdir / 'pf.db'}", data_dir=workdir / "coord")
        coordinator = build(settings)
        app, services = coordinator.app, coordinator.services
        from polyfabric.domain.access import ALL_DOMAINS, Principal, Role

        admin = Principal("token", "bench", "bench", Role.ADMIN, (ALL_DOMAINS,))
        token = services.tokens.create_join(admin, domain="bench", ttl_s=None, uses=None).token
        identities = [NodeIdentity.from_private_key(generate_private_key()) for _ in range(nodes)]
        decl = {"name": "", "labels": {}, "capacity": {"cpu_millis": 2000, "memory_bytes": 2**32, "slots": 2},
                "agent_version": "bench"}
        loop = asyncio.new_event_loop()
        started = time.perf_counter()
        for i, ident in enumerate(identities):
            body = orjson.dumps({"join_token": token, "public_key": ident.public_key_b64,
                                 "node": {**decl, "name": f"n{i:05d}"}})
            status, reply = loop.run_until_complete(_call(app, _signed(ident, "/v1/agent/register", body), body))
            assert status == 201, reply
        register_ms = (time.perf_counter() - started) * 1000 / nodes
        telemetry = {"cpu_percent": 12.5, "memory_percent": 40.1, "memory_used_bytes": 623030272,
                     "disk_percent": 68.6, "disk_free_bytes": 85015560192, "load1": 1.5, "load5": 1.0,
                     "load15": 0.5, "processes": 95, "gpus": []}
        health = [{"name": "data_dir_writable", "ok": True, "message": "ok", "duration_ms": 1.2}]

        counter = iter(range(10**12))

        def heartbeats(count: int) -> list[tuple[dict[str, Any], bytes]]:
            out = []
            for _ in range(count):
                k = next(counter)
                ident = identities[k % nodes]
                body = orjson.dumps({"telemetry": telemetry, "health": health, "seq": k})
                out.append((_signed(ident, "/v1/agent/heartbeat", body), body))
            return out

        def send_all(count: int, check: bool = False) -> tuple[float, float, list[tuple[dict[str, Any], bytes]]]:
            """Sign in chunks (a signature is good for 60 s), time only the sending: (wall, CPU, last chunk)."""
            wall = cpu = 0.0
            chunk: list[tuple[dict[str, Any], bytes]] = []
            for start in range(0, count, 2000):
                chunk = heartbeats(min(2000, count - start))

                async def drive(batch: list[tuple[dict[str, Any], bytes]]) -> tuple[float, float]:
                    t, c = time.perf_counter(), time.process_time()
                    for scope, body in batch:
                        status, reply = await _call(app, scope, body)
                        if check:
                            assert status == 200, reply
                    return time.perf_counter() - t, time.process_time() - c

                w, c = loop.run_until_complete(drive(chunk))
                wall, cpu = wall + w, cpu + c
            return wall, cpu, chunk

        send_all(nodes, check=True)  # activate every node (Pending -> Active)
        wall, cpu, batch = send_all(requests)
        per_request_us, wall_us = cpu * 1e6 / requests, wall * 1e6 / requests
        # The signature check alone, on the same requests.
        keys = {i.node_id: i.public_key_raw for i in identities}
        checks = batch[: min(requests, 5000)]
        prepared = [([(k.decode(), v.decode()) for k, v in scope["headers"]], body) for scope, body in checks]
        c = time.process_time()
        for hdrs, body in prepared:
            verify_request(method="POST", url=f"http://{HOST}/v1/agent/heartbeat", headers=hdrs, body=body,
                           resolve_key=keys.get, now=time.time())
        verify_us = (time.process_time() - c) * 1e6 / len(prepared)
        # One failure-detector pass over every node, all of them freshly heard from (as in steady
        # state, where no condition flips and the pass writes nothing): last-seen times are reset
        # before each pass, untimed, and a first pass absorbs the flips left by the runs above.
        health_ctl = NodeHealthController(services.ctx, services.nodes)

        def refresh() -> None:
            now = time.time()
            for entry in services.ctx.liveness.entries():
                entry.last_seen = now

        refresh()
        health_ctl.run_once()
        passes = []
        for _ in range(4):
            refresh()
            t = time.perf_counter()
            health_ctl.run_once()
            passes.append((time.perf_counter() - t) * 1000)
        flush_t = time.perf_counter()
        flushed = services.nodes.flush_liveness()
        flush_ms = (time.perf_counter() - flush_t) * 1000
        coordinator.store.close()
        return {"nodes": nodes, "requests": requests, "heartbeat_us": per_request_us, "wall_us": wall_us,
                "verify_us": verify_us,
                "rest_us": per_request_us - verify_us, "max_per_s_one_core": 1e6 / per_request_us,
                "register_ms": register_ms, "health_pass_ms": statistics.median(passes),
                "flush_ms": flush_ms, "flushed_rows": flushed}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


COLUMNS = [("nodes", "nodes"), ("heartbeat_us", "CPU µs/heartbeat"), ("wall_us", "wall µs"),
           ("verify_us", "of which verify µs"),
           ("rest_us", "rest µs"), ("max_per_s_one_core", "max/s on 1 core"), ("register_ms", "register ms"),
           ("health_pass_ms", "health pass ms"), ("flush_ms", "flush ms"), ("flushed_rows", "rows flushed")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.heartbeat_path", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000, help="registered nodes (default 1000)")
    parser.add_argument("--requests", type=int, default=20000, help="heartbeats timed (default 20000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the table shows the median (3)")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)  # the detector warns about its own late passes here
    info = machine()
    log(f"machine: {describe_machine(info)}")
    runs = [run(args.nodes, args.requests) for _ in range(args.repeat)]
    from benchmarks._common import median_of_runs

    med = median_of_runs(runs)
    print(f"\nheartbeat_path on {describe_machine(info)}")
    print_table([med], COLUMNS, title=f"median of {args.repeat} run(s), in process, no network")
    emit_json("heartbeat_path", {"machine": info, "argv": sys.argv[1:] if argv is None else argv,
                                 "median": med, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
