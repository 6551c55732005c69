"""heartbeats: N simulated nodes sending real signed heartbeats every 2 s to a real coordinator.

Starts a `polyfabric server` (SQLite in a temporary directory by default, default detector
settings: heartbeat 2 s, Down after 8 s), makes an unlimited join token, and runs the load in
separate generator processes: each simulated node has its own Ed25519 key, registers with a
signed `POST /v1/agent/register` (reported as start-up, with its first heartbeat that makes it
Active), then heartbeats over its own keep-alive connection every 2 s, signed when sent.

On a 2-core machine the coordinator is pinned to the first CPU and the generator(s) to the
second, so they do not steal from each other. Reported over the measured window: offered and
achieved heartbeats/s, latency p50/p95/p99/max, errors, coordinator CPU % (100 = one core) and
RSS, and the nodes that went Down although they never stopped heartbeating (false Down; from
the audit chain, so a node that went Down and came back counts too).

    python -m benchmarks.heartbeats                       # N = 1,000 then 10,000, 3 runs each, SQLite
    python -m benchmarks.heartbeats --nodes 1000 --repeat 1 --duration 10
    python -m benchmarks.heartbeats --nodes 1000 --db postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from benchmarks._common import describe_machine, emit_json, log, machine, median_of_runs, print_table
from benchmarks._hbload import LoadConfig, config_dict, run_load

__all__ = ["configs", "flatten", "fresh_db", "main", "make_parser"]

TARGET_P99_MS = 100.0
TARGET_RSS_MB = 500.0

COLUMNS = [
    ("nodes", "nodes"), ("db", "db"), ("offered_per_s", "offered/s"), ("achieved_per_s", "achieved/s"),
    ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms"),
    ("errors", "errors"), ("coordinator_cpu_percent", "coord CPU %"),
    ("coordinator_cpu_ms_per_heartbeat", "coord CPU ms/hb"), ("coordinator_rss_peak_mb", "peak RSS MB"),
    ("false_down", "false Down"), ("false_down_startup", "false Down in startup"), ("down_at_end", "Down at end"),
    ("startup_s", "startup s"),
    ("registrations_per_s", "reg/s"), ("generator_cpu_percent", "gen CPU %"), ("lag_p99_ms", "gen lag p99 ms"),
    ("others_cpu_percent", "others CPU %"),
]


def flatten(run: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run as one flat row (what the table shows and the medians are taken of)."""
    lat = run.get("latency_ms") or {}
    lag = run.get("generator_lag_ms") or {}
    gen_cpu = run.get("generator_cpu_percent") or []
    return {
        "nodes": run["nodes"], "db": run["db"], "generators": run["generators"],
        "offered_per_s": run["offered_per_s"], "achieved_per_s": run.get("achieved_per_s"),
        "p50_ms": lat.get("p50"), "p95_ms": lat.get("p95"), "p99_ms": lat.get("p99"), "max_ms": lat.get("max"),
        "mean_ms": lat.get("mean"), "errors": run.get("errors"),
        "coordinator_cpu_percent": run.get("coordinator_cpu_percent"),
        "coordinator_cpu_ms_per_heartbeat": run.get("coordinator_cpu_ms_per_heartbeat"),
        "coordinator_rss_peak_mb": run.get("coordinator_rss_peak_mb"),
        "coordinator_rss_window_peak_mb": run.get("coordinator_rss_window_peak_mb"),
        "false_down": run.get("false_down"), "false_down_startup": run.get("false_down_startup"),
        "down_at_end": run.get("down_at_end"),
        "startup_s": run.get("startup_s"), "registrations_per_s": run.get("registrations_per_s"),
        "register_p50_ms": (run.get("register_ms") or {}).get("p50"),
        "activate_p50_ms": (run.get("activate_ms") or {}).get("p50"),
        "generator_cpu_percent": max(gen_cpu) if gen_cpu else None,
        "lag_p99_ms": lag.get("p99"),
        "others_cpu_percent": run.get("others_cpu_percent"),
    }


