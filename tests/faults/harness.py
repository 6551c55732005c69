"""What the fault-injection scenarios share: real coordinators and agents, the ledger of executions,
and the tally that turns the coordinator's records and the ledger into the reported figures.

Counting, per job (every figure is reported, the must-be-zero ones also asserted):

* **lost**: tasks with no accepted result at the end (not `succeeded`, or a result that no
  execution in the ledger produced).
* **accepted twice** (from the coordinator's own records): tasks with more than one `succeeded`
  change event (`job_events`, written in the commit that accepts a result) or more than one
  `succeeded` attempt (`task_attempts`), or whose succeeded attempt is not the task's current one.
  From the side effects: the accepted result must carry the RUN id of exactly one ledger line of
  the task, for the attempt the coordinator says succeeded.
* **re-executed**: tasks with more than one ledger line (executions counted by the tasks
  themselves, whatever the coordinator thinks).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from polyfabric.client.jobs import JobsClient
from polyfabric.store.engine import create_engine
from polyfabric.testing import AgentProcess, CoordinatorProcess, wait_until

FAULTS_DIR = Path(__file__).resolve().parent
# Detector settings every fault coordinator runs with (seconds), as in tests/e2e: Down after 3 s.
HEARTBEAT, UNREACHABLE, DOWN = 0.5, 1.5, 3.0
CHECK = min(0.5, HEARTBEAT / 2)
DOWN_BOUND = DOWN + CHECK + 1.5  # the detector's bound plus a margin for a loaded CI box
DOMAIN = "test"
AGENT_ARGS = ["--cpu", "2", "--memory", "4Gi", "--disk", "20Gi", "--gpus", "0", "--kill-grace", "2",
              "--stop-grace", "0", "--pythonpath", str(FAULTS_DIR)]


def short_seconds(index: int) -> float:
    """How long short task number `index` works: 0.05 to 0.3 s."""
    return round(0.05 + (index % 6) * 0.05, 2)


def health(url: str) -> dict[str, Any] | None:
    try:
        return httpx.get(url + "/healthz", timeout=1.0).json()
    except (httpx.HTTPError, ValueError):
        return None


class Fleet:
    """Coordinators on one database, the agents started against them, the database itself."""

    def __init__(self, root: Path, db_url: str, backend: str, *, coordinators: int = 1,
                 extra_args: list[str] | None = None, down: float = DOWN) -> None:
        self.root = root
        self.backend = backend
        self.db_url = db_url
        self.coordinators = [CoordinatorProcess(root / f"coordinator-{i}", db_url, heartbeat_interval=HEARTBEAT,
                                                unreachable_after=min(UNREACHABLE, down / 2), down_after=down,
                                                extra_args=extra_args)
                             for i in range(coordinators)]
        self.agents: list[AgentProcess] = []
        self.engine = create_engine(db_url, pool_size=1)
        self._jobs: JobsClient | None = None
        self._join: str | None = None
        self._count = 0

    # -- processes --------------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [c.url for c in self.coordinators]

    @property
    def token(self) -> str:
        return self.coordinators[0].admin_token

    def start(self) -> Fleet:
        for c in self.coordinators:
            c.start()
        self.leader()
        return self

    def leader(self, among: list[CoordinatorProcess] | None = None, timeout: float = 30.0) -> CoordinatorProcess:
        def find() -> CoordinatorProcess | None:
            for c in among or self.coordinators:
                if c.alive() and (health(c.url) or {}).get("role", "leader") == "leader":
                    return c
            return None

        return wait_until(find, timeout=timeout, interval=0.02, message="a leading coordinator")

    @property
    def jobs(self) -> JobsClient:
        if self._jobs is None:
            self._jobs = JobsClient(",".join(self.urls), self.token)
        return self._jobs

    def start_agents(self, count: int, *, slots: int, prefix: str = "f", urls: list[str] | None = None,
                     wait: bool = True) -> list[AgentProcess]:
        """`count` agents of `slots` slots; with several coordinators each list starts elsewhere."""
        if self._join is None:
            with self.coordinators[0].api(self.token) as api:
                self._join = api.post("/v1/tokens/join", {"domain": DOMAIN})["token"]
        started = []
        for _ in range(count):
            self._count += 1
            name = f"{prefix}-{self._count}"
            order = urls or self.urls
            order = order[self._count % len(order):] + order[:self._count % len(order)]
            agent = AgentProcess(",".join(order), self.root / "agents" / name, name=name, join_token=self._join,
                                 extra_args=[*AGENT_ARGS, "--slots", str(slots)])
            agent.start()
            started.append(agent)
        self.agents.extend(started)
        if wait:
            for agent in started:
                self.wait_node_state(agent, "active", timeout=30)
        return started

    def node_id(self, agent: AgentProcess, timeout: float = 30.0) -> str:
        def joined() -> str | None:
            if not agent.alive():
                raise AssertionError(f"agent {agent.name} exited:\n{agent.log()[-3000:]}")
            return agent.node_id

        return wait_until(joined, timeout=timeout, message=f"agent {agent.name} to register")

    def node_state(self, node_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.text("SELECT state FROM nodes WHERE id = :n"), {"n": node_id}).scalar()

    def wait_node_state(self, ref: AgentProcess | str, state: str, timeout: float = 30.0) -> None:
        node = self.node_id(ref) if isinstance(ref, AgentProcess) else ref
        wait_until(lambda: self.node_state(node) == state, timeout=timeout, interval=0.05,
                   message=f"node {node} to be {state} (now {self.node_state(node)})\n{self.logs()}")

    def retire(self, agents: Iterable[AgentProcess]) -> None:
        """Take agents out of later scenarios' way: retired (no more work), then stopped."""
        agents = list(agents)
        with self.leader().api(self.token) as api:
            for agent in agents:
                node = agent.node_id
                if node and self.node_state(node) not in ("retired", None):
                    api.post(f"/v1/nodes/{node}/retire", {"reason": "fault scenario over"})
        for agent in agents:
            agent.stop()

    def logs(self) -> str:
        parts = [f"--- coordinator {c.url}:\n{c.log()[-3000:]}" for c in self.coordinators]
        parts += [f"--- agent {a.name}:\n{a.log()[-1500:]}" for a in self.agents]
        return "\n".join(parts)

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.close()
        for agent in self.agents:
            agent.stop()
        for c in self.coordinators:
            c.stop()
        self.engine.dispose()

    # -- jobs and the store ---------------------------------------------------------------------

    def submit(self, doc: dict[str, Any]) -> str:
        return str(self.jobs.submit(doc, {}, DOMAIN)["id"])

    def count(self, job_id: str, *statuses: str) -> int:
        marks = ", ".join(f":s{i}" for i in range(len(statuses)))
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(
                f"SELECT count(*) FROM tasks WHERE job_id = :j AND NOT is_group AND status IN ({marks})"),
                {"j": job_id, **{f"s{i}": s for i, s in enumerate(statuses)}}).scalar_one())

    def job_status(self, job_id: str) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT status FROM jobs WHERE id = :j"), {"j": job_id}).scalar_one())

    def wait_job(self, job_id: str, timeout: float = 120.0) -> str:
        """Poll the store (works whichever coordinator is up) until the job is final."""
        final = {"succeeded", "failed", "cancelled"}
        wait_until(lambda: self.job_status(job_id) in final, timeout=timeout, interval=0.1,
                   message=f"job {job_id} to finish (now {self.job_status(job_id)})\n{self.logs()}")
        return self.job_status(job_id)

    def in_flight(self, job_id: str) -> dict[str, tuple[int, str]]:
        """Task id -> (attempt, node) of every attempt leased or running now."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT id, attempt, node_id FROM tasks WHERE job_id = :j AND NOT is_group "
                "AND status IN ('leased', 'running')"), {"j": job_id}).all()
        return {r[0]: (r[1], r[2]) for r in rows}

    def audit(self, action: str, subject_prefix: str = "") -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT seq, at, actor, action, subject, cause, details FROM audit_records "
                "WHERE action = :a ORDER BY seq"), {"a": action}).mappings().all()
        return [dict(r) for r in rows if r["subject"].startswith(subject_prefix)]

    def downs(self, nodes: Iterable[str], since: float = 0.0) -> list[str]:
        """Transitions to Down of these nodes recorded at or after `since` (wall clock)."""
        wanted = {f"node:{n}" for n in nodes}
        return [f"{r['subject']}: {r['cause']}" for r in self.audit("node.transition")
                if r["subject"] in wanted and r["at"] >= since and _details(r).get("to") == "down"]

    def heartbeats_after(self, nodes: Iterable[str], after: float) -> bool:
        nodes = set(nodes)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, last_heartbeat_at FROM nodes")).all()
        fresh = {n for n, at in rows if n in nodes and at is not None and at > after}
        return fresh == nodes


def _details(record: dict[str, Any]) -> dict[str, Any]:
    details = record["details"]
    if isinstance(details, str):  # SQLite JSON through a text() query
        import json

        details = json.loads(details)
    return dict(details or {})


# -- the ledger and the tally ------------------------------------------------------------------------


class Ledger:
    """The file every execution appends `TASK_ID KEY ATTEMPT RUN` to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)

    def lines(self) -> list[tuple[str, str, int, str]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            task_id, key, attempt, run = line.split()
            out.append((task_id, key, int(attempt), run))
        return out

    def executions(self) -> Counter[str]:
        return Counter(task_id for task_id, _, _, _ in self.lines())


@dataclass
class Tally:
    """The figures of one job, from the coordinator's records and the ledger."""

    tasks: int = 0
    succeeded: int = 0
    lost: int = 0
    accepted_twice: int = 0
    accepted_twice_store: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # accepted result not backed by one ledger line
    executions: int = 0
    re_executed: int = 0
    re_executed_keys: list[str] = field(default_factory=list)
    attempts_lost: int = 0
    refused_reports: int = 0

    def figures(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "lost": self.lost, "accepted_twice": self.accepted_twice,
                "re_executed": self.re_executed, "executions": self.executions,
                "attempts_lost": self.attempts_lost, "refused_reports": self.refused_reports}


def tally(fleet: Fleet, job_id: str, ledger: Ledger) -> Tally:
    with fleet.engine.connect() as conn:
        tasks = conn.execute(sa.text(
            "SELECT id, key, status, attempt, result FROM tasks WHERE job_id = :j AND NOT is_group"),
            {"j": job_id}).mappings().all()
        events = Counter(conn.execute(sa.text(
            "SELECT task_id FROM job_events WHERE job_id = :j AND status = 'succeeded'"), {"j": job_id}).scalars())
        attempts = conn.execute(sa.text(
            "SELECT a.task_id, a.attempt, a.status FROM task_attempts a JOIN tasks t ON t.id = a.task_id "
            "WHERE t.job_id = :j"), {"j": job_id}).all()
    wins: dict[str, list[int]] = {}
    for task_id, attempt, status in attempts:
        if status == "succeeded":
            wins.setdefault(task_id, []).append(attempt)
    runs: dict[str, list[tuple[int, str]]] = {}
    for task_id, _, attempt, run in ledger.lines():
        runs.setdefault(task_id, []).append((attempt, run))
    out = Tally(tasks=len(tasks), attempts_lost=sum(1 for _, _, s in attempts if s in ("lost", "evicted")))
    ids = {t["id"] for t in tasks}
    out.refused_reports = sum(1 for r in fleet.audit("task.report_refused")
                              if r["subject"].removeprefix("task:") in ids)
    for t in tasks:
        result = t["result"]
        if isinstance(result, str):
            import json

            result = json.loads(result)
        executed = runs.get(t["id"], [])
        out.executions += len(executed)
        if len(executed) > 1:
            out.re_executed += 1
            out.re_executed_keys.append(t["key"])
        if t["status"] != "succeeded" or not isinstance(result, dict):
            out.lost += 1
            continue
        out.succeeded += 1
        if events[t["id"]] > 1 or len(wins.get(t["id"], [])) > 1 or wins.get(t["id"]) != [t["attempt"]]:
            out.accepted_twice_store.append(f"{t['key']}: events {events[t['id']]}, succeeded attempts "
                                            f"{wins.get(t['id'])}, current {t['attempt']}")
        backing = [(a, r) for a, r in executed if r == result.get("run")]
        if len(backing) != 1 or backing[0][0] != t["attempt"] or result.get("attempt") != t["attempt"]:
            out.mismatched.append(f"{t['key']}: result {result}, executions {executed}, attempt {t['attempt']}")
    out.accepted_twice = len(out.accepted_twice_store)
    # A result that no single execution of the accepted attempt produced is no accepted result.
    out.lost += len(out.mismatched)
    return out


def now() -> float:
    """Wall-clock time, as the coordinator records it."""
    return time.time()
