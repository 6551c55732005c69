"""End-to-end fixtures: one real coordinator per test module and backend, real agents, the real CLI.

Every process is a `polyfabric` subprocess talking HTTP on loopback. `fabric` (module scope)
starts the coordinator once per backend (SQLite, PostgreSQL) with short detector settings and
stops it, and every agent a test started, when the module is done. Tests wait only by polling
with a deadline (`wait_until`), never by sleeping.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from polyfabric.agent.identity import NodeIdentity, load_or_create
from polyfabric.client import ApiClient
from polyfabric.client.jobs import JobsClient
from polyfabric.security import http_signatures
from polyfabric.store.engine import create_engine
from polyfabric.testing import AgentProcess, CoordinatorProcess, wait_until

# The detector settings every e2e coordinator runs with (seconds). The check interval is what
# `polyfabric server` derives from the heartbeat interval: min(0.5, heartbeat / 2).
HEARTBEAT = 0.5
UNREACHABLE = 1.5
DOWN = 3.0
CHECK = min(0.5, HEARTBEAT / 2)

# What every test agent declares, so that capacity is the same on any machine.
AGENT_CAPACITY = ["--cpu", "2", "--memory", "4Gi", "--disk", "20Gi", "--gpus", "0", "--slots", "4"]


class Fabric:
    """A coordinator, the agents started against it, and ways to talk to both."""

    def __init__(self, coordinator: CoordinatorProcess, root: Path, backend: str) -> None:
        self.coordinator = coordinator
        self.root = root
        self.backend = backend
        self.agents: list[AgentProcess] = []
        self._counter = itertools.count(1)
        self._admin: ApiClient | None = None
        self._engine: sa.Engine | None = None
        self._http: httpx.Client | None = None

    # -- the coordinator's API ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.coordinator.url

    @property
    def admin_token(self) -> str:
        return self.coordinator.admin_token

    @property
    def admin(self) -> ApiClient:
        """An ApiClient with the admin token, kept open for the module."""
        if self._admin is None:
            self._admin = self.coordinator.api()
        return self._admin

    def http(self, method: str, path: str, *, token: str | None = "admin", **kwargs: Any) -> httpx.Response:
        """A raw request (no error mapping): `token=None` sends no Authorization header."""
        headers = dict(kwargs.pop("headers", None) or {})
        if token is not None:
            headers["authorization"] = f"Bearer {self.admin_token if token == 'admin' else token}"
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=30)
        return self._http.request(method, path, headers=headers, **kwargs)

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{next(self._counter)}"

    def join_token(self, domain: str = "test", *, uses: int | None = None, ttl_s: float | None = None) -> dict:
        """A new join token: the whole creation reply (`token`, `id`, ...)."""
        return self.admin.post("/v1/tokens/join", {"domain": domain, "uses": uses, "ttl_s": ttl_s})

    def api_token(self, role: str, domains: list[str], *, name: str | None = None,
                  ttl_s: float | None = None) -> dict:
        return self.admin.post("/v1/tokens/api", {"name": name or self.unique(role), "role": role,
                                                  "domains": domains, "ttl_s": ttl_s})

    def token_row(self, token_id: str) -> dict:
        rows = [t for t in self.admin.get("/v1/tokens") if t["id"] == token_id]
        assert len(rows) == 1, f"token {token_id} not listed exactly once: {rows}"
        return rows[0]

    def node(self, ref: str) -> dict:
        return self.admin.get(f"/v1/nodes/{ref}")

    def nodes(self) -> list[dict]:
        return self.admin.get("/v1/nodes")

    def audit(self, *, node: str | None = None, kind: str | None = None, **params: Any) -> list[dict]:
        return self.admin.get("/v1/audit", node=node, kind=kind, limit=10000, **params)

    def transitions(self, node_id: str) -> list[dict]:
        return self.audit(node=node_id, kind="node.transition")

    def audit_tip(self) -> int:
        records = self.audit()
        while len(records) == 10000:  # pragma: no cover - test chains are short
            records = self.audit(after=records[-1]["seq"])
        return records[-1]["seq"] if records else 0

    # -- agents ---------------------------------------------------------------------------------

    def agent(self, name: str | None = None, *, join_token: str | None = None, labels: str = "",
              extra_args: list[str] | None = None, data_dir: Path | None = None,
              start: bool = True) -> AgentProcess:
        """An agent process (started unless `start=False`), stopped when the module ends.

        `data_dir` reuses an earlier agent's directory: the same key, so the same node."""
        name = name or self.unique("node")
        proc = AgentProcess(self.url, data_dir or self.root / "agents" / name, name=name, join_token=join_token,
                            labels=labels, extra_args=[*AGENT_CAPACITY, *(extra_args or [])])
        self.agents.append(proc)
        if start:
            proc.start()
        return proc

    def wait_joined(self, agent: AgentProcess, timeout: float = 20.0) -> str:
        """The node id of an agent, once it has registered (fails early if the agent exits)."""

        def joined() -> str | None:
            if not agent.alive():
                raise AssertionError(f"agent {agent.name} exited with {agent.proc.returncode}:\n{agent.log()}")
            return agent.node_id

        return wait_until(joined, timeout=timeout, message=f"agent {agent.name} to register")

    def wait_state(self, ref: str | AgentProcess, state: str, timeout: float = 20.0) -> dict:
        """Poll until the node (id, name, or the agent's node) is in `state`; return it."""
        agent = ref if isinstance(ref, AgentProcess) else None
        node_ref = self.wait_joined(agent, timeout) if agent is not None else ref
        seen: list[str] = []

        def reached() -> dict | None:
            node = self.node(node_ref)
            if not seen or seen[-1] != node["state"]:
                seen.append(node["state"])
            return node if node["state"] == state else None

        try:
            return wait_until(reached, timeout=timeout, interval=0.05, message=f"node {node_ref} to be {state}")
        except AssertionError as exc:
            logs = f"\nagent log:\n{agent.log()[-3000:]}" if agent is not None else ""
            raise AssertionError(f"{exc}; states seen: {seen}{logs}") from None

    # -- the CLI --------------------------------------------------------------------------------

    def cli(self, *args: str, token: str | None = "admin", url: str | None = "fabric",
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run `python -m polyfabric ARGS` with POLYFABRIC_URL / POLYFABRIC_TOKEN in its environment
        (and no client config file to fall back on)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLYFABRIC_")}
        env["POLYFABRIC_CONFIG"] = str(self.root / "no-client-config.json")
        if url is not None:
            env["POLYFABRIC_URL"] = self.url if url == "fabric" else url
        if token is not None:
            env["POLYFABRIC_TOKEN"] = self.admin_token if token == "admin" else token
        return subprocess.run([sys.executable, "-m", "polyfabric", *args], env=env, cwd=self.root,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def cli_json(self, *args: str, token: str | None = "admin") -> Any:
        result = self.cli(*args, "--json", token=token)
        assert result.returncode == 0, f"polyfabric {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout)

    # -- the database, directly -----------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        """An engine on the coordinator's own database (for tampering with it)."""
        if self._engine is None:
            self._engine = create_engine(self.coordinator.db_url, pool_size=1)
        return self._engine

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        if self._admin is not None:
            self._admin.close()
        if self._http is not None:
            self._http.close()
        if self._engine is not None:
            self._engine.dispose()


@pytest.fixture(scope="module")
def fabric(module_backend: str, module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    root = tmp_path_factory.mktemp(f"fabric-{module_backend}")
    coordinator = CoordinatorProcess(root / "coordinator", module_db_url, heartbeat_interval=HEARTBEAT,
                                     unreachable_after=UNREACHABLE, down_after=DOWN)
    coordinator.start()
    fab = Fabric(coordinator, root, module_backend)
    try:
        yield fab
    finally:
        fab.close()
        coordinator.stop()


# -- signed agent requests, built by hand --------------------------------------------------------


def new_identity(directory: Path) -> NodeIdentity:
    """A fresh node key (as an agent would make on first start)."""
    return load_or_create(directory)


def signed_post(url: str, path: str, payload: dict | bytes, *, key: NodeIdentity,
                key_id: str | None = None, now: float | None = None) -> httpx.Response:
    """POST an agent request signed with `key` (as `key_id`, default the key's own node id)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"content-type": "application/json"}
    headers.update(http_signatures.sign_request(
        method="POST", url=url + path, headers=headers, body=body, private_key=key.private_key,
        key_id=key_id or key.node_id, now=time.time() if now is None else now,
    ))
    return httpx.post(url + path, content=body, headers=headers, timeout=30)


def declaration(name: str, labels: dict[str, str] | None = None, **changes: Any) -> dict[str, Any]:
    """A node declaration as an agent sends it at registration."""
    decl: dict[str, Any] = {
        "name": name, "labels": labels or {}, "agent_version": "test",
        "capacity": {"cpu_millis": 1000, "memory_bytes": 1 << 30, "disk_bytes": 1 << 30, "gpus": 0, "slots": 1},
    }
    decl.update(changes)
    return decl


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="session")
def signed() -> Any:
    """Helpers for hand-made agent requests: `signed.post`, `signed.identity`, `signed.declaration`."""

    class Helpers:
        post = staticmethod(signed_post)
        identity = staticmethod(new_identity)
        declaration = staticmethod(declaration)

    return Helpers


# -- workflows: agents that run tasks, workflow files, jobs ---------------------------------------

E2E_DIR = Path(__file__).resolve().parent
WORKFLOW_DOMAIN = "test"


def pid_alive(pid: int) -> bool:
    """Is process `pid` alive? A zombie is not: it holds nothing, runs nothing and cannot be killed
    (an orphaned task child may stay one where PID 1 does not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2:].split()[:1]
    return state not in ([b"Z"], [b"X"])


class Workflows:
    """Workflow runs on a `Fabric`: agents to run tasks, workflow files, the CLI and the jobs API.

    Every job is submitted to the domain `test`. `jobs` is a `JobsClient` (the one the CLI and the
    SDK use) with the admin token; waiting rides the coordinator's events long-poll."""

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        self.dir = fabric.root / "workflows"
        self.dir.mkdir(exist_ok=True)
        self.domain = WORKFLOW_DOMAIN
        self._jobs: JobsClient | None = None
        self._join: str | None = None
        self.workers: list[AgentProcess] = []

    @property
    def jobs(self) -> JobsClient:
        if self._jobs is None:
            self._jobs = JobsClient(self.fabric.url, self.fabric.admin_token)
        return self._jobs

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.close()

    # -- agents ------------------------------------------------------------------------------------

    def start_agents(self, count: int, *, slots: int, pythonpath: list[Path] | None = None,
                     prefix: str = "wf") -> list[AgentProcess]:
        """Start `count` agents of `slots` slots each (functions importable from tests/e2e, or
        `pythonpath`), with a short kill grace; return them once all are Active."""
        if self._join is None:
            self._join = self.fabric.join_token(self.domain)["token"]
        extra = ["--slots", str(slots), "--kill-grace", "2", "--stop-grace", "0"]
        for path in pythonpath if pythonpath is not None else [E2E_DIR]:
            extra += ["--pythonpath", str(path)]
        agents = [self.fabric.agent(self.fabric.unique(prefix), join_token=self._join, extra_args=extra)
                  for _ in range(count)]
        for agent in agents:
            self.fabric.wait_state(agent, "active", timeout=30)
        self.workers.extend(agents)
        return agents

    def logs(self) -> str:
        """The tail of every workflow agent's log (for failure messages)."""
        return "\n".join(f"--- {a.name}:\n{a.log()[-2000:]}" for a in self.workers)

    # -- files and the CLI -------------------------------------------------------------------------

    def write(self, name: str, doc: dict[str, Any] | str) -> Path:
        """A workflow file under the module's directory (a dict is written as YAML)."""
        path = self.dir / name
        path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
        return path

    def path(self, name: str) -> Path:
        """A path for a task to write to (a pid file, a release file) that the test can read."""
        return self.dir / name

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return self.fabric.cli(*args, timeout=timeout)

    def cli_json(self, *args: str) -> Any:
        return self.fabric.cli_json(*args)

    def run(self, path: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """`polyfabric run PATH --domain test ARGS`."""
        return self.cli("run", str(path), "--domain", self.domain, *args, timeout=timeout)

    def job_ids(self) -> list[str]:
        """Every job's id, from `polyfabric job ls --json`, newest first."""
        return [j["id"] for j in self.cli_json("job", "ls", "--limit", "1000")]

    # -- jobs through the API ----------------------------------------------------------------------

    def submit(self, doc: dict[str, Any], params: dict[str, Any] | None = None) -> str:
        return str(self.jobs.submit(doc, params, self.domain)["id"])

    def wait(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The final JobOut (long-polls the job's events; fails after `timeout`)."""
        try:
            return self.jobs.wait(job_id, timeout=timeout)
        except Exception as exc:
            raise AssertionError(f"job {job_id} did not finish: {exc}\n{self.logs()}") from None

    def tasks(self, job_id: str) -> dict[str, dict[str, Any]]:
        """Every TaskOut of the job by key."""
        return {t["key"]: t for t in self.jobs.tasks(job_id)}

    def task(self, job_id: str, key: str) -> dict[str, Any]:
        """One TaskOut with its attempts, by key."""
        return self.jobs.task(self.tasks(job_id)[key]["id"])

    def wait_task(self, job_id: str, key: str, check: Callable[[dict[str, Any]], bool], *,
                  timeout: float = 30.0, what: str = "a state") -> dict[str, Any]:
        """Poll until the task `key` of the job passes `check`; return its TaskOut."""

        def reached() -> dict[str, Any] | None:
            task = self.tasks(job_id).get(key)
            return task if task is not None and check(task) else None

        try:
            return wait_until(reached, timeout=timeout, interval=0.05, message=f"{job_id} {key} to reach {what}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; tasks: {self.tasks(job_id)}\n{self.logs()}") from None

    def wait_running(self, job_id: str, key: str, *, attempt: int | None = None,
                     timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_task(job_id, key, lambda t: t["status"] == "running" and attempt in (None, t["attempt"]),
                              timeout=timeout, what=f"running (attempt {attempt or 'any'})")

    def events_for(self, job_id: str, seconds: float, after: int | None = None) -> tuple[list[dict], int | None]:
        """Every event of the job during the next `seconds` (the events long-poll answers at once
        when something happens, so this sees each change; it returns at the deadline)."""
        deadline = time.monotonic() + seconds
        events: list[dict[str, Any]] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return events, after
            page = self.jobs.events(job_id, after=after, wait_s=left)
            events.extend(page["events"])
            if page.get("next") is not None:
                after = page["next"]

    def event_tip(self, job_id: str) -> int | None:
        return self.jobs.events(job_id).get("next")

    @staticmethod
    def pid_alive(pid: int) -> bool:
        return pid_alive(pid)

    @staticmethod
    def read_pid(path: Path, timeout: float = 20.0) -> int:
        """The pid a task wrote to `path` (waits for the file to be complete)."""
        text = wait_until(lambda: path.exists() and path.read_text().endswith("\n") and path.read_text(),
                          timeout=timeout, message=f"the pid file {path}")
        return int(text.strip())


@pytest.fixture(scope="module")
def workflows(fabric: Fabric) -> Iterator[Workflows]:
    """Workflow helpers on the module's fabric (no agents yet: a module starts the ones it needs
    with `workflows.start_agents(...)` in its own module-scoped fixture)."""
    helpers = Workflows(fabric)
    try:
        yield helpers
    finally:
        helpers.close()


@pytest.fixture(scope="session")
def workflow_functions() -> ModuleType:
    """tests/e2e/workflow_functions.py imported under its own name, `workflow_functions`: the name
    agents started with `--pythonpath tests/e2e` import it by (so SDK references to its functions
    resolve on the nodes)."""
    name = "workflow_functions"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, E2E_DIR / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module
