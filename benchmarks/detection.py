"""detection: how long a silent node stays undetected under heartbeat load, and how many false Downs.

Runs the heartbeat load of `benchmarks.heartbeats` (real coordinator, N simulated nodes, real
signed heartbeats every 2 s; default N = 10,000), then `--silence-after` seconds into the measured
window stops heartbeating K nodes (default 10, spread over the node list) as if their agents had
been killed (their connections are closed). It polls `GET /v1/nodes?state=down` until all K are
Down, and reports for each the time from its LAST heartbeat (the moment it was sent; its reply
came a few ms later unless the coordinator is overloaded) to its Down transition (from the audit
chain: the coordinator's clock, the same machine's clock as the generator's): min / median / max,
and the nodes that went Down although they never stopped heartbeating (false Down: every
`node.transition` to Down in the audit chain since the start, for any other node).

Detector settings are the server's defaults: heartbeat 2 s, Down after 8 s of silence, checked
every 0.5 s, so the ideal is 8.0-8.5 s (target: Down within 10 s, zero false Down).

    python -m benchmarks.detection                          # N = 10,000, K = 10, 3 runs
    python -m benchmarks.detection --nodes 1000 --repeat 1
"""

from __future__ import annotations

import sys
from typing import Any

from benchmarks._common import describe_machine, emit_json, log, machine, median_of_runs, print_table
from benchmarks._hbload import config_dict, run_load
from benchmarks.heartbeats import configs, flatten, fresh_db, make_parser

__all__ = ["main"]

TARGET_DOWN_S = 10.0

COLUMNS = [
    ("nodes", "nodes"), ("db", "db"), ("silenced", "silenced"), ("detected", "Down"),
    ("detect_min_s", "min s"), ("detect_median_s", "median s"), ("detect_max_s", "max s"),
    ("false_down", "false Down"), ("false_down_startup", "false Down in startup"),
    ("achieved_per_s", "heartbeats/s"), ("offered_per_s", "offered/s"),
    ("p99_ms", "hb p99 ms"), ("coordinator_cpu_percent", "coord CPU %"), ("coordinator_rss_peak_mb", "peak RSS MB"),
    ("startup_s", "startup s"), ("others_cpu_percent", "others CPU %"),
]


def flatten_detection(run: dict[str, Any]) -> dict[str, Any]:
    flat = flatten(run)
    det = run.get("detection") or {}
    times = det.get("detect_s") or {}
    flat.update({
        "silenced": len(det.get("silenced") or []), "detected": det.get("detected"), "missed": det.get("missed"),
        "detect_min_s": times.get("min"), "detect_median_s": times.get("median"), "detect_max_s": times.get("max"),
    })
    return flat


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(prog="python -m benchmarks.detection", description=__doc__ or "",
                         default_nodes="10000", default_duration=30.0)
    parser.add_argument("--silence", type=int, default=10, help="nodes that stop heartbeating (default 10)")
    parser.add_argument("--silence-after", type=float, default=5.0,
                        help="seconds into the measured window when they stop (default 5)")
    parser.add_argument("--detection-timeout", type=float, default=60.0,
                        help="give up waiting for Down this many seconds after the silence (default 60)")
    args = parser.parse_args(argv)
    if args.duration < args.silence_after + 15:
        parser.error("--duration must leave at least 15 s after --silence-after (Down takes 8-8.5 s)")
    info = machine()
    log(f"machine: {describe_machine(info)}")
    rows = []
    all_runs = []
    for cfg in configs(args, silence_count=args.silence, silence_after=args.silence_after,
                       detection_timeout=args.detection_timeout):
        runs = []
        for i in range(args.repeat):
            cfg.db = fresh_db(args.db)
            log(f"detection: N={cfg.nodes}, K={cfg.silence_count} on {'PostgreSQL' if cfg.db else 'SQLite'}, "
                f"run {i + 1}/{args.repeat}")
            run = run_load(cfg)
            runs.append(run)
            print_table([flatten_detection(run)], COLUMNS, title=f"run {i + 1}/{args.repeat}", file=sys.stderr)
        med = median_of_runs([flatten_detection(r) for r in runs])
        med["runs"] = len(runs)
        rows.append(med)
        all_runs.append({"config": config_dict(cfg), "median": med, "runs": runs})
    print(f"\ndetection on {describe_machine(info)}")
    print_table(rows, COLUMNS, title=f"medians of {args.repeat} run(s); target: Down within {TARGET_DOWN_S:g} s "
                                     "of the last heartbeat, 0 false Down (ideal 8.0-8.5 s)")
    emit_json("detection", {"machine": info, "argv": sys.argv[1:] if argv is None else argv,
                            "targets": {"down_s": TARGET_DOWN_S, "false_down": 0}, "results": all_runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
