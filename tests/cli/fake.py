"""A small in-process stand-in for the coordinator's jobs API (docs/protocol.md, "User API").

Why a fake beside the real server: it starts in milliseconds, runs every task on this machine at
once (commands as subprocesses, their output as log chunks), and records each request, so tests
can check *how* the client talks (one long-poll, not a polling loop) as well as what it prints.
Workflows are validated and advanced by the real parser and the real engine
(`parse_workflow`, `WorkflowRun`); only scheduling and the agents are simulated.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from polyfabric.domain.errors import DomainError
from polyfabric.domain.task_states import TaskState
from polyfabric.workflow.engine import (
    Cancel,
    CancelTasks,
    EnqueueTask,
    FailTask,
    Pause,
    Resume,
    RetryFailed,
    SetPriority,
    SkipTask,
    Started,
    TaskFinished,
    WorkflowFinished,
    WorkflowRun,
    parse_instance_key,
)
from polyfabric.workflow.spec import parse_workflow

__all__ = ["TOKEN", "FakeCoordinator"]

TOKEN = "pfa_fake-token"
FINAL = {"succeeded", "failed", "cancelled"}


class _Problem(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Job:
    def __init__(self, job_id: str, doc: dict[str, Any], params: dict[str, Any], domain: str, run: WorkflowRun,
                 now: float) -> None:
        self.id = job_id
        self.doc = doc
        self.name = run.spec.name
        self.domain = domain
        self.params = params
        self.run = run
        self.status = "running"
        self.priority = run.priority
        self.submitted_at = self.started_at = now
        self.finished_at: float | None = None
        self.result: Any = None
        self.error: str | None = None
        self.tasks: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []


class FakeCoordinator:
    """Serve the jobs API on 127.0.0.1; `url`, `requests` (method, path, query) and the state."""

    def __init__(self, domains: tuple[str, ...] = ("test",), *, auto_run: bool = True) -> None:
        self.domains = list(domains)
        self.auto_run = auto_run
        self.cond = threading.Condition()
        self.jobs: dict[str, _Job] = {}
        self.tasks: dict[str, tuple[_Job, str]] = {}
        self.logs: dict[str, list[dict[str, Any]]] = {}
        self.attempts: dict[str, list[dict[str, Any]]] = {}
        self.semaphores: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.seq = 0
        self.held: list[tuple[_Job, Any]] = []
        self._procs: dict[tuple[str, int], subprocess.Popen[str]] = {}
        self._threads: list[threading.Thread] = []
        self._workdir = Path(tempfile.mkdtemp(prefix="pf-fake-"))
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                fake.requests.append((method, parts.path, query))
                try:
                    if self.headers.get("authorization") != f"Bearer {TOKEN}":
                        raise _Problem(401, "unauthenticated", "a valid API token is required")
                    body = json.loads(raw) if raw else None
                    status, answer = fake.route(method, parts.path, query, body)
                except _Problem as exc:
                    status, answer = exc.status, {"error": {"code": exc.code, "message": exc.message}}
                except DomainError as exc:
                    status, answer = 400, {"error": {"code": exc.code, "message": exc.message}}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._serving = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeCoordinator:
        self._serving.start()
        return self

    def stop(self) -> None:
        with self.cond:
            procs = list(self._procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for thread in list(self._threads):
            thread.join(10)
        self.server.shutdown()
        self.server.server_close()
        self._serving.join(5)

    def calls(self, suffix: str) -> int:
        return sum(1 for _, path, _ in self.requests if path.endswith(suffix))

    # -- routing -----------------------------------------------------------------------------------

    def route(self, method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:1] != ["v1"]:
            raise _Problem(404, "not_found", f"no such endpoint: {method} {path}")
        parts = parts[1:]
        if parts == ["whoami"]:
            return 200, {"id": "at-fake", "name": "tester", "role": "admin", "domains": self.domains}
        if parts == ["jobs"] and method == "POST":
            return 201, self.submit(body or {})
        if parts == ["jobs"]:
            return 200, self.list_jobs(q)
        if parts[:1] == ["jobs"] and len(parts) >= 2:
            job = self._job(parts[1])
            rest = parts[2:]
            if not rest:
                return 200, self.detail(job)
            if rest == ["tasks"]:
                return 200, self.task_page(job, q)
            if rest == ["result"]:
                return 200, self.result(job)
            if rest == ["events"]:
                return 200, self.events(job, int(q.get("after") or 0), float(q.get("wait_s") or 0))
            if method == "POST" and len(rest) == 1:
                return 200, self.intervene(job, rest[0], body or {})
        if parts[:1] == ["tasks"] and len(parts) >= 2:
            if parts[1] not in self.tasks:
                raise _Problem(404, "not_found", f"no task {parts[1]!r}")
            if len(parts) == 2:
                return 200, self.task_out(parts[1], with_attempts=True)
            if parts[2:] == ["logs"]:
                attempt = int(q["attempt"]) if q.get("attempt") else None
                return 200, self.task_logs(parts[1], attempt, int(q.get("after") or 0), float(q.get("wait_s") or 0))
        if parts == ["semaphores"]:
            return 200, sorted(self.semaphores.values(), key=lambda s: s["name"])
        if parts[:1] == ["semaphores"] and method == "PUT" and len(parts) == 2:
            self.semaphores[parts[1]] = {"name": parts[1], "size": int(body["size"]), "in_use": 0}
            return 200, self.semaphores[parts[1]]
        raise _Problem(404, "not_found", f"no such endpoint: {method} {path}")

    def _job(self, job_id: str) -> _Job:
        if job_id not in self.jobs:
            raise _Problem(404, "not_found", f"no job {job_id!r}")
        return self.jobs[job_id]

    # -- jobs --------------------------------------------------------------------------------------

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        if "domain" not in body:
            raise _Problem(422, "invalid", "missing field 'domain'")
        doc, params = body.get("workflow"), body.get("params") or {}
        spec = parse_workflow(doc, params)  # WorkflowInvalid -> 400 listing every problem
        with self.cond:
            job = _Job("j-" + secrets.token_hex(8), doc, params, body["domain"], WorkflowRun(spec), time.time())
            self.jobs[job.id] = job
            self._handle(job, Started())
            return self.job_out(job)

    def job_out(self, job: _Job) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for t in job.tasks.values():
            if t["is_group"]:
                continue  # a foreach task's own record is not an instance (as the coordinator counts)
            counts[t["status"]] = counts.get(t["status"], 0) + 1
        return {"id": job.id, "name": job.name, "domain": job.domain, "status": job.status,
                "priority": job.priority, "params": job.params, "submitted_by": "token:tester",
                "submitted_at": job.submitted_at, "started_at": job.started_at, "finished_at": job.finished_at,
                "counts": counts, "total": sum(counts.values()), "error": job.error}

    def list_jobs(self, q: dict[str, str]) -> list[dict[str, Any]]:
        with self.cond:
            jobs = [j for j in reversed(list(self.jobs.values()))
                    if (not q.get("status") or j.status == q["status"]) and (not q.get("domain")
                                                                               or j.domain == q["domain"])]
            return [self.job_out(j) for j in jobs[: int(q.get("limit") or 100)]]

    def detail(self, job: _Job) -> dict[str, Any]:
        with self.cond:
            out = self.job_out(job)
            out["tasks"] = [self.task_out(t["id"]) for t in sorted(job.tasks.values(), key=lambda t: t["key"])][:1000]
            out["result"] = job.result
            return out

    def task_page(self, job: _Job, q: dict[str, str]) -> list[dict[str, Any]]:
        with self.cond:
            rows = sorted(job.tasks.values(), key=lambda t: t["key"])
            rows = [t for t in rows if (not q.get("status") or t["status"] == q["status"])
                    and (not q.get("after") or t["key"] > q["after"])]
            return [self.task_out(t["id"]) for t in rows[: int(q.get("limit") or 1000)]]

    def result(self, job: _Job) -> dict[str, Any]:
        with self.cond:
            return {"job_id": job.id, "status": job.status, "result": job.result,
                    "tasks": {name: job.run.task_result(name) for name in job.run.spec.tasks}}

    def events(self, job: _Job, after: int, wait_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + min(wait_s, 30.0)
        with self.cond:
            while True:
                events = [e for e in job.events if e["seq"] > after][:1000]
                remaining = deadline - time.monotonic()
                if events or job.status in FINAL or remaining <= 0:
                    return {"events": events, "next": events[-1]["seq"] if events else after, "job": self.job_out(job)}
                self.cond.wait(remaining)

    def intervene(self, job: _Job, action: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            if action == "priority":
                job.priority = int(body["priority"])
                self._handle(job, SetPriority(job.priority))
            elif action in ("pause", "resume", "cancel"):
                if job.status in FINAL:
                    raise _Problem(409, "conflict", f"job {job.id} is {job.status}: nothing to {action}")
                self._handle(job, {"pause": Pause(), "resume": Resume(), "cancel": Cancel(body.get("reason") or "")}
                             [action])
                if action in ("pause", "resume") and job.status not in FINAL:
                    job.status = "paused" if action == "pause" else "running"
            elif action == "retry":
                job.status, job.finished_at = "running", None
                self._handle(job, RetryFailed())
            else:
                raise _Problem(400, "invalid", f"unknown job action {action!r}")
            self.cond.notify_all()
            return self.job_out(job)

    # -- tasks -------------------------------------------------------------------------------------

    def task_out(self, task_id: str, with_attempts: bool = False) -> dict[str, Any]:
        job, key = self.tasks[task_id]
        out = dict(job.tasks[key])
        if with_attempts:
            out["attempts"] = [dict(a) for a in self.attempts.get(task_id, [])]
        return out

    def task_logs(self, task_id: str, attempt: int | None, after: int, wait_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + min(wait_s, 30.0)
        with self.cond:
            while True:
                job, key = self.tasks[task_id]
                t = job.tasks[key]
                wanted = attempt if attempt is not None else t["attempt"]
                chunks = [c for c in self.logs.get(task_id, []) if c["seq"] > after
                          and (attempt is None or c["attempt"] == attempt)]
                done = t["status"] in {"succeeded", "failed", "skipped", "cancelled"} or wanted < t["attempt"]
                remaining = deadline - time.monotonic()
                if chunks or done or remaining <= 0:
                    return {"chunks": chunks, "next": chunks[-1]["seq"] if chunks else after, "done": done}
                self.cond.wait(remaining)

    # -- the engine and a local "agent" ------------------------------------------------------------

    def _event(self, job: _Job, t: dict[str, Any]) -> None:
        self.seq += 1
        job.events.append({"seq": self.seq, "at": time.time(), "task_id": t["id"], "key": t["key"],
                           "status": t["status"], "attempt": t["attempt"], "node_id": t["node_id"]})

    def _record(self, job: _Job, key: str, **fields: Any) -> dict[str, Any]:
        t = job.tasks.get(key)
        if t is None:
            name, index = parse_instance_key(key)
            t = {"id": "t-" + secrets.token_hex(8), "job_id": job.id, "key": key, "task": name, "index": index,
                 "is_group": index is None and job.run.spec.tasks[name].is_foreach, "status": "waiting",
                 "attempt": 0, "failures": 0, "preemptions": 0, "node_id": None, "priority": job.priority,
                 "not_before": None, "started_at": None, "finished_at": None, "result": None, "error": None,
                 "exit_code": None, "pending_reason": None}
            job.tasks[key] = t
            self.tasks[t["id"]] = (job, key)
        before = (t["status"], t["attempt"])
        t.update(fields)
        if (t["status"], t["attempt"]) != before:
            self._event(job, t)
        return t

    def _handle(self, job: _Job, event: Any) -> None:
        commands = job.run.handle(event, time.time())
        for rec in job.run.drain_changes().records:
            fields: dict[str, Any] = {"status": rec.status.value, "attempt": rec.attempt, "failures": rec.failures,
                                      "error": rec.error}
            if rec.status.value == "succeeded":
                fields["result"] = rec.result
            existing = job.tasks.get(rec.key)
            if (existing is not None and existing["status"] == "running" and rec.status.value == "ready"
                    and existing["attempt"] == rec.attempt):
                fields["status"] = "running"  # the engine does not know leased/running
            self._record(job, rec.key, **fields)
        for command in commands:
            if isinstance(command, EnqueueTask):
                if self.auto_run:
                    self._start(job, command.instance)
                else:
                    self.held.append((job, command.instance))
            elif isinstance(command, CancelTasks):
                for key in command.keys:
                    t = job.tasks[key]
                    proc = self._procs.get((t["id"], t["attempt"]))
                    if proc is not None and proc.poll() is None:
                        proc.kill()
                    else:
                        self._finish(job, key, t["attempt"], "cancelled", None, command.reason, None)
            elif isinstance(command, SkipTask | FailTask):
                pass  # the records already say so
            elif isinstance(command, WorkflowFinished):
                job.status = command.status.value
                job.result = command.result
                job.finished_at = time.time()
        self.cond.notify_all()

    def _start(self, job: _Job, instance: Any) -> None:
        thread = threading.Thread(target=self._execute, args=(job, instance), daemon=True)
        self._threads.append(thread)
        thread.start()

    def release(self) -> None:
        """Run what was queued while `auto_run` was off (and run at once from now on)."""
        with self.cond:
            self.auto_run = True
            held, self.held = self.held, []
            for job, instance in held:
                self._start(job, instance)

    def _finish(self, job: _Job, key: str, attempt: int, status: str, result: Any, error: str | None,
                exit_code: int | None) -> None:
        t = job.tasks[key]
        if t["attempt"] != attempt or t["status"] in FINAL:
            return
        now = time.time()
        t.update(finished_at=now, exit_code=exit_code)
        for a in self.attempts.get(t["id"], []):
            if a["attempt"] == attempt:
                a.update(status=status, finished_at=now, exit_code=exit_code, error=error)
        self._handle(job, TaskFinished(key, attempt, TaskState(status), result, error))

    def _log(self, task_id: str, attempt: int, stream: str, data: str) -> None:
        with self.cond:
            self.seq += 1
            self.logs.setdefault(task_id, []).append({"seq": self.seq, "attempt": attempt, "stream": stream,
                                                      "data": data})
            self.cond.notify_all()

    def _execute(self, job: _Job, inst: Any) -> None:
        with self.cond:
            t = job.tasks[inst.key]
            if t["attempt"] != inst.attempt or t["status"] != "ready":
                return  # cancelled (or superseded) before it started
            now = time.time()
            self.attempts.setdefault(t["id"], []).append({
                "attempt": inst.attempt, "node_id": "n-fake", "status": "running", "leased_at": now,
                "started_at": now, "finished_at": None, "exit_code": None, "error": None, "preempted_by": None})
            self._record(job, inst.key, status="running", attempt=inst.attempt, node_id="n-fake", started_at=now,
                         finished_at=None)
            task_id = t["id"]
            self.cond.notify_all()
        if inst.function is not None:
            self._call(job, inst, task_id)
            return
        result_file = self._workdir / f"{task_id}-{inst.attempt}.json"
        env = {**os.environ, **inst.env, "POLYFABRIC_RESULT": str(result_file), "POLYFABRIC_TASK_ID": task_id,
               "POLYFABRIC_JOB_ID": job.id, "POLYFABRIC_ATTEMPT": str(inst.attempt), "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable if a == "python3" else a for a in inst.command]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with self.cond:
            self._procs[(task_id, inst.attempt)] = proc

        def pump(pipe: Any, stream: str) -> None:
            with pipe:
                for line in iter(pipe.readline, ""):
                    self._log(task_id, inst.attempt, stream, line)

        readers = [threading.Thread(target=pump, args=(proc.stdout, "stdout")),
                   threading.Thread(target=pump, args=(proc.stderr, "stderr"))]
        for reader in readers:
            reader.start()
        code = proc.wait()
        for reader in readers:
            reader.join()
        result = None
        if result_file.exists():
            result = json.loads(result_file.read_text() or "null")
        with self.cond:
            self._procs.pop((task_id, inst.attempt), None)
            if job.run.cancelled and code != 0:
                self._finish(job, inst.key, inst.attempt, "cancelled", None, "cancelled", code)
            elif code == 0:
                self._finish(job, inst.key, inst.attempt, "succeeded", result, None, 0)
            else:
                self._finish(job, inst.key, inst.attempt, "failed", None, f"exit code {code}", code)

    def _call(self, job: _Job, inst: Any, task_id: str) -> None:
        import importlib

        module, _, attr = inst.function.partition(":")
        target: Callable[..., Any] = importlib.import_module(module)  # type: ignore[assignment]
        for part in attr.split("."):
            target = getattr(target, part)
        try:
            result, error, status = target(**inst.args), None, "succeeded"
        except Exception as exc:
            result, error, status = None, f"{type(exc).__name__}: {exc}", "failed"
        with self.cond:
            self._finish(job, inst.key, inst.attempt, status, result, error, None)
