"""A lease as the agent understands it, and the outcome of running one.

Leases arrive as JSON from `POST /v1/agent/lease` (docs/protocol.md); they are checked here once,
so the runner and the executors work with typed, validated values. A lease without usable ids
cannot be answered at all (LeaseInvalid.ident is None: it is logged and dropped); any other
defect is answered with a failed attempt naming it, since running it again would not help.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from polyfabric.domain.resources import Resources

__all__ = ["Ident", "Lease", "LeaseInvalid", "Outcome", "format_seconds"]

Ident = tuple[str, int]
"""(task_id, attempt): what identifies one attempt everywhere in the protocol."""

# Task ids name a directory on this node: keep them to a safe alphabet.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class LeaseInvalid(Exception):
    def __init__(self, message: str, ident: Ident | None) -> None:
        super().__init__(message)
        self.message = message
        self.ident = ident


@dataclass(frozen=True, slots=True)
class Lease:
    task_id: str
    job_id: str
    key: str
    attempt: int
    command: tuple[str, ...] | None
    function: str | None
    args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    timeout_s: float | None = None
    resources: Resources = field(default_factory=Resources)
    # The task's latest checkpoint ({"seq", "size", "sha256", "format"}): restored before it starts.
    checkpoint: dict[str, Any] | None = None
    # Secrets sealed to this node for this attempt (agent/secrets.py opens them; issue 6).
    secrets: dict[str, Any] | None = None

    @property
    def ident(self) -> Ident:
        return (self.task_id, self.attempt)

    @property
    def slots(self) -> int:
        """Slots this attempt holds: what it asks for, at least one (every attempt takes a slot)."""
        return max(1, self.resources.slots)

    @classmethod
    def from_wire(cls, data: Any) -> Lease:
        if not isinstance(data, dict):
            raise LeaseInvalid(f"a lease must be an object, got {type(data).__name__}", None)
        task_id, attempt = data.get("task_id"), data.get("attempt")
        if not isinstance(task_id, str) or not isinstance(attempt, int) or isinstance(attempt, bool):
            raise LeaseInvalid(f"a lease without a usable task_id/attempt: {task_id!r}/{attempt!r}", None)
        ident = (task_id, attempt)

        def bad(message: str) -> LeaseInvalid:
            return LeaseInvalid(f"the lease is malformed: {message}", ident)

        if not _SAFE_ID.match(task_id):
            raise bad(f"task id {task_id!r} has characters this agent does not accept")
        if attempt < 0:
            raise bad(f"attempt {attempt} is negative")

        command, function = data.get("command"), data.get("function")
        if command is not None:
            if (not isinstance(command, list) or not command
                    or not all(isinstance(part, str) for part in command)):
                raise bad("command must be a non-empty list of strings")
            command = tuple(command)
        if function is not None and (not isinstance(function, str) or ":" not in function):
            raise bad(f"function {function!r} is not a module:attr reference")
        if (command is None) == (function is None):
            raise bad("it must have exactly one of command and function")
        args = data.get("args") or {}
        if not isinstance(args, dict):
            raise bad("args must be an object")
        env = data.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise bad("env must map names to strings")
        if any(not k or "=" in k or "\0" in k or "\0" in v for k, v in env.items()):
            raise bad("env has a name or value the OS cannot hold")
        workdir = data.get("workdir")
        if workdir is not None and (not isinstance(workdir, str) or not workdir or "\0" in workdir):
            raise bad("workdir must be a path")
        timeout = data.get("timeout_s")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) \
                    or timeout <= 0:
                raise bad(f"timeout_s must be a positive number, got {timeout!r}")
            timeout = float(timeout)
        try:
            resources = Resources.from_dict(data.get("resources") or {})
        except (TypeError, ValueError) as exc:
            raise bad(f"resources: {exc}") from None
        checkpoint = data.get("checkpoint")
        if checkpoint is not None and (not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("seq"), int)):
            raise bad("checkpoint must be an object with a seq")
        return cls(task_id=task_id, job_id=str(data.get("job_id") or ""), key=str(data.get("key") or ""),
                   attempt=attempt, command=command, function=function, args=args, env=env, workdir=workdir,
                   timeout_s=timeout, resources=resources, checkpoint=checkpoint,
                   secrets=data.get("secrets") if isinstance(data.get("secrets"), dict) else None)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended. `stopped` is set (and status is "stopped") when it was interrupted
    on purpose (cancel, shutdown): the runner turns that into the right report."""

    status: Literal["succeeded", "failed", "stopped"]
    result: Any = None
    error: str | None = None
    exit_code: int | None = None

    @classmethod
    def failed(cls, error: str, exit_code: int | None = None) -> Outcome:
        return cls("failed", None, error, exit_code)


def format_seconds(value: float) -> str:
    """30.0 -> '30s', 0.5 -> '0.5s' (as people write durations)."""
    return f"{value:g}s"
