"""Autoscaler reaction time: from tasks queued with no node to run them, to a new node Active.

Starts a real coordinator (SQLite, or `--db` PostgreSQL), creates a `local` pool (min 0) whose
label the workflow's tasks require, submits a fan-out, and measures per run:

* `decide_s`: submit -> the autoscaler's `pool.scaled` decision (includes `--scale-up-after`);
* `start_s`: decision -> the new agents' nodes Active (process start, key, registration);
* `queue_to_active_s`: submit -> first new node Active (the figure the issue asks for);
* `queue_to_task_s`: submit -> the first task started on a pool node.

Then the pool is resized to 0 and the run waits for its nodes to retire (`retire_s`).

    python -m benchmarks.autoscaler --runs 3 [--nodes 2] [--scale-up-after 1] [--db URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import describe_machine, emit_json, log, machine, median, print_table
from polyfabric.client.jobs import JobsClient
from polyfabric.testing import CoordinatorProcess, wait_until


def _one_run(coordinator: CoordinatorProcess, run: int, nodes: int, scale_up_after: float) -> dict[str, Any]:
    api = coordinator.api()
    jobs = JobsClient(coordinator.url, coordinator.admin_token)
    name = f"bench-{run}"
    api.post("/v1/pools", {"name": name, "domain": "bench", "provider": "local", "min": 0, "max": nodes,
                           "slots": 1, "labels": {"role": name}, "idle": 3600, "scale_up_after": scale_up_after,
                           "cpu": "1", "memory": "1Gi", "start_timeout": 120})
    doc = {"name": "autoscale", "tasks": {"work": {"foreach": list(range(nodes)), "constraints": {"role": name},
                                                  "command": [sys.executable, "-c", "pass"]}}}
    submitted = time.time()
    job_id = jobs.submit(doc, None, "bench")["id"]

    def decided() -> float | None:
        records = api.get("/v1/audit", subject=f"pool:{name}", kind="pool.scaled", limit=10)
        return records[0]["at"] if records else None

    decided_at = wait_until(decided, timeout=120, interval=0.05, message="the scale-up decision")

    def active() -> float | None:
        pool = api.get(f"/v1/pools/{name}")
        ids = [m["node_id"] for m in pool["members"] if m["state"] == "active"]
        if not ids:
            return None
        return min(api.get(f"/v1/nodes/{i}")["state_since"] for i in ids)

    active_at = wait_until(active, timeout=180, interval=0.05, message="a pool node Active")
    final = jobs.wait(job_id, timeout=300)
    started = [a["started_at"] for t in jobs.tasks(job_id) if t["key"] != "work"
               for a in jobs.task(t["id"])["attempts"] if a.get("started_at")]
    api.request("PATCH", f"/v1/pools/{name}", json={"min": 0, "max": 0})
    resized = time.time()
    wait_until(lambda: api.get(f"/v1/pools/{name}")["size"] == 0, timeout=180, interval=0.1,
               message="the pool back to 0")
    retire_s = time.time() - resized
    api.delete(f"/v1/pools/{name}")
    api.close()
    jobs.close()
    return {"run": run, "status": final["status"], "decide_s": decided_at - submitted,
            "start_s": active_at - decided_at, "queue_to_active_s": active_at - submitted,
            "queue_to_task_s": (min(started) - submitted) if started else None, "retire_s": retire_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=2, help="nodes the fan-out needs (one slot each)")
    parser.add_argument("--scale-up-after", type=float, default=1.0)
    parser.add_argument("--db", default=None, help="a PostgreSQL URL (default: SQLite in a temporary dir)")
    args = parser.parse_args(argv)
    info = machine()
    log(f"machine: {describe_machine(info)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pf-autoscaler-") as tmp:
        coordinator = CoordinatorProcess(Path(tmp) / "coordinator", args.db)
        coordinator.start()
        try:
            for run in range(args.runs):
                row = _one_run(coordinator, run, args.nodes, args.scale_up_after)
                log(f"run {run}: {row}")
                rows.append(row)
        finally:
            coordinator.stop()
    summary = {key: median([r[key] for r in rows]) for key in
               ("decide_s", "start_s", "queue_to_active_s", "queue_to_task_s", "retire_s")}
    summary.update(runs=len(rows), nodes=args.nodes, scale_up_after_s=args.scale_up_after,
                   store="postgresql" if args.db else "sqlite")
    print(f"\nautoscaler on {describe_machine(info)}\nmedian of {len(rows)} run(s)")
    print_table([summary], [("store", "store"), ("nodes", "nodes"), ("scale_up_after_s", "scale-up-after s"),
                            ("decide_s", "decide s"), ("start_s", "start s"),
                            ("queue_to_active_s", "queue->Active s"), ("queue_to_task_s", "queue->task s"),
                            ("retire_s", "retire s")])
    emit_json("autoscaler", {"machine": info, "argv": argv or sys.argv[1:], "median": summary, "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
