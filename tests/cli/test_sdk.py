"""The SDK end to end against the fake coordinator: build in code, submit, wait, read results and logs."""

from __future__ import annotations

import pytest

from polyfabric.domain.jobs import format_duration
from polyfabric.sdk import ITEM, Client, JobFailed, Workflow

from .fake import TOKEN, FakeCoordinator


def test_a_workflow_built_in_code_runs_and_its_results_come_back(fake: FakeCoordinator):
    wf = Workflow("durations", params={"count": 3})
    split = wf.command("split", ["python3", "-c", "import json,os; print('splitting'); json.dump([s * 45 for s in "
                                 "range({{ params.count }})], open(os.environ['POLYFABRIC_RESULT'],'w'))"])
    work = wf.function("work", format_duration, args={"seconds": ITEM}, foreach=split.result, max_parallel=2)
    wf.command("report", ["python3", "-c", "import os; print(os.environ['R'])"], env={"R": work.result},
               when=f"size({work.result}) > 0")
    with Client(fake.url, TOKEN) as client:
        run = client.submit(wf, {"count": 4}, domain="test")
        final = run.wait(timeout=30)
        assert final["status"] == "succeeded", final
        result = run.result()
        assert result["work"] == ["0ms", "45s", "1m30s", "2m15s"]
        assert result.result == {"report": None}
        assert run.logs("split") == "splitting\n"
        assert run.logs("report") == '["0ms","45s","1m30s","2m15s"]\n'
        assert [t["key"] for t in run.tasks() if not t["is_group"]] == [
            "report", "split", "work[0]", "work[1]", "work[2]", "work[3]"]
        assert [j["id"] for j in client.jobs()] == [run.id]


def test_client_run_raises_job_failed(fake: FakeCoordinator):
    wf = Workflow("fails")
    wf.command("boom", ["python3", "-c", "raise SystemExit(2)"])
    with Client(fake.url, TOKEN) as client, pytest.raises(JobFailed, match="failed"):
        client.run(wf, domain="test", timeout=30)
