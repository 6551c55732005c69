"""The SDK's builders: the same document as the YAML files, references, and local validation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from polyfabric.sdk import ITEM, Workflow, WorkflowInvalid

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

SPLIT = ("import json,os; json.dump(list(range({{ params.shards }})), "
         "open(os.environ['POLYFABRIC_RESULT'],'w'))")
WORK = ("import json,os,random; shard={{ item }}; rng=random.Random(shard); "
        "xs=[rng.gauss(shard / 2, 1.0) for _ in range({{ params.size }})]; "
        "json.dump(dict(shard=shard, n=len(xs), sum=sum(xs), min=min(xs), max=max(xs)), "
        "open(os.environ['POLYFABRIC_RESULT'],'w'))")
REPORT = ("import json,os; rs=json.loads(os.environ['RESULTS']); n=sum(r['n'] for r in rs); "
          "out=dict(shards=len(rs), n=n, mean=sum(r['sum'] for r in rs) / n, "
          "min=min(r['min'] for r in rs), max=max(r['max'] for r in rs)); "
          "print(out); json.dump(out, open(os.environ['POLYFABRIC_RESULT'],'w'))")


def shard_stats() -> Workflow:
    wf = Workflow("shard-stats", params={"shards": 8, "size": 1000, "threshold": 2.0}, priority=0, max_parallel=50)
    split = wf.command("split", ["python3", "-c", SPLIT])
    work = wf.command("work", ["python3", "-c", WORK], depends_on=[split], foreach=split.result, max_parallel=4,
                      resources={"cpu": 1, "memory": "256Mi"}, retries={"limit": 2, "backoff": "1s"}, timeout="30s")
    report = wf.command("report", ["python3", "-c", REPORT], depends_on=[work],
                        when=f"size({work.result}) > 0", trigger="all_success", env={"RESULTS": work.result})
    mean = f"{report.result}.mean"
    echo = "echo 'mean {{ tasks.report.result.mean }} is %s {{ params.threshold }}'"
    high = wf.command("high", ["sh", "-c", echo % "above"], depends_on=[report],
                      when=f"{mean} > {wf.param('threshold')}")
    low = wf.command("low", ["sh", "-c", echo % "at most"], depends_on=[report],
                     when=f"{mean} <= {wf.param('threshold')}")
    summary = ("import json,os; r=json.loads(os.environ['REPORT']); json.dump(dict(branch='high' if "
               "'{{ tasks.high.status }}' == 'succeeded' else 'low', shards=r['shards'], samples=r['n'], "
               "mean=round(r['mean'], 4), min=round(r['min'], 4), max=round(r['max'], 4)), "
               "open(os.environ['POLYFABRIC_RESULT'],'w'))")
    wf.command("summary", ["python3", "-c", summary], depends_on=[high, low], trigger="one_success",
               env={"REPORT": report.result})
    return wf


def test_the_builders_produce_the_document_of_shard_stats_yaml():
    expected = yaml.safe_load((EXAMPLES / "shard_stats.yaml").read_text())
    assert shard_stats().to_dict() == expected


def test_the_function_example_with_the_brief_s_spelling():
    expected = yaml.safe_load((EXAMPLES / "shard_stats_function.yaml").read_text())
    wf = Workflow("shard-stats-function", params={"shards": 8}, max_parallel=50)
    split = wf.command("split", ["python3", "-c", SPLIT])
    work = wf.function("work", "examples.stats:process", args={"shard": "{{ item }}"}, foreach=split.result,
                       depends_on=[split], max_parallel=4, retries=2, timeout="30s",
                       resources={"cpu": 1, "memory": "256Mi"})
    wf.command("report", ["sh", "-c", "echo {{ tasks.work.result }}"], depends_on=[work],
               when="size(tasks.work.result) > 0", trigger="all_success")
    assert wf.to_dict() == expected
    spec = wf.validate({"shards": 16})
    assert spec.params["shards"] == 16 and spec.tasks["work"].function == "examples.stats:process"


def test_to_yaml_is_the_same_workflow_in_file_order():
    wf = shard_stats()
    text = wf.to_yaml()
    assert yaml.safe_load(text) == wf.to_dict()
    assert list(yaml.safe_load(text)) == ["name", "params", "priority", "max_parallel", "tasks"]
    assert list(yaml.safe_load(text)["tasks"]) == ["split", "work", "report", "high", "low", "summary"]
    assert Workflow.from_yaml(text).to_dict() == wf.to_dict()


def test_expressions_render_as_source_or_template_where_each_belongs():
    wf = Workflow("refs", params={"n": 3})
    a = wf.command("a", ["echo", wf.param("n")])
    wf.function("b", "pkg.mod:fn", args={"x": ITEM, "all": a.result, "nested": [a.status, {"k": ITEM}]},
                    foreach=a.result, env={"N": wf.param("n")}, timeout=dt.timedelta(minutes=2))
    doc = wf.to_dict()
    assert doc["tasks"]["a"] == {"command": ["echo", "{{ params.n }}"]}
    assert doc["tasks"]["b"] == {
        "depends_on": ["a"],  # read through an Expr, so made a dependency
        "foreach": "tasks.a.result",
        "function": "pkg.mod:fn",
        "args": {"x": "{{ item }}", "all": "{{ tasks.a.result }}",
                 "nested": ["{{ tasks.a.status }}", {"k": "{{ item }}"}]},
        "env": {"N": "{{ params.n }}"},
        "timeout": 120.0,
    }
    wf.validate()


def test_a_reference_to_a_task_already_upstream_adds_no_direct_dependency():
    wf = Workflow("chain")
    a = wf.command("a", ["true"])
    b = wf.command("b", ["true"], depends_on=[a])
    c = wf.command("c", ["echo", a.result], depends_on=[b], trigger="all_done")
    assert c.body["depends_on"] == ["b"]
    wf.validate()


def test_local_validation_lists_every_problem():
    wf = Workflow("broken", params={"shards": 4})
    wf.command("split", ["true"], timeout="soon")
    wf.function("work", "not a reference", depends_on=["splt"], when="params.shardz > 1")
    with pytest.raises(WorkflowInvalid) as caught:
        wf.validate({"size": 3})
    problems = caught.value.problems
    assert any("task 'split': timeout: 'soon' is not a duration" in p for p in problems), problems
    assert any("function 'not a reference' is not a module:attr reference" in p for p in problems)
    assert any("depends on 'splt', which does not exist; did you mean 'split'?" in p for p in problems)
    assert any("param 'size' is not declared" in p for p in problems)
    assert len(problems) >= 4
    assert "workflow 'broken' is invalid" in str(caught.value)


def test_mistakes_in_building_are_refused_at_once():
    wf = Workflow("w")
    a = wf.command("a", ["true"])
    with pytest.raises(ValueError, match="already has a task 'a'"):
        wf.command("a", ["true"])
    with pytest.raises(TypeError, match="command must be a list"):
        wf.command("b", "echo hi")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"use a\.result or a\.status"):
        wf.command("c", ["echo", a])  # type: ignore[list-item]
    with pytest.raises(KeyError, match="declares no param 'n'"):
        wf.param("n")
    other = Workflow("other").command("x", ["true"])
    with pytest.raises(ValueError, match="belongs to another workflow"):
        wf.command("d", ["true"], depends_on=[other])
    assert "b" not in wf and "d" not in wf and wf["a"] is not None
    assert [t.name for t in wf.tasks] == ["a"]
