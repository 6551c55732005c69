"""tasks: the four task workloads the peers were measured on, through the real system.

Each run starts a real `polyfabric server` (SQLite in a temporary directory by default, or a fresh
PostgreSQL database next to `--db`) and 2 real agents of 8 slots each, their warm workers
importing `benchmarks.workloads` from the repository root (`--pythonpath`). Start-up (coordinator
healthy, agents Active, then a warm-up job that starts every warm worker) is reported apart from
the workload. The workload is submitted through the API (`JobsClient`), waited for through the
events long-poll (`JobsClient.wait`), and every result is read back through
`GET /v1/jobs/{id}/result` and checked:

    fanout   N function tasks (one foreach task) each returning its input; item i must return i
    chain    N tasks, each depending on the one before and adding 1 to its result; final = N
    dag      N workflow runs one after another, each 100 map tasks (x*x) + 1 reduce (sum)
    sleep    N tasks sleeping 0.1 s on 2 agents x 8 slots; ideal = ceil(N / 16) x 0.1 s

Wall time runs from the first submission to the last result read and checked. Reported: wall_s,
tasks/s, per-step latency (chain), ms per workflow run (dag), overhead over the ideal (sleep),
peak RSS of the coordinator and of the agents (the agent process alone, and all agents with their
warm workers), CPU seconds the coordinator and the agents used, the load average around the run,
and the machine.

    python -m benchmarks.tasks                            # all four, 3 runs each, SQLite
    python -m benchmarks.tasks --workload chain --runs 5
    python -m benchmarks.tasks --workload fanout -n 2000 --runs 1
    python -m benchmarks.tasks --workload all --db postgresql://postgres@127.0.0.1:5432/test --runs 1
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._common import describe_machine, emit_json, log, machine, median_of_runs, print_table, repo_root

__all__ = ["BEST_PEER", "TARGETS", "WORKLOADS", "build", "main", "make_parser", "run_once"]

WORKLOADS = ("fanout", "chain", "dag", "sleep")
DEFAULT_SIZE = {"fanout": 10_000, "chain": 1_000, "dag": 20, "sleep": 200}
DAG_WIDTH = 100
SLEEP_S = 0.1

# The figure each workload is judged by, the best peer's (docs: the performance guide) and our target.
HEADLINE = {"fanout": ("tasks_per_s", "tasks/s", "higher"), "chain": ("per_step_ms", "ms/step", "lower"),
            "dag": ("ms_per_run", "ms/run", "lower"), "sleep": ("overhead_s", "overhead s", "lower")}
BEST_PEER = {"fanout": ("ray", 1037.0), "chain": ("ray", 2.14), "dag": ("ray", 104.0), "sleep": ("ray actors", 0.03)}
TARGETS = {"fanout": 1550.0, "chain": 2.14, "dag": 104.0, "sleep": 0.03}

FN = "benchmarks.workloads"

COLUMNS = [
    ("workload", "workload"), ("db", "db"), ("tasks", "tasks"), ("wall_s", "wall s"), ("tasks_per_s", "tasks/s"),
    ("figure", "figure"), ("unit", "unit"), ("target", "target"), ("best_peer", "best peer"),
    ("submit_s", "submit s"), ("read_s", "read s"), ("startup_s", "startup s"),
    ("coordinator_rss_peak_mb", "coord RSS MB"), ("agent_rss_peak_mb", "agent RSS MB"),
    ("agents_total_rss_peak_mb", "agents+workers MB"), ("coordinator_cpu_s", "coord CPU s"),
    ("agents_cpu_s", "agents CPU s"), ("load_before", "load before"), ("runs", "runs"),
]


# --------------------------------------------------------------------------------------------
# the workflows


def build(workload: str, size: int) -> list[dict[str, Any]]:
    """The workflow documents of one run (dag: one per workflow run, submitted one after another)."""
    if workload == "fanout":
        return [{"name": "bench-fanout", "tasks": {"work": {
            "function": f"{FN}:identity", "foreach": list(range(size)), "args": {"x": "{{ item }}"}}}}]
    if workload == "chain":
        tasks: dict[str, Any] = {"s0": {"function": f"{FN}:add_one", "args": {"x": 0}}}
        for i in range(1, size):
            tasks[f"s{i}"] = {"function": f"{FN}:add_one", "depends_on": [f"s{i - 1}"],
                              "args": {"x": "{{ tasks.s" + str(i - 1) + ".result }}"}}
        return [{"name": "bench-chain", "tasks": tasks}]
    if workload == "dag":
        return [{"name": "bench-dag", "tasks": {
            "map": {"function": f"{FN}:square", "foreach": list(range(DAG_WIDTH)), "args": {"x": "{{ item }}"}},
            "reduce": {"function": f"{FN}:total", "depends_on": ["map"], "args": {"values": "{{ tasks.map.result }}"}},
        }} for _ in range(size)]
    if workload == "sleep":
        return [{"name": "bench-sleep", "tasks": {"nap": {
            "function": f"{FN}:nap", "foreach": list(range(size)), "args": {"seconds": SLEEP_S, "i": "{{ item }}"}}}}]
    raise ValueError(f"unknown workload {workload!r}")


def task_count(workload: str, size: int) -> int:
    return size * (DAG_WIDTH + 1) if workload == "dag" else size


def check(workload: str, size: int, answer: dict[str, Any]) -> str | None:
    """None when the results read back are right; else what is wrong."""
    if answer.get("status") != "succeeded":
        return f"job {answer.get('job_id')} is {answer.get('status')}"
    results = answer.get("tasks") or {}
    if workload == "fanout":
        got = results.get("work")
        if got != list(range(size)):
            wrong = [i for i, v in enumerate(got or []) if v != i][:5]
            return f"fanout: {len(got or [])} results, first wrong items {wrong}"
    elif workload == "chain":
        final = results.get(f"s{size - 1}")
        if final != size or len(results) != size:
            return f"chain: final result {final!r} (expected {size}), {len(results)} results"
    elif workload == "dag":
        expected = sum(i * i for i in range(DAG_WIDTH))
        if results.get("reduce") != expected or results.get("map") != [i * i for i in range(DAG_WIDTH)]:
            return f"dag: reduce = {results.get('reduce')!r}, expected {expected}"
    elif workload == "sleep" and results.get("nap") != list(range(size)):
        return f"sleep: {len(results.get('nap') or [])} results of {size}"
    return None


# --------------------------------------------------------------------------------------------
# measuring the processes


class TreeSampler:
    """Peak RSS of the coordinator and of each agent (alone, and with its warm workers), sampled on
    a thread; CPU seconds of the coordinator and the agents' own processes between marks."""

    def __init__(self, coordinator_pid: int, agent_pids: list[int], interval: float = 0.1) -> None:
        import psutil

        self._psutil = psutil
        self.coordinator = psutil.Process(coordinator_pid)
        self.agents = [psutil.Process(p) for p in agent_pids]
        self.interval = interval
        self.reset()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-tree-sampler", daemon=True)

    def reset(self) -> None:
        self.coordinator_peak = 0
        self.agent_peak = 0
        self.total_peak = 0

    @staticmethod
    def _rss(proc: Any) -> int:
        try:
            return int(proc.memory_info().rss)
        except Exception:
            return 0

    def sample(self) -> None:
        self.coordinator_peak = max(self.coordinator_peak, self._rss(self.coordinator))
        total = 0
        for agent in self.agents:
            own = self._rss(agent)
            self.agent_peak = max(self.agent_peak, own)
            total += own
            try:
                children = agent.children(recursive=True)
            except Exception:
                children = []
            total += sum(self._rss(c) for c in children)
        self.total_peak = max(self.total_peak, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> TreeSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sample()

    def cpu(self) -> tuple[float, float]:
        """(coordinator, agents) CPU seconds so far (user + system; the agents' own processes)."""
        def one(proc: Any) -> float:
            try:
                t = proc.cpu_times()
                return float(t.user + t.system)
            except Exception:
                return 0.0
        return one(self.coordinator), sum(one(a) for a in self.agents)


class Profiler:
    """py-spy recording a process while the workload runs (collapsed stacks, for reading)."""

    def __init__(self, pid: int, path: Path, rate: int = 100, gil: bool = False) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.path = path
        self.proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                                      "--threads", "--output", str(path), "--nonblocking",
                                      *(["--gil"] if gil else [])],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)


