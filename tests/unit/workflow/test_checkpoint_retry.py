"""`job retry --from-failed` in the engine (RetryFailed.only_failed): only the failed tasks and
what they held up run again; succeeded results stay; a task cancelled on its own stays cancelled.
(Checkpoints themselves are not the engine's business: a re-run task resumes from its last one.)"""

from __future__ import annotations

from typing import Any

import pytest

from polyfabric.domain.errors import Conflict
from polyfabric.domain.task_states import TaskState
from polyfabric.workflow.engine import EnqueueTask, RetryFailed, Started, TaskFinished, WorkflowRun
from polyfabric.workflow.spec import parse_workflow

S = TaskState


def _run() -> WorkflowRun:
    """a -> b -> c, and x on its own; a succeeds, b fails (c is skipped), x is cancelled."""
    run = WorkflowRun(parse_workflow({"name": "w", "tasks": {
        "a": {"command": ["a"]}, "b": {"command": ["b"], "depends_on": ["a"]},
        "c": {"command": ["c"], "depends_on": ["b"]}, "x": {"command": ["x"]}}}))
    run.handle(Started(), 0.0)
    run.handle(TaskFinished("a", 1, S.SUCCEEDED, {"a": 1}), 1.0)
    run.handle(TaskFinished("x", 1, S.CANCELLED, None, "stopped by an operator"), 1.5)
    run.handle(TaskFinished("b", 1, S.FAILED, None, "boom"), 2.0)
    assert run.finished
    assert [run.task_status(k) for k in "abcx"] == [S.SUCCEEDED, S.FAILED, S.SKIPPED, S.CANCELLED]
    return run


def _enqueued(commands: list[Any]) -> dict[str, int]:
    return {c.instance.key: c.instance.attempt for c in commands if isinstance(c, EnqueueTask)}


def test_from_failed_reruns_the_failed_task_and_what_it_skipped_only() -> None:
    run = _run()
    assert _enqueued(run.handle(RetryFailed(only_failed=True), 10.0)) == {"b": 2}
    assert run.task_status("c") is S.WAITING  # held up by b: runs after it
    assert run.task_status("x") is S.CANCELLED  # cancelled on its own: left alone
    a = run.instance("a")
    assert a is not None and (a.status, a.attempt, a.result) == (S.SUCCEEDED, 1, {"a": 1})
    assert _enqueued(run.handle(TaskFinished("b", 2, S.SUCCEEDED, 2), 11.0)) == {"c": 1}


def test_a_plain_retry_also_reruns_what_was_cancelled() -> None:
    run = _run()
    assert _enqueued(run.handle(RetryFailed(), 10.0)) == {"b": 2, "x": 2}
    assert run.instance("a").attempt == 1  # type: ignore[union-attr]


def test_from_failed_with_nothing_failed_is_a_conflict_naming_it() -> None:
    run = WorkflowRun(parse_workflow({"name": "w", "tasks": {"x": {"command": ["x"]}}}))
    run.handle(Started(), 0.0)
    run.handle(TaskFinished("x", 1, S.CANCELLED, None, "stopped"), 1.0)
    with pytest.raises(Conflict, match=r"nothing to retry, no task failed$"):
        run.handle(RetryFailed(only_failed=True), 2.0)
    assert _enqueued(run.handle(RetryFailed(), 3.0)) == {"x": 2}
