"""A typed client for the jobs API (docs/protocol.md, "User API"), shared by the CLI and the SDK.

Why a layer of its own: the CLI and the SDK must agree on paths, paging and, above all, on how to
wait. Waiting never busy-polls: `wait()` and `follow_logs()` ride the coordinator's long-polls
(`/events` and `/logs` with `wait_s`), so an idle wait costs one request per 30 s. Answers stay
the plain JSON dicts of the protocol (`JobOut`, `TaskOut`, ...); a rejected workflow raises
`WorkflowRejected`, whose `problems` are the coordinator's list, one per line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

from polyfabric.client.errors import ApiError, ClientError
from polyfabric.client.http import ApiClient

__all__ = [
    "JOB_STATUSES",
    "LONG_POLL_S",
    "TASK_STATUSES",
    "TERMINAL_JOB_STATUSES",
    "TERMINAL_TASK_STATUSES",
    "DomainNeeded",
    "JobsClient",
    "WaitTimeout",
    "WorkflowRejected",
]

JOB_STATUSES = ("pending", "running", "paused", "succeeded", "failed", "cancelled")
TERMINAL_JOB_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
TASK_STATUSES = ("waiting", "ready", "leased", "running", "succeeded", "failed", "skipped", "cancelled")
TERMINAL_TASK_STATUSES = frozenset({"succeeded", "failed", "skipped", "cancelled"})

LONG_POLL_S = 30.0
"""The longest `wait_s` the coordinator honours (protocol: 0..30)."""

_HTTP_TIMEOUT_S = LONG_POLL_S + 30.0  # a long-poll must never look like a dead coordinator

Dict = dict[str, Any]
Dicts = list[Dict]  # `list` is a method name below; this alias keeps annotations unambiguous


class WorkflowRejected(ApiError):
    """The coordinator refused the workflow (400): nothing was created. `problems` lists each one."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.problems = _problems(message)


class DomainNeeded(ClientError):
    """No domain was named and the token does not have exactly one."""


class WaitTimeout(ClientError):
    """`wait()` ran out of time; the job goes on. `job` is the last JobOut seen."""

    def __init__(self, job: Dict, timeout: float) -> None:
        super().__init__(f"job {job.get('id')} is still {job.get('status')} after {timeout:g}s")
        self.job = job
        self.timeout = timeout


def _problems(message: str) -> list[str]:
    """The problem lines of a WorkflowInvalid message ("... is invalid (2 problems):\\n  - a\\n  - b").

    A problem may continue on indented lines (a CEL error pointing at the spot); they stay with it.
    """
    problems: list[str] = []
    for line in message.splitlines()[1:]:
        if line.startswith("  - "):
            problems.append(line[4:])
        elif problems and line.startswith("    "):
            problems[-1] += "\n" + line[4:]
    return problems or [message]


def _q(segment: str) -> str:
    return quote(segment, safe="")


