"""The SDK client and the jobs client under it, against a scripted transport (no server).

What matters here: invalid workflows never leave the process, waiting rides the events long-poll
(one request per change or per 30 s, never a tight loop), paging follows `after`, and the
coordinator's own refusal arrives as `WorkflowRejected` with its problems listed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from polyfabric.client.jobs import WaitTimeout, WorkflowRejected
from polyfabric.sdk import Client, ClientError, JobFailed, JobResult, Workflow, WorkflowInvalid

URL = "http://coordinator.test"


def job(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "j-1", "name": "w", "domain": "test", "status": status, "priority": 0, "params": {},
            "submitted_by": "token:t", "submitted_at": 1.0, "started_at": 1.0, "finished_at": None,
            "counts": {}, "total": 1, "error": None, **extra}


class Script:
    """Answers requests from a function of (method, path, query, body); keeps every request."""

    def __init__(self, answer: Callable[[str, str, dict[str, str], Any], tuple[int, Any]]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, query, body))
        status, payload = self.answer(request.method, request.url.path, query, body)
        return httpx.Response(status, json=payload)

    def paths(self, suffix: str) -> list[dict[str, str]]:
        return [q for _, p, q, _ in self.requests if p.endswith(suffix)]


def connect(script: Script, sleeps: list[float] | None = None, clock: Callable[[], float] | None = None) -> Client:
    client = Client(URL, "pfa_t")
    client.api._http = httpx.Client(base_url=URL, transport=httpx.MockTransport(script))
    if sleeps is not None:
        client.api._sleep = sleeps.append
    if clock is not None:
        client.api._clock = clock
    return client


def simple() -> Workflow:
    wf = Workflow("w", params={"n": 1})
    wf.command("a", ["true"])
    return wf


def test_submit_wait_and_result_ride_the_events_long_poll():
    states = iter(["running", "running", "succeeded"])

    def answer(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        if path == "/v1/jobs" and method == "POST":
            return 201, job("running")
        if path.endswith("/events"):
            status = next(states)
            seq = int(q.get("after", 0)) + 1
            return 200, {"events": [{"seq": seq, "at": 1, "task_id": "t-1", "key": "a", "status": status,
                                     "attempt": 1, "node_id": "n-1"}], "next": seq, "job": job(status)}
        if path.endswith("/result"):
            return 200, {"job_id": "j-1", "status": "succeeded", "result": {"a": 1}, "tasks": {"a": 1}}
        return 404, {"error": {"code": "not_found", "message": path}}

    script = Script(answer)
    seen: list[dict] = []
    with connect(script) as client:
        run = client.submit(simple(), {"n": 2}, domain="test")
        final = run.wait(on_event=seen.append)
        result = run.result()
    method, path, _, body = script.requests[0]
    assert (method, path) == ("POST", "/v1/jobs")
    assert body == {"workflow": simple().to_dict(), "params": {"n": 2}, "domain": "test"}
    assert final["status"] == "succeeded" and run.succeeded and run.done
    assert [e["status"] for e in seen] == ["running", "running", "succeeded"]
    events = script.paths("/events")
    assert [q.get("after") for q in events] == [None, "1", "2"]
    assert events[0]["wait_s"] == "0" and {q["wait_s"] for q in events[1:]} == {"30"}
    assert result == JobResult("j-1", "succeeded", {"a": 1}, {"a": 1}) and result["a"] == 1


def test_an_invalid_workflow_never_leaves_the_process():
    script = Script(lambda *a: (500, {}))
    wf = Workflow("w")
    wf.command("a", ["true"], depends_on=["ghost"])
    with connect(script) as client, pytest.raises(WorkflowInvalid, match="depends on 'ghost'"):
        client.submit(wf, domain="test")
    with connect(script) as client, pytest.raises(WorkflowInvalid, match="param 'n' expects an integer"):
        client.submit(simple(), {"n": "many"}, domain="test")
    assert script.requests == []


def test_the_coordinators_refusal_lists_its_problems():
    message = "workflow 'w' is invalid (2 problems):\n  - task 'a': first\n  - task 'b': second\n    ^ here"
    script = Script(lambda *a: (400, {"error": {"code": "invalid", "message": message}}))
    with connect(script) as client, pytest.raises(WorkflowRejected) as caught:
        client.submit({"name": "w", "tasks": {}}, domain="test", validate=False)
    assert caught.value.problems == ["task 'a': first", "task 'b': second\n^ here"]
    assert caught.value.status == 400


def test_the_domain_defaults_to_the_tokens_only_one():
    def answer(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        if path == "/v1/whoami":
            return 200, {"id": "at-1", "name": "t", "role": "submitter", "domains": domains}
        return 201, job("running")

    domains = ["team-a"]
    script = Script(answer)
    with connect(script) as client:
        client.submit(simple())
        assert script.requests[-1][3]["domain"] == "team-a"
        domains = ["*"]
        with pytest.raises(ClientError, match="may submit to any domain: name the domain to submit to"):
            client.submit(simple())


def test_wait_check_raises_job_failed_and_timeout_raises_wait_timeout():
    def answer(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        if path == "/v1/jobs/j-1":
            return 200, {**job("failed"), "tasks": []}
        return 200, {"events": [], "next": 0, "job": job("failed", error="task a failed")}

    with connect(Script(answer)) as client:
        run = client.job("j-1")
        assert run.status == "failed"
        with pytest.raises(JobFailed, match=r"j-1 \(w\) failed: task a failed"):
            run.wait(check=True)

    now = [0.0]

    def slow(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        now[0] += float(q.get("wait_s", 0)) or 0.1  # the long-poll "takes" its whole wait
        return 200, {"events": [], "next": 0, "job": job("running")}

    script = Script(slow)
    sleeps: list[float] = []
    with connect(script, sleeps, clock=lambda: now[0]) as client, pytest.raises(WaitTimeout) as caught:
        client.api.wait("j-1", timeout=65)
    assert caught.value.job["status"] == "running"
    assert [q["wait_s"] for q in script.paths("/events")] == ["0", "30", "30", "4.9"]
    assert sleeps == []


def test_an_early_empty_answer_is_not_spun_on():
    now = [0.0]

    def instant(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, {"events": [], "next": 0, "job": job("running")}

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    sleeps: list[float] = []
    script = Script(instant)
    with connect(script, clock=lambda: now[0]) as client:
        client.api._sleep = sleep
        with pytest.raises(WaitTimeout):
            client.api.wait("j-1", timeout=5)
    assert len(script.paths("/events")) <= 7 and sleeps and all(s <= 1.0 for s in sleeps)


def test_tasks_page_with_after_and_logs_follow_to_done():
    keys = [f"k{i:02d}" for i in range(7)]

    def answer(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        if path.endswith("/tasks"):
            after, limit = q.get("after", ""), int(q["limit"])
            return 200, [{"key": k, "id": f"t-{k}"} for k in keys if k > after][:limit]
        if path.endswith("/logs"):
            after = int(q.get("after", 0))
            if after < 3:
                return 200, {"chunks": [{"seq": after + 1, "attempt": 1, "stream": "stdout", "data": f"{after}\n"}],
                             "next": after + 1, "done": False}
            return 200, {"chunks": [], "next": after, "done": True}
        return 404, {}

    script = Script(answer)
    with connect(script) as client:
        assert [t["key"] for t in client.api.tasks("j-1", page_size=3)] == keys
        assert [q.get("after") for q in script.paths("/tasks")] == [None, "k02", "k05", "k06"]
        chunks = list(client.api.follow_logs("t-1", follow=True))
    assert "".join(c["data"] for c in chunks) == "0\n1\n2\n"
    assert {q["wait_s"] for q in script.paths("/logs")} == {"30"}


def test_from_env_finds_the_coordinator_like_the_cli(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYFABRIC_CONFIG", str(tmp_path / "none.json"))
    monkeypatch.delenv("POLYFABRIC_URL", raising=False)
    monkeypatch.delenv("POLYFABRIC_TOKEN", raising=False)
    monkeypatch.delenv("POLYFABRIC_TOKEN_FILE", raising=False)
    with pytest.raises(ClientError, match="no coordinator address"):
        Client.from_env()
    monkeypatch.setenv("POLYFABRIC_URL", URL)
    (tmp_path / "tok").write_text("pfa_from_file\n")
    monkeypatch.setenv("POLYFABRIC_TOKEN_FILE", str(tmp_path / "tok"))
    with Client.from_env() as client:
        assert client.api.base_url == URL
        assert client.api._auth == {"authorization": "Bearer pfa_from_file"}


def test_the_sdk_imports_no_server_internals():
    code = ("import sys, polyfabric.sdk; bad = [m for m in sys.modules if m.split('.')[:2] in "
            "(['polyfabric','services'], ['polyfabric','store'], ['polyfabric','api'], ['polyfabric','controllers'],"
            " ['polyfabric','coordinator'])]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
