"""Time one scheduling pass with and without the topology scorers (locality, zone_spread, affinity).

    python -m benchmarks.scheduling_topology                          # 1,000 and 10,000 nodes
    python -m benchmarks.scheduling_topology --scenario 1000x2000 --repeat 3 --share 0.3

The pure pipeline only, as `benchmarks.scheduling_core` (whose clusters and tasks it reuses), plus
network coordinates on every node (8 dimensions: a point per region, an offset per zone, noise per
node, heights of 0.1-1 ms, as Vivaldi ends up on a WAN) and topology wishes on a share of the tasks,
grouped by workflow as real fan-outs are: a third `locality: near(...)` one upstream node of their
workflow, a third `spread: zone` over their workflow's group, a third `affinity` on a label.

Modes, per scenario:
  without     default profile (binpack), tasks without topology: the baseline
  idle        topology profile, tasks without topology: what the scorers cost when unused
              (the runtime does not even pay this: it adds them only to passes that need them)
  with        topology profile, `--share` of the tasks with topology wishes
  all         topology profile, every task with a wish

Prints a table, then one JSON line with the figures and the machine they were taken on.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

try:
    import polyfabric  # noqa: F401
except ImportError:  # pragma: no cover - running from a checkout whose venv lacks the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchmarks._common import describe_machine, emit_json, log, machine, print_table
from benchmarks.scheduling_core import build_cluster, build_tasks
from polyfabric.domain.vivaldi import Coordinate
from polyfabric.scheduling import ClusterView, TaskRequest, schedule
from polyfabric.scheduling.registry import default_profile, topology_profile

__all__ = ["main", "with_coordinates", "with_wishes"]

DIMS = 8


def with_coordinates(view: ClusterView, seed: int) -> ClusterView:
    """Every node gets a coordinate: regions ~60-150 ms apart, zones ~2-10 ms, nodes ~0.5 ms."""
    rng = random.Random(seed + 2)
    centers: dict[str, list[float]] = {}
    nodes = []
    for node in view.nodes:
        region, zone = node.labels.get("region", ""), node.labels.get("zone", "")
        if region not in centers:
            centers[region] = [rng.uniform(-0.05, 0.05) for _ in range(DIMS)]
        if zone not in centers:
            centers[zone] = [c + rng.uniform(-0.004, 0.004) for c in centers[region]]
        vec = tuple(c + rng.uniform(-0.0003, 0.0003) for c in centers[zone])
        coords = Coordinate(vec, rng.uniform(0.05, 0.3), 0.0, rng.uniform(0.0001, 0.001))
        nodes.append(dataclasses.replace(node, coords=coords))
    return ClusterView(tuple(nodes), version=view.version, limits=view.limits)


def with_wishes(tasks: list[TaskRequest], share: float, seed: int, node_ids: list[str]) -> list[TaskRequest]:
    """`share` of the tasks ask for topology; the kind is fixed per workflow (a fan-out asks alike)."""
    rng = random.Random(seed + 3)
    upstream: dict[str, str] = {}
    out = []
    for task in tasks:
        if rng.random() >= share:
            out.append(task)
            continue
        wf = task.workflow_id
        kind = hash(wf) % 3
        if kind == 0:
            near = upstream.setdefault(wf, rng.choice(node_ids))
            out.append(dataclasses.replace(task, near=frozenset({near})))
        elif kind == 1:
            out.append(dataclasses.replace(task, spread="zone", group=f"{wf}/work"))
        else:
            out.append(dataclasses.replace(task, affinity=(("arch", "arm64", 10.0), ("region", "us-east", -5.0))))
    return out


def run_scenario(nodes: int, tasks: int, *, repeat: int, seed: int, share: float) -> list[dict[str, Any]]:
    base = build_cluster(nodes, seed)
    view = with_coordinates(base, seed)
    ids = [n.id for n in view.nodes]
    plain = build_tasks(tasks, seed, ids)
    modes = [
        ("without", default_profile(), plain),
        ("idle", topology_profile(), plain),
        (f"with {share:.0%}", topology_profile(), with_wishes(plain, share, seed, ids)),
        ("all", topology_profile(), with_wishes(plain, 1.0, seed, ids)),
    ]
    rows = []
    for mode, profile, pending in modes:
        times = []
        plan = None
        for r in range(repeat):
            start = time.perf_counter()
            plan = schedule(view, pending, profile, random.Random(seed + r))
            times.append(time.perf_counter() - start)
        assert plan is not None
        asking = sum(1 for t in pending if t.near or t.spread or t.affinity)
        rows.append({
            "scenario": f"{nodes}x{tasks}", "nodes": nodes, "tasks": tasks, "mode": mode, "asking": asking,
            "median_s": round(statistics.median(times), 4), "best_s": round(min(times), 4),
            "runs_s": [round(t, 4) for t in times], "per_task_us": round(statistics.median(times) / tasks * 1e6, 1),
            "placed": len(plan.placements), "unplaced": len(plan.unplaced),
        })
        log(f"  {nodes} nodes, {tasks} tasks, {mode}: median {rows[-1]['median_s']} s")
    return rows


COLUMNS = [
    ("nodes", "nodes"),
    ("tasks", "tasks"),
    ("mode", "mode"),
    ("asking", "tasks asking"),
    ("median_s", "median s"),
    ("best_s", "best s"),
    ("per_task_us", "µs / task"),
    ("placed", "placed"),
    ("unplaced", "unplaced"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scheduling_topology", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="passes per mode (median and best kept)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--share", type=float, default=0.3, help="share of tasks with topology wishes (mode 'with')")
    parser.add_argument("--scenario", action="append", metavar="NODESxTASKS",
                        help="repeatable; default: 1000x5000 and 10000x5000")
    args = parser.parse_args(argv)
    info = machine()
    results: list[dict[str, Any]] = []
    for spec in args.scenario or ["1000x5000", "10000x5000"]:
        nodes, tasks = (int(x) for x in spec.lower().split("x"))
        log(f"scheduling {tasks} tasks on {nodes} nodes, {args.repeat} pass(es) per mode")
        results.extend(run_scenario(nodes, tasks, repeat=args.repeat, seed=args.seed, share=args.share))
    print_table(results, COLUMNS, title=f"one schedule() pass, median of {args.repeat}; {describe_machine(info)}")
    emit_json("scheduling_topology", {"machine": info, "argv": sys.argv[1:] if argv is None else argv,
                                      "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