# --------------------------------------------------------------------------------------------
# one run


def fresh_db(base: str | None) -> str | None:
    """A new empty PostgreSQL database next to `base` (None: SQLite in the run's directory)."""
    if not base or base == "sqlite":
        return None
    from polyfabric.testing.databases import fresh_postgres_url

    os.environ["POLYFABRIC_TEST_PG"] = base
    return fresh_postgres_url("pfbench")


def _drop_db(url: str | None) -> None:
    if url:
        from polyfabric.testing.databases import drop_postgres_database

        with contextlib.suppress(Exception):
            drop_postgres_database(url)


def _wait_active(api: Any, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = api.get("/v1/nodes")
        if sum(1 for n in nodes if n["state"] == "active") >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the agents did not become Active within {timeout:g}s")


def _submit_wait_read(jobs: Any, doc: dict[str, Any], domain: str, timeout: float) -> tuple[dict[str, Any], float]:
    """Submit, wait (events long-poll), read the result; (answer, seconds the submit call took)."""
    t0 = time.monotonic()
    job = jobs.submit(doc, None, domain)
    submit_s = time.monotonic() - t0
    jobs.wait(job["id"], timeout=timeout)
    return jobs.result(job["id"]), submit_s


def run_once(workload: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    from polyfabric.client.jobs import JobsClient
    from polyfabric.testing import AgentProcess, CoordinatorProcess

    root = Path(tempfile.mkdtemp(prefix=f"pfbench-tasks-{workload}-"))
    db = fresh_db(args.db)
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(args.pythonpath).resolve()),
                                                        env.get("PYTHONPATH")) if p)
    coordinator = CoordinatorProcess(root / "coordinator", db, heartbeat_interval=2.0, unreachable_after=5.0,
                                     down_after=8.0)
    coordinator.env = env
    agents: list[Any] = []
    sampler: TreeSampler | None = None
    profilers: list[Profiler] = []
    out: dict[str, Any] = {"workload": workload, "db": "postgresql" if db else "sqlite", "size": size,
                           "tasks": task_count(workload, size), "ok": False}
    try:
        t0 = time.monotonic()
        coordinator.start(timeout=60)
        out["coordinator_start_s"] = time.monotonic() - t0
        domain = "bench"
        join = coordinator.join_token(domain)
        t1 = time.monotonic()
        for i in range(args.agents):
            agent = AgentProcess(coordinator.url, root / "agents" / f"agent{i}", name=f"bench-agent-{i}",
                                 join_token=join,
                                 extra_args=["--slots", str(args.slots), "--pythonpath", str(repo_root()),
                                             "--stop-grace", "0", "--kill-grace", "1"])
            agent.env = env
            agent.start()
            agents.append(agent)
        with coordinator.api() as api:
            _wait_active(api, args.agents)
        out["agents_start_s"] = time.monotonic() - t1
        jobs = JobsClient(coordinator.url, coordinator.admin_token)
        # Warm-up: one task per slot, all at once, so every warm worker is started before the clock runs.
        t2 = time.monotonic()
        warm = {"name": "bench-warmup", "tasks": {"warm": {
            "function": f"{FN}:nap", "foreach": list(range(args.agents * args.slots)),
            "args": {"seconds": 0.2, "i": "{{ item }}"}}}}
        answer, _ = _submit_wait_read(jobs, warm, domain, 120)
        if answer["status"] != "succeeded":
            raise RuntimeError(f"the warm-up job ended {answer['status']}")
        out["warmup_s"] = time.monotonic() - t2
        out["startup_s"] = out["coordinator_start_s"] + out["agents_start_s"] + out["warmup_s"]

        docs = build(workload, size)
        sampler = TreeSampler(coordinator.pid, [a.pid for a in agents]).start()
        if args.profile:
            prof_dir = Path(args.profile)
            prof_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%H%M%S")
            profilers.append(Profiler(coordinator.pid, prof_dir / f"{workload}-{stamp}-coordinator.txt",
                                      gil=args.profile_gil))
            if args.profile_agent:
                profilers.append(Profiler(agents[0].pid, prof_dir / f"{workload}-{stamp}-agent0.txt",
                                          gil=args.profile_gil))
            time.sleep(0.5)  # let py-spy attach
        out["load_before"] = os.getloadavg()[0]
        cpu0 = sampler.cpu()
        start = time.monotonic()
        per_run: list[float] = []
        submit_total = 0.0
        read_total = 0.0
        problem = None
        for doc in docs:
            r0 = time.monotonic()
            job = jobs.submit(doc, None, domain)
            r1 = time.monotonic()
            jobs.wait(job["id"], timeout=args.timeout)
            r2 = time.monotonic()
            answer = jobs.result(job["id"])
            problem = problem or check(workload, size if workload != "dag" else DAG_WIDTH, answer)
            r3 = time.monotonic()
            submit_total += r1 - r0
            read_total += r3 - r2
            per_run.append(r3 - r0)
        wall = time.monotonic() - start
        cpu1 = sampler.cpu()
        out["load_after"] = os.getloadavg()[0]
        for p in profilers:
            p.stop()
        sampler.stop()
        tasks = out["tasks"]
        out.update(wall_s=wall, tasks_per_s=tasks / wall, submit_s=submit_total, read_s=read_total,
                   coordinator_cpu_s=cpu1[0] - cpu0[0], agents_cpu_s=cpu1[1] - cpu0[1],
                   coordinator_rss_peak_mb=sampler.coordinator_peak / 2**20,
                   agent_rss_peak_mb=sampler.agent_peak / 2**20,
                   agents_total_rss_peak_mb=sampler.total_peak / 2**20)
        if workload == "chain":
            out["per_step_ms"] = 1000.0 * wall / size
        elif workload == "dag":
            out["ms_per_run"] = 1000.0 * wall / size
            out["first_run_ms"] = 1000.0 * per_run[0]
            out["last_run_ms"] = 1000.0 * per_run[-1]
        elif workload == "sleep":
            slots = args.agents * args.slots
            out["ideal_s"] = math.ceil(size / slots) * SLEEP_S
            out["overhead_s"] = wall - out["ideal_s"]
        key = HEADLINE[workload][0]
        out["figure"] = out[key]
        out["unit"] = HEADLINE[workload][1]
        out["target"] = TARGETS[workload]
        out["best_peer"] = BEST_PEER[workload][1]
        out["problem"] = problem
        out["ok"] = problem is None
        if problem:
            log(f"WRONG RESULTS: {problem}")
        jobs.close()
    finally:
        if sampler is not None:
            sampler.stop()
        for p in profilers:
            p.stop()
        for agent in agents:
            agent.stop(timeout=15)
        coordinator.stop(timeout=15)
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
        _drop_db(db)
    return out


