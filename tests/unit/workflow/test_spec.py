"""Parsing and validating workflow files: every problem reported, all at once."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.jobs import RetryPolicy, TriggerRule
from polyfabric.workflow.expressions import Expressions
from polyfabric.workflow.spec import WorkflowInvalid, parse_param_value, parse_workflow

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

ISSUE_EXAMPLE = """
name: shard-stats
params: {shards: 8}
priority: 0
max_parallel: 50
tasks:
  split:
    command: [python3, -c, "import json,os; json.dump(list(range({{ params.shards }})), open(os.environ['POLYFABRIC_RESULT'],'w'))"]
  work:
    depends_on: [split]
    foreach: "tasks.split.result"
    max_parallel: 4
    function: "examples.stats:process"
    args: {shard: "{{ item }}"}
    resources: {cpu: 1, memory: 256Mi}
    retries: 2
    timeout: 30s
  report:
    depends_on: [work]
    when: "size(tasks.work.result) > 0"
    trigger: all_success
    command: [sh, -c, "echo {{ tasks.work.result }}"]
"""  # noqa: E501


def base() -> dict[str, Any]:
    return yaml.safe_load(ISSUE_EXAMPLE)


def problems(doc: Any, overrides: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(WorkflowInvalid) as info:
        parse_workflow(doc, overrides)
    err = info.value
    assert isinstance(err, ValidationError)
    assert err.code == "invalid"
    # the message lists each problem on its own line
    lines = err.message.splitlines()[1:]
    firsts = [line for line in lines if line.startswith("  - ")]
    assert firsts == [f"  - {p.splitlines()[0]}" for p in err.problems]
    assert all(line.startswith(("  - ", "    ")) for line in lines)
    return list(err.problems)


def one_problem(doc: Any, overrides: dict[str, Any] | None = None) -> str:
    found = problems(doc, overrides)
    assert len(found) == 1, found
    return found[0]


# -- the good path ---------------------------------------------------------------------------------


def test_issue_example_parses() -> None:
    spec = parse_workflow(base())
    assert spec.name == "shard-stats"
    assert spec.params == {"shards": 8}
    assert spec.priority == 0 and spec.max_parallel == 50
    assert list(spec.tasks) == ["split", "work", "report"]
    assert spec.order == ("split", "work", "report")
    split, work, report = spec.tasks.values()
    assert split.command is not None and split.command[0] == "python3" and split.function is None
    assert work.function == "examples.stats:process" and work.command is None
    assert work.depends_on == ("split",)
    assert work.foreach == "tasks.split.result"
    assert work.max_parallel == 4
    assert work.args == {"shard": "{{ item }}"}
    assert work.resources.cpu_millis == 1000
    assert work.resources.memory_bytes == 256 * 2**20
    assert work.resources.slots == 1
    assert work.retry == RetryPolicy(limit=2)
    assert work.timeout_s == 30.0
    assert report.when == "size(tasks.work.result) > 0"
    assert report.trigger is TriggerRule.ALL_SUCCESS


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_files_parse(path: Path) -> None:
    spec = parse_workflow(yaml.safe_load(path.read_text()))
    assert spec.tasks


def test_shard_stats_example_uses_commands_only() -> None:
    spec = parse_workflow(yaml.safe_load((EXAMPLES / "shard_stats.yaml").read_text()), {"shards": "16"})
    assert spec.params["shards"] == 16
    assert all(task.command is not None for task in spec.tasks.values())
    assert any(task.when for task in spec.tasks.values())
    assert any(task.is_foreach for task in spec.tasks.values())


def test_everything_optional_is_read() -> None:
    doc = {
        "name": "full",
        "description": "all the knobs",
        "tasks": {
            "a": {
                "command": ["sleep", 1, 0.5],
                "env": {"FLAG": True, "N": 3, "S": "{{ params.x }}"},
                "semaphore": "gpu-pool",
                "workdir": "/tmp",
                "priority": 7,
                "retries": {"limit": 3, "backoff": "250ms", "factor": 3, "max_backoff": "1m"},
                "resources": {"cpu": "500m", "memory": "1Gi", "disk": "10G", "gpu": 1},
                "trigger": "all_done",
                "foreach": [1, 2],
                "when": True,
                "description": "first",
            },
            "b": {"function": "pkg.mod:Class.method", "depends_on": "a", "timeout": 90},
        },
        "params": {"x": "hello"},
    }
    spec = parse_workflow(doc)
    a, b = spec.tasks["a"], spec.tasks["b"]
    assert a.command == ("sleep", "1", "0.5")
    assert a.env == {"FLAG": "true", "N": "3", "S": "{{ params.x }}"}
    assert a.semaphore == "gpu-pool" and a.workdir == "/tmp" and a.priority == 7
    assert a.retry == RetryPolicy(limit=3, backoff_s=0.25, factor=3.0, max_backoff_s=60.0)
    assert (a.resources.cpu_millis, a.resources.memory_bytes, a.resources.disk_bytes, a.resources.gpus) == (
        500, 2**30, 10**10, 1,
    )
    assert a.trigger is TriggerRule.ALL_DONE
    assert a.foreach == (1, 2)
    assert a.when == "true"
    assert b.depends_on == ("a",) and b.timeout_s == 90.0


def test_topological_order_does_not_need_file_order() -> None:
    doc = {"name": "w", "tasks": {"c": {"command": ["c"], "depends_on": ["b"]},
                                  "b": {"command": ["b"], "depends_on": ["a"]},
                                  "a": {"command": ["a"]},
                                  "d": {"command": ["d"]}}}
    spec = parse_workflow(doc)
    assert list(spec.tasks) == ["c", "b", "a", "d"]
    assert spec.order == ("a", "b", "c", "d")


def test_expressions_are_compiled_into_the_given_cache() -> None:
    cache = Expressions()
    parse_workflow(base(), expressions=cache)
    assert cache.compile("size(tasks.work.result) > 0") is cache.compile("size(tasks.work.result) > 0")
    assert len(cache) >= 4  # params.shards, tasks.split.result, item, when, tasks.work.result


# -- params ----------------------------------------------------------------------------------------


def test_override_is_parsed_and_keeps_ints() -> None:
    spec = parse_workflow(base(), {"shards": "16"})
    assert spec.params == {"shards": 16}
    assert isinstance(spec.params["shards"], int)
    assert parse_workflow(base(), {"shards": 3}).params == {"shards": 3}


def test_override_of_an_undeclared_param_is_refused_by_name() -> None:
    problem = one_problem(base(), {"shard": "4"})
    assert "'shard' is not declared" in problem
    assert "did you mean 'shards'?" in problem


def test_override_must_fit_the_default_type() -> None:
    problem = one_problem(base(), {"shards": "many"})
    assert "param 'shards' expects an integer" in problem and "'many'" in problem


def test_string_params_take_the_text_as_it_is() -> None:
    doc = base()
    doc["params"] = {"shards": 8, "tag": "v1", "ratio": 0.5, "on": False, "list": [1]}
    spec = parse_workflow(doc, {"tag": "007", "ratio": "1", "on": "true", "list": "[1, 2]"})
    assert spec.params == {"shards": 8, "tag": "007", "ratio": 1.0, "on": True, "list": [1, 2]}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("16", 16), ("-3", -3), ("08", 8), ("1_000", 1000), ("0x1f", 31), ("0o17", 15),
        ("2.5", 2.5), ("1e3", 1000.0), (".5", 0.5),
        ("true", True), ("False", False), ("yes", True), ("off", False),
        ("null", None), ("~", None),
        ('"16"', "16"), ("[1, 2]", [1, 2]), ('{"a": 1}', {"a": 1}),
        ("hello", "hello"), ("", ""), ("1.2.3", "1.2.3"),
    ],
)
def test_parse_param_value(text: str, value: Any) -> None:
    parsed = parse_param_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_param_value_infinities() -> None:
    assert parse_param_value(".inf") == math.inf
    assert math.isnan(parse_param_value(".nan"))


# -- problems --------------------------------------------------------------------------------------


def test_not_a_map() -> None:
    assert "must be a map" in one_problem(["not", "a", "map"])


def test_missing_name_and_tasks_are_both_reported() -> None:
    found = problems({})
    assert "missing required key 'name'" in found
    assert "missing required key 'tasks'" in found


def test_empty_tasks() -> None:
    assert "non-empty map" in one_problem({"name": "w", "tasks": {}})


def test_unknown_keys_are_named_with_a_suggestion() -> None:
    doc = base()
    doc["max_paralel"] = 3
    doc["tasks"]["work"]["depend_on"] = ["split"]
    doc["tasks"]["work"]["resources"]["memroy"] = "1Gi"
    doc["tasks"]["work"]["retries"] = {"limit": 1, "backof": "1s"}
    found = problems(doc)
    assert "unknown key 'max_paralel'; did you mean 'max_parallel'?" in found
    assert "task 'work': unknown key 'depend_on'; did you mean 'depends_on'?" in found
    assert "task 'work': resources: unknown key 'memroy'; did you mean 'memory'?" in found
    assert "task 'work': retries: unknown key 'backof'; did you mean 'backoff'?" in found


def test_unknown_key_without_a_close_match() -> None:
    doc = base()
    doc["tasks"]["split"]["zzz"] = 1
    assert one_problem(doc) == "task 'split': unknown key 'zzz'"


def test_both_or_neither_of_command_and_function() -> None:
    doc = base()
    doc["tasks"]["split"]["function"] = "m:f"
    del doc["tasks"]["report"]["command"]
    found = problems(doc)
    assert "task 'split': has both command and function; give exactly one" in found
    assert "task 'report': has neither command nor function; give exactly one" in found


@pytest.mark.parametrize("ref", ["examples.stats.process", "examples/stats:process", ":f", "m:", "m:f:g", 3])
def test_bad_function_reference(ref: Any) -> None:
    doc = base()
    doc["tasks"]["work"]["function"] = ref
    problem = one_problem(doc)
    assert problem.startswith("task 'work': function")
    assert "module:attr" in problem


@pytest.mark.parametrize("command", ["echo hi", [], [True], [["nested"]], None])
def test_bad_command(command: Any) -> None:
    doc = base()
    doc["tasks"]["split"]["command"] = command
    assert one_problem(doc).startswith("task 'split': command must be")


def test_bad_durations() -> None:
    doc = base()
    doc["tasks"]["work"]["timeout"] = "30 parsecs"
    doc["tasks"]["split"]["timeout"] = 0
    doc["tasks"]["report"]["retries"] = {"limit": 1, "backoff": "soon"}
    found = problems(doc)
    assert any(p.startswith("task 'work': timeout:") and "is not a duration" in p for p in found)
    assert "task 'split': timeout must be more than 0, got 0" in found
    assert any(p.startswith("task 'report': retries.backoff:") for p in found)


def test_bad_resources() -> None:
    doc = base()
    doc["tasks"]["work"]["resources"] = {"cpu": "lots", "memory": "256 apples", "gpu": -1}
    found = problems(doc)
    assert any(p.startswith("task 'work': resources.cpu:") and "'lots'" in p for p in found)
    assert any(p.startswith("task 'work': resources.memory:") and "'256 apples'" in p for p in found)
    assert any(p.startswith("task 'work': resources.gpu must be") for p in found)
    doc["tasks"]["work"]["resources"] = "big"
    assert one_problem(doc) == "task 'work': resources must be a map (cpu, memory, disk, gpu)"


@pytest.mark.parametrize(
    ("retries", "expected"),
    [(-1, "retries cannot be negative"), ("twice", "retries must be a number or a map"),
     ({"limit": "x"}, "retries.limit must be"), ({"limit": 1, "factor": 0.5}, "retries.factor must be")],
)
def test_bad_retries(retries: Any, expected: str) -> None:
    doc = base()
    doc["tasks"]["work"]["retries"] = retries
    assert expected in one_problem(doc)


def test_unknown_dependency_suggests_the_close_match() -> None:
    doc = base()
    doc["tasks"]["report"]["depends_on"] = ["wrk"]
    doc["tasks"]["report"]["when"] = "true"
    doc["tasks"]["report"]["command"] = ["true"]
    assert one_problem(doc) == "task 'report' depends on 'wrk', which does not exist; did you mean 'work'?"


@pytest.mark.parametrize(
    ("tasks", "cycle"),
    [
        ({"a": ["c"], "b": ["a"], "c": ["b"]}, "cycle: a -> c -> b -> a"),
        ({"a": ["a"]}, "cycle: a -> a"),
        ({"x": [], "a": ["b"], "b": ["a"]}, "cycle: a -> b -> a"),
    ],
)
def test_cycles_are_shown_as_a_path(tasks: dict[str, list[str]], cycle: str) -> None:
    doc = {"name": "w", "tasks": {n: {"command": ["true"], "depends_on": d} for n, d in tasks.items()}}
    problem = one_problem(doc)
    assert problem.startswith(cycle)


def test_bad_cel_shows_the_compile_error_with_the_expression() -> None:
    doc = base()
    doc["tasks"]["report"]["when"] = "size(tasks.work.result > 0"
    problem = one_problem(doc)
    assert problem.startswith("task 'report': when: invalid expression 'size(tasks.work.result > 0'")
    assert "Syntax error" in problem


def test_bad_cel_in_a_template() -> None:
    doc = base()
    doc["tasks"]["report"]["command"] = ["echo", "{{ tasks.work.result[ }}"]
    problem = one_problem(doc)
    assert problem.startswith("task 'report': command: invalid expression 'tasks.work.result['")


def test_unknown_trigger() -> None:
    doc = base()
    doc["tasks"]["report"]["trigger"] = "all_sucess"
    assert one_problem(doc) == (
        "task 'report': unknown trigger 'all_sucess'; did you mean 'all_success'? "
        "(known: all_done, all_success, one_success)"
    )


def test_expression_references_are_checked() -> None:
    doc = base()
    doc["tasks"]["split"]["command"] = ["echo", "{{ params.shard }}", "{{ item }}"]
    doc["tasks"]["report"]["when"] = "size(tasks.wrk.result) > 0 && tasks.report.status == 'x'"
    doc["tasks"]["work"]["foreach"] = "tasks.report.result"
    doc["tasks"]["work"]["env"] = {"X": "{{ parms.shards }}"}
    found = problems(doc)
    assert any("params.shard, which is not declared; did you mean 'shards'?" in p for p in found)
    assert any(p.startswith("task 'split': command:") and "uses 'item'" in p for p in found)
    assert any("tasks.wrk, which does not exist; did you mean 'work'?" in p for p in found)
    assert any("the task's own result (tasks.report)" in p for p in found)
    assert any("'report' is not upstream of 'work'; add it to depends_on" in p for p in found)
    assert any("unknown variable 'parms'" in p and "did you mean 'params'?" in p for p in found)


def test_item_is_only_for_foreach_commands_args_and_env() -> None:
    doc = base()
    doc["tasks"]["work"]["when"] = "item > 0"
    assert "uses 'item'" in one_problem(doc)


def test_comprehension_variables_are_not_unknown() -> None:
    doc = base()
    doc["tasks"]["report"]["when"] = "tasks.work.result.all(r, r != null) && [1].exists(item, item > 0)"
    parse_workflow(doc)


def test_all_problems_are_collected_in_one_error() -> None:
    doc = copy.deepcopy(base())
    doc["tasks"]["work"]["function"] = "nope"
    doc["tasks"]["work"]["timeout"] = "eventually"
    doc["tasks"]["report"]["trigger"] = "sometimes"
    doc["tasks"]["report"]["depends_on"] = ["work", "wrk"]
    found = problems(doc, {"shardz": 1})
    assert len(found) == 5, found
    with pytest.raises(WorkflowInvalid) as info:
        parse_workflow(doc, {"shardz": 1})
    assert info.value.message.startswith("workflow 'shard-stats' is invalid (5 problems):\n")


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"name": "bad name!"}, "name 'bad name!' is not valid"),
        ({"priority": "high"}, "priority must be an integer"),
        ({"max_parallel": 0}, "max_parallel must be an integer of at least 1"),
        ({"params": [1]}, "params must be a map"),
        ({"params": {"a-b": 1}}, "param name 'a-b' is not valid"),
        ({"tasks": {"bad name": {"command": ["x"]}}}, "task name 'bad name' is not valid"),
        ({"tasks": {"t": "echo"}}, "task 't': must be a map"),
        ({"tasks": {"t": {"command": ["x"], "max_parallel": 0}}}, "task 't': max_parallel must be"),
        ({"tasks": {"t": {"command": ["x"], "foreach": 3}}}, "task 't': foreach must be"),
        ({"tasks": {"t": {"command": ["x"], "env": {"1X": "a"}}}}, "task 't': env: '1X' is not a variable"),
        ({"tasks": {"t": {"command": ["x"], "env": {"X": [1]}}}}, "task 't': env: X must be a string"),
        ({"tasks": {"t": {"command": ["x"], "env": "X=1"}}}, "task 't': env must be a map"),
        ({"tasks": {"t": {"command": ["x"], "args": [1]}}}, "task 't': args must be a map"),
        ({"tasks": {"t": {"command": ["x"], "semaphore": "a b"}}}, "task 't': semaphore 'a b' is not a name"),
        ({"tasks": {"t": {"command": ["x"], "priority": 1.5}}}, "task 't': priority must be an integer"),
        ({"tasks": {"t": {"command": ["x"], "depends_on": [1]}}}, "task 't': depends_on must be a list"),
        ({"tasks": {"t": {"command": ["x"], "when": 3}}}, "task 't': when must be a CEL expression"),
        ({"tasks": {"t": {"command": ["x"], "workdir": ""}}}, "task 't': workdir must be a path"),
    ],
)
def test_other_problems(patch: dict[str, Any], expected: str) -> None:
    doc = {"name": "w", "tasks": {"t": {"command": ["x"]}}, **patch}
    found = problems(doc)
    assert any(expected in p for p in found), found