class JobsClient(ApiClient):
    """`ApiClient` plus the jobs, tasks and semaphores calls. Use as a context manager."""

    def __init__(self, base_url: str, token: str, timeout: float = _HTTP_TIMEOUT_S,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(base_url, token, timeout=max(timeout, LONG_POLL_S + 5))
        self._sleep = sleep
        self._clock = clock

    # -- jobs ------------------------------------------------------------------------------------

    def submit(self, workflow: Mapping[str, Any], params: Mapping[str, Any] | None = None,
               domain: str | None = None) -> Dict:
        """Submit a workflow document (the YAML as loaded); the new `JobOut`.

        Raise `WorkflowRejected` listing every problem when the coordinator finds it invalid.
        """
        body: Dict = {"workflow": dict(workflow), "params": dict(params or {}),
                      "domain": domain if domain is not None else self.default_domain()}
        try:
            return dict(self.post("/v1/jobs", body))
        except ApiError as exc:
            if exc.status == 400 or (exc.status == 422 and exc.code == "invalid"):
                raise WorkflowRejected(exc.status, exc.code, exc.message) from None
            raise

    def whoami(self) -> Dict:
        """`{"id", "name", "role", "domains"}` of this client's token."""
        return dict(self.get("/v1/whoami"))

    def default_domain(self) -> str:
        """The domain to submit to when none is named: the token's only domain."""
        granted = [str(d) for d in self.whoami().get("domains") or []]
        if len(granted) == 1 and granted[0] != "*":
            return granted[0]
        known = "any domain" if "*" in granted else ", ".join(granted) or "no domain"
        raise DomainNeeded(f"this token may submit to {known}: name the domain to submit to")

    def list(self, status: str | None = None, domain: str | None = None, limit: int | None = None,
             after: str | None = None) -> Dicts:
        """One page of `JobOut`s, newest first; `after` = the last job id of the previous page."""
        return list(self.get("/v1/jobs", status=status, domain=domain, limit=limit, after=after))

    def get_job(self, job_id: str) -> Dict:
        """`JobDetail`: the JobOut, the first 1,000 tasks by key, and `counts` by status."""
        return dict(self.get(f"/v1/jobs/{_q(job_id)}"))

    def tasks(self, job_id: str, status: str | None = None, page_size: int = 500) -> Iterator[Dict]:
        """Every `TaskOut` of a job in key order, fetched a page at a time (lazily)."""
        after: str | None = None
        while True:
            page = self.get(f"/v1/jobs/{_q(job_id)}/tasks", status=status, after=after, limit=page_size)
            if not page:
                return
            yield from page
            after = page[-1]["key"]

    def result(self, job_id: str) -> Dict:
        """`{"job_id", "status", "result", "tasks": {name: result}}`."""
        return dict(self.get(f"/v1/jobs/{_q(job_id)}/result"))

    def events(self, job_id: str, after: int | None = None, wait_s: float = 0) -> Dict:
        """Task status changes after `after` (long-polls up to `wait_s` <= 30 s for one):
        `{"events": [...], "next": SEQ, "job": JobOut}`."""
        wait = max(0.0, min(float(wait_s), LONG_POLL_S))
        return dict(self.get(f"/v1/jobs/{_q(job_id)}/events", after=after, wait_s=f"{wait:g}"))

    def _act(self, job_id: str, verb: str, body: Dict) -> Dict:
        return dict(self.post(f"/v1/jobs/{_q(job_id)}/{verb}", body))

    def pause(self, job_id: str, reason: str = "") -> Dict:
        return self._act(job_id, "pause", {"reason": reason})

    def resume(self, job_id: str, reason: str = "") -> Dict:
        return self._act(job_id, "resume", {"reason": reason})

    def cancel(self, job_id: str, reason: str = "") -> Dict:
        return self._act(job_id, "cancel", {"reason": reason})

    def retry(self, job_id: str, reason: str = "", *, from_failed: bool = False) -> Dict:
        """Re-run failed (and cancelled) tasks and what depends on them; succeeded results are kept.
        `from_failed`: only the failed tasks and what was skipped or cancelled because of them."""
        body: Dict = {"reason": reason}
        if from_failed:
            body["from_failed"] = True
        return self._act(job_id, "retry", body)

    def set_priority(self, job_id: str, priority: int, reason: str = "") -> Dict:
        return self._act(job_id, "priority", {"priority": int(priority), "reason": reason})

    def watch(self, job_id: str, after: int | None = None, timeout: float | None = None) -> Iterator[Dict]:
        """Each events answer (`events`, `next`, `job`) as it comes, first one at once, until the
        job is finished; raise `WaitTimeout` after `timeout` seconds."""
        deadline = None if timeout is None else self._clock() + timeout
        wait_s = 0.0
        while True:
            asked, asked_wait = self._clock(), wait_s
            page = self.events(job_id, after=after, wait_s=wait_s)
            yield page
            job = page["job"]
            if job["status"] in TERMINAL_JOB_STATUSES:
                return
            if page.get("next") is not None:
                after = page["next"]
            now = self._clock()
            if deadline is not None and now >= deadline:
                raise WaitTimeout(job, timeout or 0.0)
            if not page["events"] and asked_wait and now - asked < min(1.0, asked_wait / 2):
                # Nothing new, and back well before the wait we asked for: do not spin on it.
                self._sleep(min(1.0, deadline - now if deadline is not None else 1.0))
                now = self._clock()
            wait_s = LONG_POLL_S if deadline is None else max(0.0, min(LONG_POLL_S, deadline - now))

    def wait(self, job_id: str, timeout: float | None = None,
             on_event: Callable[[Dict], None] | None = None) -> Dict:
        """Block until the job is finished (long-polling its events); its final `JobOut`.

        `on_event` sees every event on the way. Raise `WaitTimeout` after `timeout` seconds.
        """
        job: Dict = {}
        for page in self.watch(job_id, timeout=timeout):
            if on_event is not None:
                for event in page["events"]:
                    on_event(event)
            job = page["job"]
        return job

    # -- tasks -----------------------------------------------------------------------------------

    def task(self, task_id: str) -> Dict:
        """`TaskOut` with its `attempts`."""
        return dict(self.get(f"/v1/tasks/{_q(task_id)}"))

    def task_logs(self, task_id: str, after: int | None = None, wait_s: float = 0,
                  attempt: int | None = None) -> Dict:
        """`{"chunks": [{"seq", "attempt", "stream", "data"}], "next": SEQ, "done": bool}`."""
        wait = max(0.0, min(float(wait_s), LONG_POLL_S))
        return dict(self.get(f"/v1/tasks/{_q(task_id)}/logs", attempt=attempt, after=after, wait_s=f"{wait:g}"))

    def follow_logs(self, task_id: str, attempt: int | None = None, follow: bool = False,
                    after: int | None = None) -> Iterator[Dict]:
        """Every log chunk in order. `follow`: keep long-polling until the coordinator says `done`
        (the attempt finished and everything was returned); else stop at what exists now."""
        while True:
            asked = self._clock()
            page = self.task_logs(task_id, after=after, wait_s=LONG_POLL_S if follow else 0, attempt=attempt)
            chunks = page.get("chunks") or []
            yield from chunks
            if page.get("next") is not None:
                after = page["next"]
            elif chunks:
                after = chunks[-1]["seq"]
            if page.get("done") or (not follow and not chunks):
                return
            if follow and not chunks and self._clock() - asked < 0.5:
                self._sleep(0.5)  # an early empty answer: do not spin on it

    # -- semaphores ------------------------------------------------------------------------------

    def semaphores(self) -> Dicts:
        """`[{"name", "size", "in_use"}]`."""
        return list(self.get("/v1/semaphores"))

    def set_semaphore(self, name: str, size: int) -> Dict:
        """Create or resize a semaphore (operator)."""
        return dict(self.request("PUT", f"/v1/semaphores/{_q(name)}", json={"size": int(size)}))