# --------------------------------------------------------------------------------------------
# the command


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tasks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=(*WORKLOADS, "all"), default="all",
                        help="which workload (default: all four, one after the other)")
    parser.add_argument("--db", default=None,
                        help="sqlite (default: SQLite in a temporary directory) or postgresql://USER@HOST:PORT/DB: "
                             "each run gets a fresh database created next to this one, dropped afterwards")
    parser.add_argument("--runs", type=int, default=3, help="runs per workload; the table shows medians (3)")
    parser.add_argument("-n", "--size", type=int, default=None,
                        help="tasks (fanout, sleep), steps (chain) or workflow runs (dag) instead of the "
                             "defaults: fanout 10,000, chain 1,000, dag 20, sleep 200")
    parser.add_argument("--agents", type=int, default=2, help="agents (default 2)")
    parser.add_argument("--slots", type=int, default=8, help="slots per agent (default 8)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a job may take (default 900)")
    parser.add_argument("--pythonpath", default=None, metavar="DIR",
                        help="run the coordinator and agents with polyfabric imported from DIR (a copy of another "
                             "version of src/, to compare a change)")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="record the coordinator with py-spy during each workload (collapsed stacks in DIR); "
                             "needs py-spy")
    parser.add_argument("--profile-agent", action="store_true", help="with --profile: record the first agent too")
    parser.add_argument("--profile-gil", action="store_true",
                        help="with --profile: only samples of the thread holding the GIL (where the CPU goes)")
    parser.add_argument("--keep", action="store_true", help="keep each run's data dir and logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    info = machine()
    log(f"machine: {describe_machine(info)}")
    workloads = WORKLOADS if args.workload == "all" else (args.workload,)
    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    failed = False
    for workload in workloads:
        size = args.size or DEFAULT_SIZE[workload]
        runs = []
        for i in range(args.runs):
            log(f"{workload}: size {size} on {'PostgreSQL' if args.db and args.db != 'sqlite' else 'SQLite'}, "
                f"run {i + 1}/{args.runs} (load average {os.getloadavg()[0]:.2f})")
            run = run_once(workload, size, args)
            runs.append(run)
            failed = failed or not run["ok"]
            print_table([run], COLUMNS, title=f"{workload} run {i + 1}/{args.runs}", file=sys.stderr)
        med = median_of_runs(runs)
        med["runs"] = len(runs)
        med["ok"] = all(r["ok"] for r in runs)
        med["wall_s_runs"] = [round(r["wall_s"], 3) for r in runs]
        rows.append(med)
        results.append({"workload": workload, "size": size, "median": med, "runs": runs})
    print(f"\ntasks on {describe_machine(info)}")
    print_table(rows, COLUMNS, title=f"medians of {args.runs} run(s); figure = tasks/s (fanout), ms/step (chain), "
                                     "ms/run (dag), overhead s over the ideal (sleep)")
    emit_json("tasks", {"machine": info, "argv": sys.argv[1:] if argv is None else argv,
                        "agents": args.agents, "slots": args.slots, "targets": TARGETS,
                        "best_peer": {k: {"system": v[0], "figure": v[1]} for k, v in BEST_PEER.items()},
                        "results": results})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
