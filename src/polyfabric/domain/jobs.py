"""Jobs: a workflow as the user declared it, after validation.

A `WorkflowSpec` is a DAG of `TaskSpec`s. Parsing and validation of the user's file live in
`polyfabric.workflow.spec`; these are the plain values the rest of the system passes around.
Expressions (`when`, `foreach`, `{{ ... }}` templates) are kept as their CEL source text: the
domain does not evaluate them.

Resources: every task takes one scheduling slot on its node (`slots=1`) plus what it declares.
A task that declares no `cpu` reserves no CPU share (cpu 0), only its slot: the node's slot count
then bounds how many such tasks share it. Declaring `cpu: 1` reserves a whole core as well.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.resources import Resources

__all__ = [
    "DEFAULT_TASK_RESOURCES",
    "RetryPolicy",
    "TaskSpec",
    "TriggerRule",
    "WorkflowSpec",
    "WorkflowState",
    "format_duration",
    "parse_duration",
]


class TriggerRule(StrEnum):
    """When a task whose dependencies are all terminal runs, rather than being skipped."""

    ALL_SUCCESS = "all_success"  # every dependency succeeded
    ALL_DONE = "all_done"  # every dependency is terminal, whatever its outcome (cleanup tasks)
    ONE_SUCCESS = "one_success"  # at least one dependency succeeded


class WorkflowState(StrEnum):
    """The state of a workflow run as a whole, as shown to users."""

    PENDING = "pending"  # submitted, not started
    RUNNING = "running"
    PAUSED = "paused"  # no new task instances are released; running ones go on
    CANCELLING = "cancelling"  # cancel asked; waiting for running instances to stop
    SUCCEEDED = "succeeded"  # every task succeeded or was skipped
    FAILED = "failed"
    CANCELLED = "cancelled"


DEFAULT_TASK_RESOURCES = Resources(slots=1)
"""What a task that declares nothing asks for: one slot, no CPU share, no memory reservation."""

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: str | int | float) -> float:
    """Seconds from '30s', '5m', '1h', '250ms', '1h30m' or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValidationError(f"{value!r} is not a duration (examples: 30s, 5m, 1h, 250ms)")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValidationError(f"a duration must be a finite number of seconds >= 0, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValidationError(f"{value!r} is not a duration (examples: 30s, 5m, 1h, 250ms)")
    text = value.strip().replace(" ", "")
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return parse_duration(number)
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        _bad_duration(value)
    return total


def _bad_duration(value: object) -> float:
    raise ValidationError(f"{value!r} is not a duration (examples: 30s, 5m, 1h, 250ms, 1h30m)")


def format_duration(seconds: float) -> str:
    """The short form users write: 0.25 -> '250ms', 90 -> '1m30s'."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    out, rest = [], round(seconds, 3)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            count = int(rest // size)
            out.append(f"{count}{unit}")
            rest -= count * size
    if rest or not out:
        out.append(f"{rest:g}s")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failed attempt is tried again, and how long to wait before each retry.

    `limit` counts retries, not attempts: limit 2 allows three attempts. Preemptions are not
    failures and never use up a retry. The delay grows geometrically and is capped.
    """

    limit: int = 0
    backoff_s: float = 1.0
    factor: float = 2.0
    max_backoff_s: float = 300.0

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValidationError(f"retries cannot be negative: {self.limit}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValidationError("a retry backoff cannot be negative")
        if self.factor < 1:
            raise ValidationError(f"the retry backoff factor must be >= 1, got {self.factor}")

    def allows(self, failures: int) -> bool:
        """True when an instance that has failed `failures` times may run again."""
        return failures <= self.limit

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retrying after failure number `attempt` (1 = the first failure)."""
        if attempt < 1:
            return 0.0
        try:
            raw = self.backoff_s * self.factor ** (attempt - 1)
        except OverflowError:
            return self.max_backoff_s
        return min(raw, self.max_backoff_s)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task of a workflow, validated. Exactly one of `command` and `function` is set.

    `foreach` is a CEL expression (evaluated when the dependencies are done) or a literal list;
    the task then runs once per item. `max_parallel` caps how many of those item instances are
    queued or running at once. `priority` None means: the workflow's priority.
    """

    name: str
    command: tuple[str, ...] | None = None
    function: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    foreach: str | tuple[Any, ...] | None = None
    max_parallel: int | None = None
    resources: Resources = DEFAULT_TASK_RESOURCES
    retry: RetryPolicy = RetryPolicy()
    timeout_s: float | None = None
    when: str | None = None
    trigger: TriggerRule = TriggerRule.ALL_SUCCESS
    semaphore: str | None = None
    workdir: str | None = None
    priority: int | None = None
    description: str = ""
    # Negotiation (issue 6): labels policies and node owners read; `requires` (CEL over `node`:
    # a hard requirement) and `rank` (CEL: a preference, 0..100). None: the workflow's.
    labels: dict[str, str] = field(default_factory=dict)
    requires: str | None = None
    rank: str | None = None
    # Placement (issue 7, topology): run near the nodes of an upstream task, spread instances
    # across the values of a label, prefer labels (weights; negative: avoid), require labels.
    near: str | None = None
    spread: str | None = None
    affinity: tuple[tuple[str, str, float], ...] = ()
    constraints: dict[str, str] = field(default_factory=dict)

    keep: bool = False  # retention (issue 7): its outputs outlive the job's ttl
    # Secrets (issue 6): target -> ("env" | "file", secret name in the job's domain); sealed to the node
    # running each attempt (services/secrets.py), never part of the task's stored payload.
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.command is None) == (self.function is None):
            raise ValidationError(f"task {self.name!r} needs exactly one of command and function")

    @property
    def is_foreach(self) -> bool:
        return self.foreach is not None


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """A validated workflow: `params` hold the defaults with the submitter's overrides applied.

    `tasks` keep the order of the file; `order` is a topological order (dependencies first,
    ties broken by file order), which the engine uses so its decisions are deterministic.
    """

    name: str
    tasks: dict[str, TaskSpec]
    params: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_parallel: int | None = None
    description: str = ""
    order: tuple[str, ...] = ()
    ttl_s: float | None = None  # retention (issue 7): None = the coordinator's default; inf = never
    keep: tuple[str, ...] = ()  # tasks whose outputs outlive the ttl (besides those with keep: true)
    labels: dict[str, str] = field(default_factory=dict)  # issue 6: the job's labels, for policies
    requires: str | None = None  # CEL over `node` every task of the job requires
    rank: str | None = None  # CEL: how much the job prefers a node (0..100)

    def __post_init__(self) -> None:
        if not self.order:
            object.__setattr__(self, "order", tuple(self.tasks))
        if set(self.order) != set(self.tasks) or len(self.order) != len(self.tasks):
            raise ValidationError(f"workflow {self.name!r}: order must list every task exactly once")
        seen: set[str] = set()
        for name in self.order:
            for dep in self.tasks[name].depends_on:
                if dep not in seen:
                    raise ValidationError(
                        f"workflow {self.name!r}: task {name!r} comes before its dependency {dep!r} "
                        "in order (build specs with polyfabric.workflow.parse_workflow)"
                    )
            seen.add(name)
