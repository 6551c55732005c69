"""Time one scheduling pass (`polyfabric.scheduling.schedule`) on synthetic clusters.

    python -m benchmarks.scheduling_core            # 1,000 × 10,000, 10,000 × 10,000, saturated
    python -m benchmarks.scheduling_core --repeat 9 --scorer spread
    python -m benchmarks.scheduling_core --scenario 1000x10000@1.2     # nodes x tasks @ busy

Clusters are generated from a seed: mixed node sizes (some with GPUs), a few cordoned or down
nodes, nodes already 0-40 % busy with lower-priority work, labels for region/zone/arch. Tasks
come from a dozen resource shapes across hundreds of workflows, some with label constraints,
excluded nodes, semaphores and workflow caps, priorities 0-10. The first two scenarios have room
for most tasks (limits hold some back); the third fills nodes up to 0-120 % before the pass, so
many tasks find no node: it measures explanations and preemption.

Prints a table, then one JSON line with the figures and the machine they were taken on.
"""

from __future__ import annotations

import argparse
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
from polyfabric.domain.node_states import NodeState
from polyfabric.domain.resources import Resources
from polyfabric.scheduling import (
    ClusterView,
    ConcurrencyLimits,
    NodeView,
    RunningTask,
    TaskRequest,
    builtin_registry,
    schedule,
)

__all__ = ["build_cluster", "build_tasks", "main"]

GI = 2**30
MI = 2**20
_NODE_SHAPES = [  # (cores, memory GiB, gpus, weight)
    (8, 32, 0, 30),
    (16, 64, 0, 30),
    (32, 128, 0, 20),
    (64, 256, 0, 10),
    (32, 256, 4, 7),
    (64, 512, 8, 3),
]
_TASK_SHAPES = [  # (cpu millis, memory MiB, gpus, weight)
    (250, 512, 0, 15),
    (500, 1024, 0, 20),
    (1000, 2048, 0, 20),
    (1000, 4096, 0, 10),
    (2000, 4096, 0, 10),
    (2000, 8192, 0, 6),
    (4000, 8192, 0, 5),
    (4000, 16384, 0, 4),
    (8000, 32768, 0, 3),
    (4000, 32768, 1, 4),
    (8000, 65536, 2, 2),
    (16000, 131072, 4, 1),
]
_REGIONS = ("eu-west", "us-east", "ap-south")
_DOMAINS = ("acme", "globex", "initech", "umbrella")


def _pick(rng: random.Random, table: list[tuple[int, int, int, int]]) -> tuple[int, int, int]:
    row = rng.choices(table, weights=[r[3] for r in table])[0]
    return row[0], row[1], row[2]


