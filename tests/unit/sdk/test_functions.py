"""Function tasks: importable names only, `@task` defaults, args checked against the signature."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from polyfabric.domain.jobs import parse_duration
from polyfabric.sdk import Workflow, function_ref, task


@task(retries=2, timeout="30s", resources={"cpu": 1})
def process(shard: int, size: int = 10) -> dict[str, Any]:
    return {"shard": shard, "size": size}


def plain(x: int) -> int:
    return x


def test_a_module_level_function_is_named_module_colon_qualname():
    assert function_ref(parse_duration) == "polyfabric.domain.jobs:parse_duration"
    assert function_ref("pkg.mod:fn") == "pkg.mod:fn"
    assert function_ref(process) == f"{plain.__module__}:process"
    assert process.ref == function_ref(process)


def test_functions_without_an_importable_name_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="lambda or a function defined inside another function"):
        function_ref(lambda: 1)

    def nested() -> None: ...

    with pytest.raises(ValueError, match="define it at module level"):
        function_ref(nested)

    main = types.ModuleType("__main__")
    main.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", main)

    def script_function() -> None: ...

    script_function.__module__ = "__main__"
    script_function.__qualname__ = "script_function"
    with pytest.raises(ValueError, match=r"script being run \(__main__\).*--pythonpath"):
        function_ref(script_function)

    main.__spec__ = types.SimpleNamespace(name="mytool.cli")  # run as `python -m mytool.cli`
    assert function_ref(script_function) == "mytool.cli:script_function"


def test_task_decorator_keeps_the_function_callable_and_supplies_defaults():
    assert process(3) == {"shard": 3, "size": 10}
    assert process.__name__ == "process" and process.__doc__ is None
    wf = Workflow("w")
    work = wf.function("work", process, args={"shard": 1}, timeout="1m")
    assert work.body == {"function": process.ref, "args": {"shard": 1}, "resources": {"cpu": 1}, "retries": 2,
                         "timeout": "1m"}
    wf.validate()
    with pytest.raises(TypeError, match="unknown option"):
        task(colour="red")


def test_args_are_checked_against_the_signature_when_the_function_is_given():
    wf = Workflow("w")
    with pytest.raises(ValueError, match="cannot be called with args"):
        wf.function("a", process, args={"shard": 1, "colour": "red"})
    with pytest.raises(ValueError, match="cannot be called with args"):
        wf.function("b", plain, args={})
    wf.function("c", plain, args={"x": "{{ item }}"}, foreach=[1, 2])
    wf.function("d", "anything.at:all", args={"whatever": 1})  # a name: nothing to check here
    assert [t.name for t in wf.tasks] == ["c", "d"]
