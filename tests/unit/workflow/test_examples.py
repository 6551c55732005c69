"""The example workflows: they parse, and the command-only one really runs through the engine."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from polyfabric.domain.jobs import WorkflowState
from polyfabric.domain.task_states import TaskState
from polyfabric.workflow.engine import EnqueueTask, SkipTask, Started, TaskFinished, WorkflowFinished, WorkflowRun
from polyfabric.workflow.spec import parse_workflow

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def load_stats() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_stats", EXAMPLES / "stats.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stats_process_is_reproducible_and_json_able() -> None:
    stats = load_stats()
    first = stats.process(3, size=50)
    assert first == stats.process(3, size=50)
    assert first["shard"] == 3 and first["n"] == 50
    assert first["min"] <= first["mean"] <= first["max"]
    assert json.loads(json.dumps(first)) == first
    with pytest.raises(ValueError):
        stats.process(-1)


def run_commands(run: WorkflowRun, tmp_path: Path) -> tuple[WorkflowFinished, list[str]]:
    """A tiny stand-in for scheduler and agent: run each command, read its result file."""
    pending: list[Any] = list(run.handle(Started(), 0.0))
    skipped: list[str] = []
    now = 0.0
    while pending:
        command = pending.pop(0)
        if isinstance(command, WorkflowFinished):
            return command, skipped
        if isinstance(command, SkipTask):
            skipped.append(command.key)
            continue
        assert isinstance(command, EnqueueTask)
        inst = command.instance
        assert inst.command is not None
        result_file = tmp_path / f"{inst.key}.json"
        env = {**os.environ, **inst.env, "POLYFABRIC_RESULT": str(result_file)}
        argv = [sys.executable if a == "python3" else a for a in inst.command]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (inst.key, proc.stderr)
        result = json.loads(result_file.read_text()) if result_file.exists() else None
        now += 1.0
        pending.extend(run.handle(TaskFinished(inst.key, inst.attempt, TaskState.SUCCEEDED, result), now))
    raise AssertionError("the run never finished")


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
@pytest.mark.parametrize(("shards", "branch"), [(3, "low"), (12, "high")])
def test_shard_stats_runs_end_to_end(tmp_path: Path, shards: int, branch: str) -> None:
    doc = yaml.safe_load((EXAMPLES / "shard_stats.yaml").read_text())
    spec = parse_workflow(doc, {"shards": str(shards), "size": "20"})
    run = WorkflowRun(spec)
    done, skipped = run_commands(run, tmp_path)
    assert done.status is WorkflowState.SUCCEEDED
    assert len(run.task_result("work")) == shards
    assert [r["shard"] for r in run.task_result("work")] == list(range(shards))
    assert run.task_result("report")["n"] == shards * 20
    assert skipped == [{"low": "high", "high": "low"}[branch]]
    report = run.task_result("report")
    assert done.result == {"summary": {"branch": branch, "shards": shards, "samples": report["n"],
                                       "mean": round(report["mean"], 4), "min": round(report["min"], 4),
                                       "max": round(report["max"], 4)}}
    assert run.task_status(branch) is TaskState.SUCCEEDED
