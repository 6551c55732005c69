"""A fake coordinator for the agent's task protocol: hands out leases, records reports, checks shapes.

It verifies no signature; it does what docs/protocol.md says the real one does where the agent
can tell: every lease not yet reported started is sent again on each lease call, `wait_s` is a
long-poll, report answers carry `accepted`, `refused` and `cancel`. Tests script failures
(`fail_reports`: answer the next N reports with 503) and refusals, and read what arrived.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = ["FakeCoordinator"]

EVENT_FIELDS = {
    "started": {"type", "task_id", "attempt", "at"},
    "finished": {"type", "task_id", "attempt", "at", "status", "result", "error", "exit_code"},
    "cancelled": {"type", "task_id", "attempt", "at", "reason"},
    "rejected": {"type", "task_id", "attempt", "at", "reason"},
}
# Optional fields an event may carry besides those (schemas/agent.py): what the attempt used (the
# ledger, issue 7) and the signed result manifest (issue 6).
OPTIONAL_EVENT_FIELDS = {"usage", "manifest"}


class FakeCoordinator:
    def __init__(self, port: int = 0) -> None:
        self.cond = threading.Condition()
        self.connections: list[socket.socket] = []
        self.leases: dict[tuple[str, int], dict[str, Any]] = {}  # handed out, not reported started yet
        self.cancels: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []  # every report body that was answered 200
        self.lease_calls: list[dict[str, Any]] = []
        self.fail_reports = 0
        self.failed_reports = 0
        self.refuse: dict[tuple[str, int], str] = {}
        self.poison: set[str] = set()  # task ids whose events make a whole report a 422
        self.report_cancels: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.heartbeats = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- test side ---------------------------------------------------------------------------

    def add_lease(self, lease: dict[str, Any]) -> None:
        with self.cond:
            self.leases[(lease["task_id"], lease["attempt"])] = lease
            self.cond.notify_all()

    def cancel(self, task_id: str, attempt: int, reason: str) -> None:
        with self.cond:
            self.cancels.append({"task_id": task_id, "attempt": attempt, "reason": reason})
            self.cond.notify_all()

    def events(self, task_id: str | None = None) -> list[dict[str, Any]]:
        with self.cond:
            return [e for r in self.reports for e in r["events"] if task_id is None or e["task_id"] == task_id]

    def logs(self, task_id: str) -> list[dict[str, Any]]:
        with self.cond:
            return [c for r in self.reports for c in r["logs"] if c["task_id"] == task_id]

    def final(self, task_id: str) -> dict[str, Any] | None:
        for event in self.events(task_id):
            if event["type"] in ("finished", "cancelled", "rejected"):
                return event
        return None

    def close(self) -> None:
        """Stop like a crashed process: the listener and every open connection go away."""
        self.server.shutdown()
        self.server.server_close()
        with self.cond:
            connections, self.connections = self.connections, []
            self.cond.notify_all()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    # -- the HTTP side -----------------------------------------------------------------------

    def _lease(self, body: dict[str, Any]) -> dict[str, Any]:
        if set(body) != {"wait_s", "free_slots", "known"}:
            self.problems.append(f"lease body {body}")
        self.lease_calls.append(body)
        deadline = time.monotonic() + min(float(body.get("wait_s", 0)), 30.0)
        with self.cond:
            while not (self.leases or self.cancels) and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
            cancels, self.cancels = self.cancels, []
            return {"leases": list(self.leases.values()), "cancel": cancels}

    def _report(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if set(body) != {"events", "logs", "running"}:
            self.problems.append(f"report body keys {sorted(body)}")
        for event in body.get("events", []):
            if set(event) - OPTIONAL_EVENT_FIELDS != EVENT_FIELDS.get(event.get("type"), set()):
                self.problems.append(f"event {event}")
        for chunk in body.get("logs", []):
            if set(chunk) != {"task_id", "attempt", "stream", "offset", "data"}:
                self.problems.append(f"log chunk {chunk}")
        with self.cond:
            if any(e["task_id"] in self.poison for e in body["events"]):
                self.failed_reports += 1
                return 422, {"error": {"code": "invalid", "message": "events.0.result: not acceptable"}}
            if self.fail_reports > 0:
                self.fail_reports -= 1
                self.failed_reports += 1
                return 503, {"error": {"code": "unavailable", "message": "restarting"}}
            refused = []
            for event in body["events"]:
                ident = (event["task_id"], event["attempt"])
                self.leases.pop(ident, None)  # reported: no more re-sends
                if ident in self.refuse:
                    refused.append({"task_id": ident[0], "attempt": ident[1], "reason": self.refuse[ident]})
            self.reports.append(body)
            cancel, self.report_cancels = self.report_cancels, []
            self.cond.notify_all()
            return 200, {"accepted": len(body["events"]) - len(refused), "refused": refused, "cancel": cancel}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with fake.cond:
                    fake.connections.append(self.connection)

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                status, answer = 200, {}
                if self.path == "/v1/agent/lease":
                    answer = fake._lease(body)
                elif self.path == "/v1/agent/report":
                    status, answer = fake._report(body)
                elif self.path == "/v1/agent/register":
                    status, answer = 201, {"node_id": "n-fake", "name": body["node"]["name"], "domain": "d",
                                           "state": "pending", "heartbeat_interval_s": 0.2}
                elif self.path == "/v1/agent/hello":
                    answer = {"node_id": "n-fake", "name": "x", "domain": "d", "state": "active",
                              "heartbeat_interval_s": 0.2}
                elif self.path == "/v1/agent/heartbeat":
                    fake.heartbeats += 1
                    answer = {"state": "active"}
                else:
                    status, answer = 404, {"error": {"code": "not_found", "message": self.path}}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture
def start_coordinator() -> Iterator[Callable[[int], FakeCoordinator]]:
    """Start a fake coordinator (on a given port: a restart of an earlier one); all stopped at the end."""
    fakes: list[FakeCoordinator] = []

    def start(port: int = 0) -> FakeCoordinator:
        fake = FakeCoordinator(port)
        fake.thread.start()
        fakes.append(fake)
        return fake

    yield start
    for fake in fakes:
        fake.close()
        assert fake.problems == []


@pytest.fixture
def coordinator(start_coordinator: Callable[[int], FakeCoordinator]) -> FakeCoordinator:
    return start_coordinator(0)
