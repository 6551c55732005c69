"""Scheduling throughput through the coordinator's service layer, policies and negotiation on vs off.

    python -m benchmarks.scheduling_policies_system                 # 1,000 nodes, 10,000 tasks, 3 runs each
    python -m benchmarks.scheduling_policies_system --nodes 100 --tasks 1000 --repeat 1

`benchmarks.scheduling_policies` times the pure planner (`schedule()`) alone. This one measures
what a user of the system gets (issue 6's target: with policies and negotiation on, at most 25 %
slower than off): tasks placed, committed durably to SQLite and started, per second, through the
real `JobRuntime` of `Services` in this process (a SQLite file store with `synchronous=FULL`, a
FakeClock), with simulated agents that answer their leases in-process as the real agent does.

Set-up (not timed), on a fresh store per run: the nodes of `scheduling_core.build_cluster`
(shapes, domains, region/zone/arch/gpu labels; all Active and empty: its cordoned/down states
and running work are left out) are registered and heartbeated Active; jobs totalling `--tasks`
tasks are submitted (~600 workflows for 10,000: one to four task definitions each, fanned out
with `foreach`; the resource shapes of `scheduling_core`, GPU shapes held to half of the
fabric's GPUs so that all the demand can fit; ~15 % region and ~5 % arm64 constraints, GPU
model constraints; job labels batch/window; ~10 % of the tasks labelled residency eu/us, ~5 %
with a `requires:`, ~5 % with a `rank:`).
"on" also applies the 20 policies of `scheduling_policies.POLICIES` through `PolicyService.apply`
(what `polyfabric policy apply` calls) as admin before the jobs arrive, and gives a third of the
nodes an owner policy (`scheduling_policies.owner_policies`) held by a real `agent.policy.Negotiator`
per node (one long-lived evaluator each, Ed25519-signed declines).

Timed, the same loop both ways until no task is pending (or a pass makes no progress):
`runtime.schedule_once()` (the pass, its commit), then for every node `runtime.leases_for(node)`;
a node with leases answers all of them in one `runtime.report` (one commit per reporting node):
a node with an owner policy asks its Negotiator (accept -> `started`, decline -> a signed
`declined` event: the runtime re-queues the task without that node); a node without one reports
every lease `started`. The FakeClock moves 1 s per pass (offers are answered long before the
runtime's 30 s offer timeout); the benchmark's own bookkeeping between rounds is not timed. The
runtime's random source is seeded (`--seed`): every run makes the same placements and declines.

Reported per mode (medians of `--repeat` runs, OFF and ON alternating): wall and process CPU
seconds of the loop, split into the passes and the agents' rounds (leases + reports) and into
the first round (pass 1 and its answers) and the later ones (the declined tasks again), tasks
started per second, passes of the loop, what the runtime itself counts (its metrics: planning
passes, also those run inside a commit, and their seconds; group commits and their seconds;
placements, a declined task being placed again), declines, reports, and what is still pending at
the end with the runtime's explanation. The owner-policy evaluation's CPU is measured apart (on a
real fabric every agent answers on its own machine, in parallel), and the ON/OFF ratios are
given with and without it.

The process's young GC threshold is the coordinator's (`polyfabric server --gc-threshold`,
default 10,000: coordinator/gc_settings.py); `--gc-threshold 0` measures with CPython's 700.

Notes: the reports here arrive one by one, so every reporting node costs one SQLite commit (a
live coordinator's group commit merges concurrent reports), and the runtime is used as
`Services.build` makes it (`plan_on_commit` off: passes run only from this loop; the scheduler
controller turns it on in a coordinator, `--plan-on-commit` measures that: a report that frees
slots or declines then runs a pass inside its own commit).
Prints a table and one JSON line (`{"benchmark": "scheduling_policies_system", ...}`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import polyfabric  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchmarks._common import describe_machine, emit_json, log, machine, median_of_runs, print_table
from benchmarks.scheduling_core import _DOMAINS, _REGIONS, _TASK_SHAPES, build_cluster
from benchmarks.scheduling_policies import _NOON, POLICIES, owner_policies
from polyfabric.agent.policy import Negotiator
from polyfabric.coordinator.bootstrap import UuidIds
from polyfabric.coordinator.gc_settings import DEFAULT_GC_THRESHOLD, apply_gc_threshold
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.node_states import NodeState
from polyfabric.observability import metrics as obs
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.nodes import Registration
from polyfabric.store import migrate
from polyfabric.store.unit_of_work import SqlStore
from polyfabric.testing import FakeClock
from polyfabric.testing.signer import TestSigner

__all__ = ["build_jobs", "main"]

ADMIN = Principal("token", "at-admin", "admin", Role.ADMIN, ("*",))
TASKS_PER_JOB = 10_000 / 600  # ~600 jobs for 10,000 tasks
PASS_S = 1.0  # the FakeClock's step per pass
PER_PASS_FIELDS = ("placed", "declined", "started", "reports", "queued after", "pass cpu s", "agents cpu s",
                   "owners cpu s")
_CPU_SHAPES = [s for s in _TASK_SHAPES if s[2] == 0]


# --------------------------------------------------------------------------------------------
# the workload


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    """`total` as `parts` random positive integers (a random composition)."""
    parts = max(1, min(parts, total))
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    edges = [0, *cuts, total]
    return [b - a for a, b in itertools.pairwise(edges)]


def _shape(rng: random.Random, table: list[tuple[int, int, int, int]]) -> tuple[int, int, int]:
    row = rng.choices(table, weights=[r[3] for r in table])[0]
    return row[0], row[1], row[2]


def build_jobs(tasks: int, seed: int, gpu_budget: int) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, int]]:
    """(domain, workflow document) per job, with `tasks` task instances in all, and what they ask
    for in total. GPU shapes are taken while they fit in `gpu_budget` GPUs, CPU-only ones after."""
    rng = random.Random(seed + 1)
    n_jobs = max(1, min(tasks, round(tasks / TASKS_PER_JOB)))
    out: list[tuple[str, dict[str, Any]]] = []
    demand = {"cpu_millis": 0, "memory_mib": 0, "gpus": 0, "residency": 0, "requires": 0, "rank": 0,
              "constrained": 0}
    for j, size in enumerate(_split(rng, tasks, n_jobs)):
        domain = rng.choice(_DOMAINS)
        labels: dict[str, str] = {}
        roll = rng.random()
        if roll < 0.05:
            labels["batch"] = "night"
        elif roll < 0.1:
            labels["window"] = rng.choice(["weekday", "office"])
        specs: dict[str, Any] = {}
        for d, count in enumerate(_split(rng, size, rng.choice([1, 1, 1, 2, 3, 4]))):
            cpu, mem_mi, gpus = _shape(rng, _TASK_SHAPES)
            if gpus and demand["gpus"] + gpus * count > gpu_budget:
                cpu, mem_mi, gpus = _shape(rng, _CPU_SHAPES)
            body: dict[str, Any] = {"function": "bench.work:run",
                                    "resources": {"cpu": f"{cpu}m", "memory": f"{mem_mi}Mi", "gpus": gpus}}
            if count > 1:
                body["foreach"] = list(range(count))
            constraints: dict[str, str] = {}
            task_labels: dict[str, str] = {}
            roll = rng.random()
            if gpus:
                if roll < 0.3:
                    constraints["gpu"] = "h100"
                elif roll < 0.4:
                    constraints["gpu"] = "a100"
            elif roll < 0.15:
                constraints["region"] = rng.choice(_REGIONS)
            elif roll < 0.2:
                constraints["arch"] = "arm64"
            roll = rng.random()
            if roll < 0.05:  # residency decides the region: no clashing region constraint
                task_labels["residency"] = "eu"
                constraints.pop("region", None)
            elif roll < 0.1:
                task_labels["residency"] = "us"
                constraints.pop("region", None)
            arm = constraints.get("arch") == "arm64"
            if 0.1 <= roll < 0.15 and not arm:
                body["requires"] = 'node.labels.arch == "amd64"'
                demand["requires"] += count
            elif 0.15 <= roll < 0.2:
                body["rank"] = "node.cpu / 1000"
                demand["rank"] += count
            if rng.random() < 0.05:
                task_labels["audit"] = "yes"
            if rng.random() < 0.05 and not arm:
                task_labels["tier"] = "gold"
            if constraints:
                body["constraints"] = constraints
                demand["constrained"] += count
            if task_labels:
                body["labels"] = task_labels
            demand["residency"] += count if "residency" in task_labels else 0
            demand["cpu_millis"] += cpu * count
            demand["memory_mib"] += mem_mi * count
            demand["gpus"] += gpus * count
            specs[f"t{d}"] = body
        doc: dict[str, Any] = {"name": f"w{j}", "priority": rng.randint(0, 10), "tasks": specs}
        if labels:
            doc["labels"] = labels
        out.append((domain, doc))
    return out, demand


# --------------------------------------------------------------------------------------------
# one run: a fresh store, the fabric, the jobs, then the timed loop


class _Fabric:
    """One coordinator's services over a fresh SQLite file store, the nodes registered and Active,
    the jobs submitted; with `policies`, the 20 policies applied and the owners' negotiators."""

    def __init__(self, nodes: int, tasks: int, seed: int, policies: bool, plan_on_commit: bool,
                 private_owners: bool = False) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="pf-bench-sys-"))
        self.store = SqlStore(f"sqlite:///{self.tmp / 'db.sqlite'}")
        migrate.upgrade(self.store.engine)
        self.clock = FakeClock(_NOON)
        self.services = Services.build(ServiceContext(store=self.store, clock=self.clock, ids=UuidIds(),
                                                      signer=TestSigner()))
        self.runtime = self.services.runtime
        self.runtime._rng = random.Random(seed)  # the pass's shuffles: the same in every run
        view = build_cluster(nodes, seed)
        tokens = {d: self.services.tokens.create_join(ADMIN, domain=d, ttl_s=None, uses=None).token
                  for d in _DOMAINS}
        owners = owner_policies(view, seed) if policies else {}
        self.node_ids: list[str] = []
        self.negotiators: dict[str, Negotiator] = {}
        self.gpus = 0
        self.capacity_cpu = 0
        self.capacity_mem_mib = 0
        for n in view.nodes:
            key = generate_private_key()
            owner = owners.get(n.id)
            if owner is not None and private_owners:
                owner = dataclasses.replace(owner, advertise=False)
            # What the agent declares: its owner's policy too, unless the owner keeps it private.
            advertised = owner.advertised() if owner is not None else None
            node = self.services.nodes.register(
                Registration(public_key=public_key_raw(key), name=n.name, labels=dict(n.labels),
                             capacity=n.capacity, facts={"owner_policy": advertised} if advertised else {}),
                tokens[n.domain])
            entry = self.services.nodes.heartbeat(node.id, {}, None)
            if self.services.nodes.needs_settle(entry):
                self.services.nodes.settle(node.id)
            self.node_ids.append(node.id)
            self.gpus += n.capacity.gpus
            self.capacity_cpu += n.capacity.cpu_millis
            self.capacity_mem_mib += n.capacity.memory_bytes // 2**20
            if owner is not None:
                cap = n.capacity
                variables = {"id": node.id, "name": n.name, "domain": n.domain, "labels": dict(n.labels),
                             "state": NodeState.ACTIVE.value, "cpu": cap.cpu_millis, "memory": cap.memory_bytes,
                             "gpus": cap.gpus, "slots": cap.slots}
                negotiator = Negotiator(None, lambda v=variables: v, node.id, key.sign, clock=self.clock.now)
                negotiator.policy = owner
                self.negotiators[node.id] = negotiator
        assert all(e.state == NodeState.ACTIVE for e in self.services.ctx.liveness.entries())
        if policies:
            assert self.services.policies is not None
            for doc in POLICIES:
                self.services.policies.apply(ADMIN, doc)
        jobs, self.demand = build_jobs(tasks, seed, gpu_budget=self.gpus // 2)
        for domain, doc in jobs:
            self.runtime.submit(ADMIN, doc, {}, domain)
        self.jobs = len(jobs)
        self.queued_at_start = self.runtime.stats()["queued"]
        self.runtime.plan_on_commit = plan_on_commit  # after the submits: they would place their tasks

    def close(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _metric(metric: Any, suffix: str) -> float:
    """A sample of one of the runtime's Prometheus metrics (`_count`, `_sum`, `_total`)."""
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith(suffix) and not sample.labels:
                return float(sample.value)
    return 0.0


def _counters() -> dict[str, float]:
    """What the runtime itself counts: planning passes (also those run inside a commit with
    plan_on_commit) and their seconds, placements, group commits and their seconds."""
    return {"plans": _metric(obs.SCHEDULING_PASS_SECONDS, "_count"),
            "plan_s": _metric(obs.SCHEDULING_PASS_SECONDS, "_sum"),
            "placements": _metric(obs.SCHEDULING_PLACEMENTS, "_total"),
            "commits": _metric(obs.RUNTIME_COMMIT_SECONDS, "_count"),
            "commit_s": _metric(obs.RUNTIME_COMMIT_SECONDS, "_sum")}


def _loop(f: _Fabric, max_passes: int) -> dict[str, Any]:
    """The timed part: passes and agents' answers until nothing is pending or nothing moves.

    Timed are the passes (`schedule_once`) and the agents' rounds (`leases_for`, the owners'
    answers, `report`); the benchmark's own bookkeeping between them (the clock, counting what
    is still queued) is not."""
    runtime = f.runtime
    started: dict[str, set[tuple[str, int]]] = {n: set() for n in f.node_ids}
    passes = placements = declines = starts = reports = 0
    sched_wall = sched_cpu = agents_wall = agents_cpu = owner_cpu = first_wall = first_cpu = 0.0
    per_pass: list[list[Any]] = []  # PER_PASS_FIELDS
    before = _counters()
    while passes < max_passes:
        if passes:
            f.clock.advance(PASS_S)
        passes += 1
        w, c = time.perf_counter(), time.process_time()
        placed = runtime.schedule_once()
        w1, c1 = time.perf_counter(), time.process_time()
        pass_declines = pass_starts = pass_reports = 0
        pass_owner = 0.0
        for node_id in f.node_ids:
            held = started[node_id]
            leases, _cancels = runtime.leases_for(node_id, held)
            if not leases:
                continue
            negotiator = f.negotiators.get(node_id)
            at = f.clock.now()
            events = []
            for lease in leases:
                ident = (lease["task_id"], lease["attempt"])
                declined = None
                if negotiator is not None:
                    c_eval = time.process_time()
                    declined = negotiator.answer(lease, ident)
                    pass_owner += time.process_time() - c_eval
                if declined is None:
                    events.append({"type": "started", "task_id": ident[0], "attempt": ident[1], "at": at})
                    held.add(ident)
                    pass_starts += 1
                else:
                    events.append({"type": "declined", "task_id": ident[0], "attempt": ident[1], "at": at,
                                   **declined})
                    pass_declines += 1
            running = [{"task_id": t, "attempt": a} for (t, a) in held]
            answer = runtime.report(node_id, events, [], running)
            pass_reports += 1
            if answer["refused"]:
                raise AssertionError(f"the runtime refused reports of {node_id}: {answer['refused'][:3]}")
        w2, c2 = time.perf_counter(), time.process_time()
        sched_wall += w1 - w
        sched_cpu += c1 - c
        agents_wall += w2 - w1
        agents_cpu += c2 - c1
        owner_cpu += pass_owner
        if passes == 1:
            first_wall, first_cpu = w2 - w, c2 - c
        placements += placed
        declines += pass_declines
        starts += pass_starts
        reports += pass_reports
        queued = runtime.stats()["queued"]
        per_pass.append([placed, pass_declines, pass_starts, pass_reports, queued, round(c1 - c, 3),
                         round(c2 - c1, 3), round(pass_owner, 4)])
        if not queued or (placed == 0 and pass_declines == 0):
            break
    counted = {k: v - before[k] for k, v in _counters().items()}
    stats = runtime.stats()
    assert stats["running"] == starts, (stats["running"], starts)
    wall, cpu = sched_wall + agents_wall, sched_cpu + agents_cpu
    with runtime._lock:  # why the tasks left wait (the runtime's explanation), a few of them
        pending_reasons = sorted(set(runtime.pending_reasons.values()))[:5]
    return {"wall_s": wall, "cpu_s": cpu, "pass_wall_s": sched_wall, "pass_cpu_s": sched_cpu,
            "agents_wall_s": agents_wall, "agents_cpu_s": agents_cpu, "owner_cpu_s": owner_cpu,
            "cpu_wo_owner_s": cpu - owner_cpu, "started": starts, "started_per_s": starts / wall if wall else None,
            "first_round_wall_s": first_wall, "first_round_cpu_s": first_cpu,
            "later_rounds_wall_s": wall - first_wall, "later_rounds_cpu_s": cpu - first_cpu,
            "passes": passes, "placements": int(counted["placements"]), "placed_by_loop_passes": placements,
            "plans": int(counted["plans"]), "plan_s": counted["plan_s"], "commits": int(counted["commits"]),
            "commit_s": counted["commit_s"], "declines": declines, "reports": reports,
            "pending": stats["queued"], "pending_reasons": pending_reasons, "per_pass": per_pass}


def one_run(mode: str, nodes: int, tasks: int, seed: int, max_passes: int, plan_on_commit: bool,
            private_owners: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    fabric = _Fabric(nodes, tasks, seed, policies=mode == "on", plan_on_commit=plan_on_commit,
                     private_owners=private_owners)
    try:
        setup = time.perf_counter() - t0
        log(f"  {mode}: set-up {setup:.1f}s ({nodes} nodes, {fabric.jobs} jobs, {fabric.queued_at_start} tasks "
            f"queued, {len(fabric.negotiators)} owner policies); timing the loop")
        # Every run starts from a collected heap: the previous run's fabric (cycles that only a
        # full collection frees: 140,000-240,000 objects) would otherwise be scanned by this
        # run's full collections, and the mode that runs second would pay for the first's.
        gc.collect()
        result = _loop(fabric, max_passes)
        result.update(mode=mode, setup_s=setup, jobs=fabric.jobs, tasks=fabric.queued_at_start,
                      owner_policies=len(fabric.negotiators),
                      policies=len(fabric.services.runtime.current_policies()),
                      demand_cpu_pct=round(100 * fabric.demand["cpu_millis"] / fabric.capacity_cpu, 1),
                      demand_mem_pct=round(100 * fabric.demand["memory_mib"] / fabric.capacity_mem_mib, 1),
                      demand_gpus=fabric.demand["gpus"], fabric_gpus=fabric.gpus,
                      residency=fabric.demand["residency"], requires=fabric.demand["requires"],
                      rank=fabric.demand["rank"])
    finally:
        fabric.close()
    log(f"  {mode}: {result['wall_s']:.2f}s wall, {result['cpu_s']:.2f}s CPU, {result['passes']} passes, "
        f"{result['started']} started, {result['declines']} declines, {result['pending']} pending")
    return result


# --------------------------------------------------------------------------------------------
# output


def _round(run: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in run.items()}


def _ratios(off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 3) if b else None

    return {"wall": ratio(on["wall_s"], off["wall_s"]), "cpu": ratio(on["cpu_s"], off["cpu_s"]),
            "cpu_wo_owner": ratio(on["cpu_wo_owner_s"], off["cpu_s"]),
            "wall_wo_owner": ratio(on["wall_s"] - on["owner_cpu_s"], off["wall_s"]),
            "pass_cpu": ratio(on["pass_cpu_s"], off["pass_cpu_s"]),
            "agents_cpu_wo_owner": ratio(on["agents_cpu_s"] - on["owner_cpu_s"], off["agents_cpu_s"]),
            "started_per_s": ratio(on["started_per_s"], off["started_per_s"])}


COLUMNS = [("mode", "mode"), ("nodes", "nodes"), ("tasks", "tasks"), ("wall_s", "wall s"), ("cpu_s", "cpu s"),
           ("first_round_cpu_s", "1st round cpu s"), ("later_rounds_cpu_s", "later rounds cpu s"),
           ("pass_cpu_s", "passes cpu s"), ("agents_cpu_s", "agents cpu s"), ("owner_cpu_s", "of which owners s"),
           ("cpu_wo_owner_s", "cpu w/o owners s"), ("started_per_s", "started/s"), ("passes", "passes"),
           ("plans", "plans"), ("plan_s", "plans s"), ("commits", "commits"), ("commit_s", "commits s"),
           ("placements", "placements"), ("declines", "declines"), ("reports", "reports"),
           ("started", "started"), ("pending", "pending")]
RATIO_COLUMNS = [("wall", "wall on/off"), ("cpu", "cpu on/off"), ("cpu_wo_owner", "cpu w/o owners on/off"),
                 ("wall_wo_owner", "wall w/o owners on/off"), ("pass_cpu", "passes cpu on/off"),
                 ("agents_cpu_wo_owner", "agents cpu w/o owners on/off"), ("started_per_s", "started/s on/off")]


@contextlib.contextmanager
def _quiet_runtime_log() -> Iterator[None]:
    """The runtime logs nothing at INFO per task, but keep stray warnings off the table anyway."""
    import logging

    logger = logging.getLogger("polyfabric")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scheduling_policies_system", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode, OFF and ON alternating (medians)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-passes", type=int, default=50, help="stop a run after this many passes")
    parser.add_argument("--plan-on-commit", action="store_true",
                        help="as in a coordinator: a commit that frees slots or declines runs a pass first")
    parser.add_argument("--private-owners", action="store_true",
                        help="owners keep their policies private (advertise: false): the coordinator offers "
                             "blindly and learns from declines")
    parser.add_argument("--mode", choices=("both", "off", "on"), default="both",
                        help="run only one mode (for profiling); ratios need both")
    parser.add_argument("--gc-threshold", type=int, default=DEFAULT_GC_THRESHOLD,
                        help="the young GC threshold, as `polyfabric server --gc-threshold` sets it "
                             "(default: the server's; 0: CPython's 700)")
    args = parser.parse_args(argv)
    gc_thresholds = apply_gc_threshold(args.gc_threshold)
    info = machine()
    modes = ["off", "on"] if args.mode == "both" else [args.mode]
    log(f"{args.tasks} tasks on {args.nodes} nodes, modes {'/'.join(modes)}, {args.repeat} run(s) each, "
        f"GC thresholds {gc_thresholds}")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with _quiet_runtime_log():
        for r in range(args.repeat):
            for mode in modes:
                log(f"run {r + 1}/{args.repeat}, {mode}")
                runs[mode].append(one_run(mode, args.nodes, args.tasks, args.seed, args.max_passes,
                                          args.plan_on_commit, args.private_owners))
    medians = {}
    for mode in modes:
        m = median_of_runs([{k: v for k, v in run.items() if k != "per_pass"} for run in runs[mode]])
        m["nodes"] = args.nodes
        medians[mode] = _round(m)
    print_table(list(medians.values()), COLUMNS,
                title=f"scheduling through the service layer (SQLite), policies off vs on, median of {args.repeat}"
                      f"{' (plan_on_commit)' if args.plan_on_commit else ''}, GC threshold {gc_thresholds[0]}; "
                      f"{describe_machine(info)}")
    ratios = None
    if "off" in medians and "on" in medians:
        ratios = _ratios(medians["off"], medians["on"])
        print_table([ratios], RATIO_COLUMNS, title="ratios of the medians (target: wall and cpu on/off <= 1.25)")
    emit_json("scheduling_policies_system", {
        "machine": info, "argv": sys.argv[1:] if argv is None else argv, "plan_on_commit": args.plan_on_commit,
        "private_owners": args.private_owners, "gc_thresholds": gc_thresholds,
        "results": medians, "ratios": ratios, "per_pass_fields": PER_PASS_FIELDS,
        "runs": {m: [_round(run) for run in rs] for m, rs in runs.items()}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