def make_parser(argv: list[str] | None = None, *, prog: str = "python -m benchmarks.heartbeats",
               description: str = __doc__ or "", default_nodes: str = "1000,10000",
               default_duration: float = 30.0) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default=default_nodes,
                        help=f"comma-separated node counts, run one after the other (default {default_nodes})")
    parser.add_argument("--duration", type=float, default=default_duration,
                        help=f"seconds of measured heartbeats per run (default {default_duration:g})")
    parser.add_argument("--repeat", type=int, default=3, help="runs per node count; the table shows medians (3)")
    parser.add_argument("--db", default=None,
                        help="postgresql://USER@HOST:PORT/DB: each run gets a fresh database created next to "
                             "this one (dropped afterwards); default: SQLite in a temporary directory")
    parser.add_argument("--generators", type=int, default=1,
                        help="load generator processes (default 1; use more if 'gen lag' grows)")
    parser.add_argument("--coordinator-cpus", default=None,
                        help="CPUs for the coordinator, e.g. 0 (default: the first CPU)")
    parser.add_argument("--generator-cpus", default=None,
                        help="CPUs for the generators, e.g. 1 (default: all the others)")
    parser.add_argument("--startup", choices=("restart", "live"), default="restart",
                        help="restart (default): nodes register and turn Active under a detector that never "
                             "declares Down, then the coordinator restarts with the default detector and all "
                             "nodes heartbeat; live: each node heartbeats as soon as it has registered, default "
                             "detector throughout (at 10,000 nodes on 2 cores that never finishes: see the docs)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="a heartbeat without reply after this many seconds is an error (the agent's, 10)")
    parser.add_argument("--startup-concurrency", type=int, default=32,
                        help="registrations in flight at once (default 32)")
    parser.add_argument("--profile", default=None, metavar="PATH",
                        help="record the coordinator with py-spy during the window (PATH.svg flamegraph, "
                             ".json speedscope, .txt collapsed stacks); needs py-spy installed")
    parser.add_argument("--nice", type=int, default=0,
                        help="nice value for the coordinator and the generators, e.g. -10 on a machine shared "
                             "with other work (needs root or CAP_SYS_NICE; default 0: unchanged)")
    parser.add_argument("--quiet-wait", type=float, default=300.0,
                        help="before each run, wait up to this many seconds for other processes on the machine "
                             "to use < 25%% CPU (default 300; 0: do not wait)")
    parser.add_argument("--pythonpath", default=None, metavar="DIR",
                        help="run the coordinator with polyfabric imported from DIR (a copy of another version "
                             "of src/, to compare a change with the same generator)")
    parser.add_argument("--keep", action="store_true", help="keep the coordinator's data dir and log")
    return parser


def _cpus(text: str | None) -> list[int] | None:
    return [int(c) for c in text.split(",") if c.strip()] if text else None


def configs(args: argparse.Namespace, **extra: Any) -> list[LoadConfig]:
    return [LoadConfig(nodes=int(n), duration=args.duration, db=args.db, generators=args.generators,
                       timeout=args.timeout, startup_concurrency=args.startup_concurrency,
                       coordinator_cpus=_cpus(args.coordinator_cpus), generator_cpus=_cpus(args.generator_cpus),
                       keep=args.keep, nice=args.nice, startup=args.startup, pythonpath=args.pythonpath,
                       quiet_wait=args.quiet_wait, profile=args.profile, **extra)
            for n in args.nodes.split(",") if n.strip()]


def fresh_db(base: str | None) -> str | None:
    """A new empty PostgreSQL database next to `base` (None stays None: SQLite)."""
    if not base:
        return None
    import os

    from polyfabric.testing.databases import fresh_postgres_url

    os.environ["POLYFABRIC_TEST_PG"] = base
    return fresh_postgres_url("pfbench")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    info = machine()
    log(f"machine: {describe_machine(info)}")
    rows = []
    all_runs: list[dict[str, Any]] = []
    for cfg in configs(args):
        runs = []
        for i in range(args.repeat):
            cfg.db = fresh_db(args.db)
            log(f"heartbeats: N={cfg.nodes} on {'PostgreSQL' if cfg.db else 'SQLite'}, run {i + 1}/{args.repeat}")
            run = run_load(cfg)
            runs.append(run)
            flat = flatten(run)
            print_table([flat], COLUMNS, title=f"run {i + 1}/{args.repeat}", file=sys.stderr)
        med = median_of_runs([flatten(r) for r in runs])
        med["runs"] = len(runs)
        rows.append(med)
        all_runs.append({"config": config_dict(cfg), "median": med, "runs": runs})
    print(f"\nheartbeats on {describe_machine(info)}")
    print_table(rows, COLUMNS, title=f"medians of {args.repeat} run(s); targets: p99 < {TARGET_P99_MS:g} ms, "
                                     f"RSS < {TARGET_RSS_MB:g} MB, 0 false Down, achieved = offered")
    emit_json("heartbeats", {"machine": info, "argv": sys.argv[1:] if argv is None else argv,
                             "targets": {"p99_ms": TARGET_P99_MS, "rss_mb": TARGET_RSS_MB, "false_down": 0},
                             "results": all_runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
