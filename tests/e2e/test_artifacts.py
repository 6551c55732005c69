"""Task artifacts end to end: real `polyfabric server` and agent, SQLite and PostgreSQL.

A task leaves files under $POLYFABRIC_ARTIFACTS; its agent uploads them (in signed parts) before
it reports the attempt, whether the attempt succeeded or failed. Checked here: files in a
subdirectory and over one part are listed with size and sha256 and download byte for byte (API
and CLI); a function task's file; a failed task's files; a file over the per-file limit refused
with the reason recorded while the attempt still reports; a symlink to /etc/passwd not followed;
an upload for an attempt that is no longer current refused (409) and audited; `polyfabric gc`
removes an expired job's artifact files but keeps those of a task the workflow keeps.

One coordinator and one agent per module and backend (GC runs only when asked). Waits are polls
with deadlines.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyfabric.agent.identity import load_or_create
from polyfabric.client.jobs import JobsClient
from polyfabric.domain.artifacts import MAX_FILE_BYTES
from polyfabric.testing import AgentProcess, CoordinatorProcess, wait_until

from .conftest import DOWN, E2E_DIR, HEARTBEAT, UNREACHABLE, Fabric, signed_post

sys.path.insert(0, str(E2E_DIR))
from artifact_functions import pattern

pytestmark = pytest.mark.e2e

BIG = 1_300_000  # three upload parts of at most 512 KiB


class Env:
    def __init__(self, fabric: Fabric, agent: AgentProcess) -> None:
        self.fabric = fabric
        self.agent = agent
        self.jobs = JobsClient(fabric.url, fabric.admin_token)

    @property
    def store(self) -> Path:
        return self.fabric.coordinator.data_dir / "artifacts"

    def run(self, doc: dict[str, Any], status: str = "succeeded") -> str:
        job_id = str(self.jobs.submit(doc, {}, "test")["id"])
        out = self.jobs.wait(job_id, timeout=120)
        assert out["status"] == status, (out, self.agent.log()[-3000:])
        return job_id

    def task(self, job_id: str, key: str) -> dict[str, Any]:
        return next(t for t in self.jobs.tasks(job_id) if t["key"] == key)

    def listing(self, job_id: str) -> dict[str, dict[str, Any]]:
        return {a["path"]: a for a in self.jobs.get(f"/v1/jobs/{job_id}/artifacts")["artifacts"]}

    def download(self, task_id: str, path: str, **params: Any) -> Any:
        return self.fabric.http("GET", f"/v1/tasks/{task_id}/artifacts/{path}", params=params)


@pytest.fixture(scope="module")
def env(module_backend: str, module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp(f"artifacts-{module_backend}")
    coordinator = CoordinatorProcess(root / "coordinator", module_db_url, heartbeat_interval=HEARTBEAT,
                                     unreachable_after=UNREACHABLE, down_after=DOWN)
    coordinator.env = {"POLYFABRIC_GC_INTERVAL_S": "3600", "POLYFABRIC_JOB_TTL": "1h"}
    coordinator.start()
    fabric = Fabric(coordinator, root, module_backend)
    fabric.admin.post("/v1/domains", {"name": "test"})
    agent = fabric.agent("art-node", join_token=fabric.join_token("test")["token"],
                         extra_args=["--pythonpath", str(E2E_DIR), "--kill-grace", "1", "--stop-grace", "0"])
    fabric.wait_state(agent, "active", timeout=40)
    out = Env(fabric, agent)
    try:
        yield out
    finally:
        out.jobs.close()
        fabric.close()
        coordinator.stop()


def py(code: str) -> list[str]:
    return ["python3", "-c", f"import os, sys\nd = os.environ['POLYFABRIC_ARTIFACTS']\n{code}"]


WRITE_TWO = (
    f"sys.path.insert(0, {str(E2E_DIR)!r})\n"
    "from artifact_functions import pattern\n"
    "open(os.path.join(d, 'report.txt'), 'w').write('hello artifacts\\n')\n"
    "os.makedirs(os.path.join(d, 'sub', 'deep'))\n"
    f"open(os.path.join(d, 'sub', 'deep', 'big.bin'), 'wb').write(pattern({BIG}))\n"
)


def test_a_command_tasks_files_are_listed_and_download_byte_for_byte(env: Env, tmp_path: Path):
    job_id = env.run({"name": "two-files", "tasks": {"make": {"command": py(WRITE_TWO)}}})
    task = env.task(job_id, "make")
    listing = env.listing(job_id)
    assert set(listing) == {"report.txt", "sub/deep/big.bin"}
    expected = {"report.txt": b"hello artifacts\n", "sub/deep/big.bin": pattern(BIG)}
    for path, data in expected.items():
        row = listing[path]
        assert (row["task_id"], row["key"], row["attempt"], row["problem"]) == (task["id"], "make", 1, None)
        assert row["size"] == len(data) and row["sha256"] == hashlib.sha256(data).hexdigest()
        got = env.download(task["id"], path)
        assert got.status_code == 200 and got.content == data
        assert got.headers["x-polyfabric-sha256"] == row["sha256"]
    # The CLI: listing as JSON, one file with -o, everything with --download.
    cli = env.fabric.cli_json("job", "artifacts", job_id)
    assert sorted(a["path"] for a in cli["artifacts"]) == ["report.txt", "sub/deep/big.bin"]
    text = env.fabric.cli("job", "artifacts", job_id)
    assert text.returncode == 0 and "sub/deep/big.bin" in text.stdout and "make" in text.stdout
    one = env.fabric.cli("task", "artifact", task["id"], "sub/deep/big.bin", "-o", str(tmp_path / "big.bin"))
    assert one.returncode == 0, one.stderr
    assert (tmp_path / "big.bin").read_bytes() == expected["sub/deep/big.bin"]
    every = env.fabric.cli("job", "artifacts", job_id, "--download", str(tmp_path / "all"))
    assert every.returncode == 0, every.stderr
    assert (tmp_path / "all" / "make" / "1" / "report.txt").read_bytes() == expected["report.txt"]
    assert (tmp_path / "all" / "make" / "1" / "sub" / "deep" / "big.bin").read_bytes() == expected["sub/deep/big.bin"]
    # Stored where the docs say; counted in `job show --json`; a missing one is a clear 404.
    assert (env.store / task["id"] / "1" / "sub" / "deep" / "big.bin").stat().st_size == BIG
    shown = env.fabric.cli_json("job", "show", job_id)
    assert shown["artifacts"] == {"files": 2, "refused": 0, "bytes": BIG + len(expected["report.txt"])}
    missing = env.download(task["id"], "nope.txt")
    assert missing.status_code == 404 and "no artifact" in missing.json()["error"]["message"]
    bad = env.fabric.cli("task", "artifact", task["id"], "../etc/passwd")
    assert bad.returncode != 0 and "'..'" in bad.stderr
    assert env.fabric.http("GET", f"/v1/jobs/{job_id}/artifacts", token=None).status_code == 401


def test_a_function_tasks_artifact(env: Env):
    job_id = env.run({"name": "fn", "tasks": {"train": {"function": "artifact_functions:leave_model",
                                                        "args": {"size": 70_000}}}})
    task = env.task(job_id, "train")
    [row] = env.listing(job_id).values()
    data = pattern(70_000, seed=11)
    assert (row["path"], row["size"], row["sha256"]) == ("model.bin", len(data), hashlib.sha256(data).hexdigest())
    assert env.download(task["id"], "model.bin").content == data


def test_a_failed_tasks_artifacts_are_collected_and_refusals_recorded(env: Env):
    code = (
        "open(os.path.join(d, 'crash.log'), 'w').write('it broke\\n')\n"
        f"with open(os.path.join(d, 'huge.bin'), 'wb') as f: f.truncate({MAX_FILE_BYTES + 1})\n"  # sparse
        "os.symlink('/etc/passwd', os.path.join(d, 'passwd'))\n"
        "os.symlink('/etc', os.path.join(d, 'etc'))\n"
        "sys.exit(3)\n"
    )
    job_id = env.run({"name": "fails", "tasks": {"bad": {"command": py(code), "retries": 0}}}, status="failed")
    task = env.task(job_id, "bad")
    assert task["status"] == "failed" and task["exit_code"] == 3  # the attempt still reported
    listing = env.listing(job_id)
    assert set(listing) == {"crash.log", "huge.bin", "passwd", "etc"}
    assert listing["crash.log"]["problem"] is None
    assert env.download(task["id"], "crash.log").content == b"it broke\n"
    huge = listing["huge.bin"]
    assert huge["sha256"] is None and huge["size"] == MAX_FILE_BYTES + 1
    assert "over the limit" in huge["problem"] and str(MAX_FILE_BYTES) in huge["problem"]
    for link in ("passwd", "etc"):
        assert listing[link]["sha256"] is None and "symbolic link" in listing[link]["problem"]
        refused = env.download(task["id"], link)
        assert refused.status_code == 404 and "not stored" in refused.json()["error"]["message"]
    stored = sorted(p.relative_to(env.store / task["id"]).as_posix()
                    for p in (env.store / task["id"]).rglob("*") if p.is_file())
    assert stored == ["1/crash.log"]
    shown = env.fabric.cli("job", "artifacts", job_id)
    assert "REFUSED" in shown.stdout and "symbolic link" in shown.stdout


def test_an_upload_for_an_attempt_that_is_not_current_is_refused_and_audited(env: Env):
    job_id = env.run({"name": "stale", "tasks": {"done": {"command": ["true"]}}})
    task = env.task(job_id, "done")
    identity = load_or_create(env.agent.data_dir)
    late = signed_post(env.fabric.url, "/v1/agent/artifact", {
        "task_id": task["id"], "attempt": 1, "upload_id": "late1", "path": "late.txt", "offset": 0,
        "data": base64.b64encode(b"late").decode(), "final": True, "size": 4,
        "sha256": hashlib.sha256(b"late").hexdigest()}, key=identity)
    assert late.status_code == 409, late.text
    assert "not current" in late.json()["error"]["message"]
    [refused] = env.fabric.audit(kind="task.artifact_refused", subject=f"task:{task['id']}")
    assert refused["actor"] == f"node:{identity.node_id}" and refused["details"]["attempt"] == 1
    assert env.listing(job_id) == {}
    assert not (env.store / task["id"]).exists()
    escape = signed_post(env.fabric.url, "/v1/agent/artifact", {
        "task_id": task["id"], "attempt": 1, "upload_id": "esc1", "path": "../../x", "final": True},
        key=identity)
    assert escape.status_code == 400 and "'..'" in escape.json()["error"]["message"]


def test_gc_removes_an_expired_jobs_artifact_files_but_keeps_a_kept_tasks(env: Env):
    write = py("open(os.path.join(d, 'out.txt'), 'w').write(os.environ['POLYFABRIC_TASK_ID'])\n")
    job_id = env.run({"name": "expiring", "ttl": "1s", "tasks": {
        "kept": {"command": write, "keep": True}, "gone": {"command": write}}})
    kept, gone = env.task(job_id, "kept"), env.task(job_id, "gone")
    assert (env.store / kept["id"] / "1" / "out.txt").is_file()
    assert (env.store / gone["id"] / "1" / "out.txt").is_file()
    plain = env.run({"name": "plain", "ttl": "1s", "tasks": {"only": {"command": write}}})
    only = env.task(plain, "only")

    def collected() -> bool:
        done = json.loads(env.fabric.cli("gc", "--json").stdout or "{}")
        return any(j["job_id"] == plain for j in done.get("jobs", [])) or not (env.store / only["id"]).exists()

    wait_until(collected, timeout=30, interval=0.5, message="gc to collect the expired jobs")
    wait_until(lambda: not (env.store / gone["id"]).exists(), timeout=30, message="gc to collect the job")
    assert not (env.store / only["id"]).exists()
    assert (env.store / kept["id"] / "1" / "out.txt").read_text() == kept["id"]
    listing = env.listing(job_id)
    assert list(listing) == ["out.txt"] and listing["out.txt"]["task_id"] == kept["id"]
    assert env.download(kept["id"], "out.txt").content == kept["id"].encode()
    gone_dl = env.download(gone["id"], "out.txt")
    assert gone_dl.status_code == 404


def test_the_coordinator_checks_paths_sizes_and_digests_itself(env: Env):
    """Hand-made uploads with the agent's own key for its running attempt: the coordinator does not
    trust the agent's checks."""
    job_id = str(env.jobs.submit({"name": "held", "tasks": {"hold": {"command": ["sleep", "60"]}}}, {}, "test")["id"])
    task = wait_until(lambda: (lambda t: t if t["status"] == "running" else None)(env.task(job_id, "hold")),
                      timeout=40, message="the task to run")
    identity = load_or_create(env.agent.data_dir)

    def send(**fields: Any) -> Any:
        body = {"task_id": task["id"], "attempt": task["attempt"], "upload_id": "u1", "path": "x.bin", "offset": 0,
                "final": True, **fields}
        return signed_post(env.fabric.url, "/v1/agent/artifact", body, key=identity)

    try:
        data = b"by hand"
        good = send(data=base64.b64encode(data).decode(), size=len(data), sha256=hashlib.sha256(data).hexdigest())
        assert good.status_code == 200, good.text
        assert good.json()["artifact"]["sha256"] == hashlib.sha256(data).hexdigest()
        damaged = send(upload_id="u2", path="y.bin", data=base64.b64encode(data).decode(), size=len(data),
                       sha256="0" * 64)
        assert damaged.status_code == 400 and "damaged" in damaged.json()["error"]["message"]
        for path in ("/etc/passwd", "a/../../b", "a\\b"):
            bad = send(upload_id="u3", path=path, data="")
            assert bad.status_code == 400, (path, bad.text)
        over = send(upload_id="u4", path="over.bin", offset=MAX_FILE_BYTES, data=base64.b64encode(b"x").decode(),
                    final=False)
        assert over.status_code == 400 and "over the limit" in over.json()["error"]["message"]
        listing = env.listing(job_id)
        assert set(listing) == {"x.bin", "over.bin"}
        assert listing["x.bin"]["size"] == len(data) and listing["over.bin"]["sha256"] is None
        assert env.download(task["id"], "x.bin").content == data
    finally:
        env.jobs.post(f"/v1/jobs/{job_id}/cancel", {"reason": "test over"})
