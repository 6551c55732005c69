"""Workflows: from the user's file to the decisions of a running DAG.

    spec.py         parse and validate a loaded workflow document into a `WorkflowSpec`,
                    reporting every problem at once
    expressions.py  CEL expressions and `{{ }}` templates, compiled once per workflow
    dag.py          topological order, cycles, reachability
    engine.py       `WorkflowRun`: the state of one run and `handle(event, now) -> commands`

PURE: like `polyfabric.domain`, this package does no I/O, never reads the clock, the
environment or a random source, and parses no YAML (it receives already-loaded documents). Time
comes in as `now`; the coordinator applies the engine's commands and persists its records, and
can rebuild a run from those records after a restart.
"""

from polyfabric.workflow.engine import (
    Cancel,
    CancelTasks,
    Changes,
    Command,
    EnqueueTask,
    Event,
    FailTask,
    InstanceRecord,
    Pause,
    PriorityChanged,
    Resume,
    RetryFailed,
    RunFlags,
    SetPriority,
    SkipTask,
    Snapshot,
    Started,
    TaskFinished,
    TaskInstance,
    TaskPreempted,
    WorkflowFinished,
    WorkflowRun,
)
from polyfabric.workflow.expressions import ExpressionError, Expressions
from polyfabric.workflow.spec import WorkflowInvalid, parse_param_value, parse_workflow

__all__ = [
    "Cancel",
    "CancelTasks",
    "Changes",
    "Command",
    "EnqueueTask",
    "Event",
    "ExpressionError",
    "Expressions",
    "FailTask",
    "InstanceRecord",
    "Pause",
    "PriorityChanged",
    "Resume",
    "RetryFailed",
    "RunFlags",
    "SetPriority",
    "SkipTask",
    "Snapshot",
    "Started",
    "TaskFinished",
    "TaskInstance",
    "TaskPreempted",
    "WorkflowFinished",
    "WorkflowInvalid",
    "WorkflowRun",
    "parse_param_value",
    "parse_workflow",
]