def build_cluster(nodes: int, seed: int, busy: float = 0.4) -> ClusterView:
    """`nodes` nodes, each up to `busy` full of running lower-priority work."""
    rng = random.Random(seed)
    views = []
    seq = 0
    for i in range(nodes):
        cores, mem_gi, gpus, = _pick(rng, _NODE_SHAPES)
        capacity = Resources(cores * 1000, mem_gi * GI, 500 * GI, gpus, cores)
        state = NodeState.ACTIVE
        roll = rng.random()
        if roll < 0.03:
            state = NodeState.CORDONED
        elif roll < 0.04:
            state = NodeState.DOWN
        region = _REGIONS[i % len(_REGIONS)]
        labels = {"region": region, "zone": f"{region}-{rng.randint(1, 3)}",
                  "arch": "arm64" if rng.random() < 0.2 else "amd64"}
        if gpus:
            labels["gpu"] = "h100" if rng.random() < 0.5 else "a100"
        running = []
        allocated = Resources()
        target = rng.random() * busy
        while True:
            cpu, mem_mi, _ = _pick(rng, _TASK_SHAPES[:8])
            res = Resources(cpu, mem_mi * MI, 0, 0, 1)
            after = allocated + res
            if after.cpu_millis > capacity.cpu_millis * target or after.slots > capacity.slots:
                break
            allocated = after
            seq += 1
            running.append(RunningTask(f"r{seq}", f"rw{seq % 300}", rng.choice(_DOMAINS),
                                       rng.randint(0, 5), res, None, f"n{i}", rng.random() < 0.9))
        views.append(NodeView(f"n{i}", f"node-{i:05d}", rng.choice(_DOMAINS), state, labels, capacity,
                              allocated, tuple(running)))
    limits = ConcurrencyLimits(
        per_domain={"umbrella": nodes * 3},
        per_node=48,
        per_workflow={f"w{i}": 25 for i in range(0, 600, 7)},
        semaphores={"gpu-lab": max(8, nodes // 20), "license-x": 40},
    )
    return ClusterView(tuple(views), version=1, limits=limits)


def build_tasks(count: int, seed: int, node_ids: list[str]) -> list[TaskRequest]:
    rng = random.Random(seed + 1)
    tasks = []
    for i in range(count):
        cpu, mem_mi, gpus = _pick(rng, _TASK_SHAPES)
        constraints: dict[str, str] = {}
        roll = rng.random()
        if gpus:
            constraints["gpu"] = "h100" if roll < 0.3 else "a100" if roll < 0.4 else ""
            if not constraints["gpu"]:
                del constraints["gpu"]
        elif roll < 0.15:
            constraints["region"] = rng.choice(_REGIONS)
        elif roll < 0.2:
            constraints["arch"] = "arm64"
        excluded = frozenset(rng.sample(node_ids, 2)) if rng.random() < 0.02 and node_ids else frozenset()
        semaphore = "gpu-lab" if gpus else ("license-x" if rng.random() < 0.02 else None)
        tasks.append(TaskRequest(
            task_id=f"t{i}", workflow_id=f"w{rng.randrange(600)}", domain=rng.choice(_DOMAINS),
            priority=rng.randint(0, 10), submitted_seq=i,
            resources=Resources(cpu, mem_mi * MI, 0, gpus, 1), semaphore=semaphore,
            constraints=constraints, excluded_nodes=excluded,
        ))
    return tasks


def run_scenario(nodes: int, tasks: int, *, busy: float, repeat: int, seed: int, scorer: str, order: str,
                 max_candidates: int | None) -> dict[str, Any]:
    """Build one cluster and task set, plan it `repeat` times (a fresh rng each), keep every time."""
    view = build_cluster(nodes, seed, busy=busy)
    pending = build_tasks(tasks, seed, [n.id for n in view.nodes])
    profile = builtin_registry().profile(scorer, scorers={scorer: 1.0}, node_order=order)
    times = []
    plan = None
    for r in range(repeat):
        start = time.perf_counter()
        plan = schedule(view, pending, profile, random.Random(seed + r), max_candidates=max_candidates)
        times.append(time.perf_counter() - start)
    assert plan is not None
    return {
        "scenario": f"{nodes}x{tasks}@{busy:g}",
        "nodes": nodes,
        "tasks": tasks,
        "busy": busy,
        "scorer": scorer,
        "order": order,
        "median_s": round(statistics.median(times), 4),
        "best_s": round(min(times), 4),
        "runs_s": [round(t, 4) for t in times],
        "placed": len(plan.placements),
        "unplaced": len(plan.unplaced),
        "preemptions": len(plan.preemptions),
        "classes": plan.stats["classes"],
        "class_checks": plan.stats["class_checks"],
        "cycle_checks": plan.stats["cycle_checks"],
        "explained_nodes": plan.stats["explained_nodes"],
        "pairs": nodes * tasks,
    }


COLUMNS = [
    ("nodes", "nodes"),
    ("tasks", "tasks"),
    ("busy", "busy ≤"),
    ("scorer", "scorer"),
    ("order", "order"),
    ("median_s", "median s"),
    ("best_s", "best s"),
    ("placed", "placed"),
    ("unplaced", "unplaced"),
    ("preemptions", "preempted"),
    ("classes", "classes"),
    ("class_checks", "class checks"),
    ("cycle_checks", "cycle checks"),
    ("pairs", "task×node pairs"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scheduling_core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="passes per scenario (median and best kept)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scorer", choices=("binpack", "spread"), default="binpack")
    parser.add_argument("--order", choices=("best_fit", "worst_fit", "random"), default=None,
                        help="node order (default: best_fit with binpack, random with spread)")
    parser.add_argument("--max-candidates", type=int, default=None, help="default: about log2(nodes)")
    parser.add_argument("--scenario", action="append", metavar="NODESxTASKS[@BUSY]",
                        help="e.g. 1000x10000 or 1000x10000@1.2: nodes start up to BUSY full (default 0.4); "
                             "repeatable; default: 1000x10000, 10000x10000 and 1000x10000@1.2")
    args = parser.parse_args(argv)
    order = args.order or ("random" if args.scorer == "spread" else "best_fit")
    info = machine()
    results = []
    for spec in args.scenario or ["1000x10000", "10000x10000", "1000x10000@1.2"]:
        size, _, busy = spec.lower().partition("@")
        nodes, tasks = (int(x) for x in size.split("x"))
        log(f"scheduling {tasks} tasks on {nodes} nodes (busy up to {busy or 0.4}), {args.repeat} pass(es)")
        results.append(run_scenario(nodes, tasks, busy=float(busy or 0.4), repeat=args.repeat, seed=args.seed,
                                    scorer=args.scorer, order=order, max_candidates=args.max_candidates))
    print_table(results, COLUMNS, title=f"one schedule() pass, median of {args.repeat}; {describe_machine(info)}")
    emit_json("scheduling_core", {"machine": info, "argv": sys.argv[1:] if argv is None else argv,
                                  "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
