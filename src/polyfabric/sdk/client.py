"""`Client` and `Run`: submit workflows from Python and follow what they do.

Why a thin layer over `JobsClient`: the SDK user thinks in runs (`run.wait()`, `run.result()`),
not in endpoints; everything else — paths, paging, the events long-poll that `wait` rides — is
the same code the CLI uses. Submission validates locally first, so a broken workflow raises
`WorkflowInvalid` in the author's process, listing every problem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from polyfabric.client.errors import ClientError
from polyfabric.client.jobs import TERMINAL_JOB_STATUSES, JobsClient
from polyfabric.sdk.workflow import Workflow
from polyfabric.workflow.spec import parse_workflow

__all__ = ["Client", "JobFailed", "JobResult", "Run"]


class JobFailed(ClientError):
    """`wait(check=True)` on a job that failed or was cancelled. `job` is its final JobOut."""

    def __init__(self, job: dict[str, Any]) -> None:
        detail = f": {job['error']}" if job.get("error") else ""
        super().__init__(f"job {job.get('id')} ({job.get('name')}) {job.get('status')}{detail}")
        self.job = job


@dataclass(frozen=True)
class JobResult:
    """A job's outcome: `result` (the results of its final tasks, by name) and every task's result."""

    job_id: str
    status: str
    result: Any
    tasks: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, task_name: str) -> Any:
        return self.tasks[task_name]


class Run:
    """One submitted job. Its `job` is the JobOut last seen; `refresh()` fetches it again."""

    def __init__(self, client: Client, job: dict[str, Any]) -> None:
        self.client = client
        self.job = dict(job)
        self.id: str = job["id"]

    @property
    def status(self) -> str:
        return str(self.job.get("status"))

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def refresh(self) -> dict[str, Any]:
        detail = self.client.api.get_job(self.id)
        self.job = {k: v for k, v in detail.items() if k != "tasks"}
        return self.job

    def wait(self, timeout: float | None = None, *, check: bool = False,
             on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Block until the job is finished (long-polling, no busy loop); its final JobOut.

        `check=True` raises `JobFailed` unless it succeeded; `timeout` raises `WaitTimeout`.
        """
        self.job = self.client.api.wait(self.id, timeout=timeout, on_event=on_event)
        if check and not self.succeeded:
            raise JobFailed(self.job)
        return self.job

    def result(self) -> JobResult:
        r = self.client.api.result(self.id)
        return JobResult(job_id=r.get("job_id", self.id), status=r.get("status", self.status),
                         result=r.get("result"), tasks=dict(r.get("tasks") or {}))

    def tasks(self, status: str | None = None) -> Iterator[dict[str, Any]]:
        """Every TaskOut of the job in key order (paged lazily)."""
        return self.client.api.tasks(self.id, status=status)

    def task(self, key: str) -> dict[str, Any]:
        """The TaskOut of one instance by key ("split", "work[3]")."""
        for t in self.tasks():
            if t.get("key") == key:
                return t
        raise KeyError(f"job {self.id} has no task {key!r}")

    def logs(self, key: str, attempt: int | None = None) -> str:
        """The log text (stdout and stderr as they came) of one task instance, by key."""
        t = self.task(key)
        return "".join(str(c.get("data") or "") for c in self.client.api.follow_logs(t["id"], attempt=attempt))

    def _set(self, job: dict[str, Any]) -> Run:
        self.job = job
        return self

    def pause(self, reason: str = "") -> Run:
        return self._set(self.client.api.pause(self.id, reason))

    def resume(self, reason: str = "") -> Run:
        return self._set(self.client.api.resume(self.id, reason))

    def cancel(self, reason: str = "") -> Run:
        return self._set(self.client.api.cancel(self.id, reason))

    def retry(self, reason: str = "", *, from_failed: bool = False) -> Run:
        return self._set(self.client.api.retry(self.id, reason, from_failed=from_failed))

    def set_priority(self, priority: int, reason: str = "") -> Run:
        return self._set(self.client.api.set_priority(self.id, priority, reason))

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.job.get('name')!r} {self.status}>"


class Client:
    """A connection to a coordinator for submitting and following workflows."""

    def __init__(self, url: str, token: str, *, timeout: float | None = None) -> None:
        self.api = JobsClient(url, token) if timeout is None else JobsClient(url, token, timeout=timeout)

    @classmethod
    def from_env(cls, url: str | None = None, token: str | None = None) -> Client:
        """Find the coordinator like the CLI does: arguments, then POLYFABRIC_URL / POLYFABRIC_TOKEN
        (or POLYFABRIC_TOKEN_FILE), then the client config file `polyfabric up` writes."""
        import click

        from polyfabric.cli.config import load_config

        try:
            config = load_config(url, token)
        except click.ClickException as exc:
            raise ClientError(exc.message) from None
        return cls(config.url, config.token)

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, workflow: Workflow | Mapping[str, Any], params: Mapping[str, Any] | None = None, *,
               domain: str | None = None, validate: bool = True) -> Run:
        """Submit a workflow (a `Workflow` or a document); a `Run`. Validated locally first
        (`WorkflowInvalid`); the coordinator's own refusal raises `WorkflowRejected`."""
        doc = workflow.to_dict() if isinstance(workflow, Workflow) else dict(workflow)
        if validate:
            parse_workflow(doc, params)
        return Run(self, self.api.submit(doc, params, domain))

    def run(self, workflow: Workflow | Mapping[str, Any], params: Mapping[str, Any] | None = None, *,
            domain: str | None = None, timeout: float | None = None, check: bool = True) -> Run:
        """Submit and wait; with `check` (the default) raise `JobFailed` unless it succeeded."""
        run = self.submit(workflow, params, domain=domain)
        run.wait(timeout, check=check)
        return run

    def job(self, job_id: str) -> Run:
        """A `Run` for an existing job."""
        detail = self.api.get_job(job_id)
        return Run(self, {k: v for k, v in detail.items() if k != "tasks"})

    def jobs(self, status: str | None = None, domain: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """JobOuts, newest first."""
        return self.api.list(status=status, domain=domain, limit=limit)

    def semaphores(self) -> list[dict[str, Any]]:
        return self.api.semaphores()

    def set_semaphore(self, name: str, size: int) -> dict[str, Any]:
        return self.api.set_semaphore(name, size)
