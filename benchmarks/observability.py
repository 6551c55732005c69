"""observability: what metrics, telemetry history and the ledger cost the coordinator.

In-process, on a real store (SQLite file in a temporary directory by default, or --db PostgreSQL):

- the per-event cost of the counters and histograms on hot paths (heartbeat, API request);
- one telemetry history pass (`TelemetryHistory.record`: sample N nodes from the in-memory
  liveness table, write their raw points in one transaction) at N nodes, and a pass that also
  closes N minute buckets;
- rendering GET /metrics with N nodes' gauges (what a scrape costs, and its size).

    python -m benchmarks.observability                      # N = 1,000 and 10,000, SQLite
    POLYFABRIC_TEST_PG=postgresql://postgres@127.0.0.1:5432/test python -m benchmarks.observability --pg
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

from benchmarks._common import describe_machine, emit_json, log, machine, print_table
from polyfabric.api.routes.metrics import _snapshot
from polyfabric.coordinator.bootstrap import SystemClock, UuidIds
from polyfabric.domain.node_states import NodeState
from polyfabric.observability import metrics as obs
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.liveness import NodeLiveness
from polyfabric.store import migrate
from polyfabric.store.unit_of_work import SqlStore
from polyfabric.testing.databases import drop_postgres_database, fresh_postgres_url

TELEMETRY = {"cpu_percent": 37.5, "memory_percent": 61.2, "memory_used_bytes": 5_000_000_000, "disk_percent": 40.0,
             "disk_free_bytes": 10**11, "load1": 1.5, "load5": 1.2, "load15": 1.0, "processes": 300, "gpus": []}


class _Signer:
    key_id = "c-bench"
    public_key_b64 = ""

    def sign(self, data: bytes) -> bytes:
        return b""


def _event_costs() -> dict[str, float]:
    n = 200_000
    counter = timeit.timeit(obs.HEARTBEATS_RECEIVED.inc, number=n) / n
    hist = obs.API_REQUEST_SECONDS.labels("POST", "/v1/agent/heartbeat", "200")
    observe = timeit.timeit(lambda: hist.observe(0.001), number=n) / n
    labelled = timeit.timeit(lambda: obs.API_REQUEST_SECONDS.labels("POST", "/v1/agent/heartbeat", "200")
                             .observe(0.001), number=n) / n
    return {"counter_inc_ns": counter * 1e9, "histogram_observe_ns": observe * 1e9,
            "labelled_observe_ns": labelled * 1e9}


def run(nodes: int, pg: bool, passes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = fresh_postgres_url("pfobs") if pg else f"sqlite:///{Path(tmp) / 'bench.db'}"
        try:
            return _run(url, nodes, passes)
        finally:
            if pg:
                drop_postgres_database(url)


def _run(url: str, nodes: int, passes: int) -> dict[str, Any]:
    store = SqlStore(url)
    migrate.upgrade(store.engine)
    clock = SystemClock()
    services = Services.build(ServiceContext(store=store, clock=clock, ids=UuidIds(), signer=_Signer()))
    history = services.telemetry_history
    assert history is not None
    history.configure(10.0)
    now = time.time()
    for i in range(nodes):
        services.ctx.liveness.put(NodeLiveness(f"n-bench{i:015d}", "bench", b"\0" * 32, NodeState.ACTIVE, False,
                                               now, telemetry=dict(TELEMETRY), heartbeats=1))
    times = []
    for _ in range(passes):
        for entry in services.ctx.liveness.entries():
            entry.last_seen += 0.001  # heard from since the last pass
        started = time.perf_counter()
        written = history.record(now)
        times.append(time.perf_counter() - started)
        now += 10.0
    # A pass that also closes every node's minute bucket (once a minute).
    for entry in services.ctx.liveness.entries():
        entry.last_seen += 0.001
    closing_now = (int(now) // 60 + 1) * 60 + 1
    started = time.perf_counter()
    closing = history.record(closing_now)
    closing_s = time.perf_counter() - started
    registry = obs.coordinator_registry(lambda: _snapshot(services))
    renders = []
    for _ in range(3):
        started = time.perf_counter()
        body = obs.render(registry)
        renders.append(time.perf_counter() - started)
    store.close()
    return {"nodes": nodes, "db": "postgresql" if url.startswith("postgresql") else "sqlite",
            "points_per_pass": written, "pass_ms": statistics.median(times) * 1e3, "closing_points": closing,
            "closing_pass_ms": closing_s * 1e3, "scrape_ms": statistics.median(renders) * 1e3,
            "scrape_kib": len(body) / 1024}


COLUMNS = [("nodes", "nodes"), ("db", "db"), ("points_per_pass", "points/pass"), ("pass_ms", "history pass ms"),
           ("closing_points", "points (minute closes)"), ("closing_pass_ms", "that pass ms"),
           ("scrape_ms", "/metrics render ms"), ("scrape_kib", "/metrics KiB")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, action="append", help="node counts (default 1000 and 10000)")
    parser.add_argument("--pg", action="store_true",
                        help="a fresh database at POLYFABRIC_TEST_PG (default: SQLite in a temporary directory)")
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args(argv)
    log(describe_machine(machine()))
    costs = _event_costs()
    log(f"per event: counter inc {costs['counter_inc_ns']:.0f} ns, histogram observe "
        f"{costs['histogram_observe_ns']:.0f} ns, labelled observe {costs['labelled_observe_ns']:.0f} ns")
    rows = [run(n, args.pg, args.passes) for n in (args.nodes or [1000, 10000])]
    print_table(rows, COLUMNS)
    emit_json("observability", {"machine": machine(), "event_costs": costs, "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
