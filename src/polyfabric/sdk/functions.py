"""Function tasks: from a Python function to the `module:attr` reference a node imports.

Why names, not pickles: a node runs code its owner installed, never code shipped by whoever
submits (nodes belong to other organizations). So a function task is sent as its importable name,
and this module refuses, at build time, functions that have none (defined in `__main__`, nested,
lambdas). `@task(...)` attaches default task options to a function and leaves it callable as before,
so the same function can be unit-tested locally.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["TASK_OPTIONS", "TaskFunction", "check_args", "function_ref", "task"]

TASK_OPTIONS = ("retries", "timeout", "resources", "semaphore", "max_parallel", "priority", "description",
                "env", "workdir", "trigger")
"""The options `@task(...)` may preset; `Workflow.function(...)` arguments override them."""


class TaskFunction:
    """A function marked with `@task`: still callable as itself, plus `ref` and `defaults`."""

    def __init__(self, fn: Callable[..., Any], defaults: Mapping[str, Any]) -> None:
        unknown = sorted(set(defaults) - set(TASK_OPTIONS))
        if unknown:
            raise TypeError(f"@task got unknown option(s) {', '.join(unknown)} (known: {', '.join(TASK_OPTIONS)})")
        self.fn = fn
        self.defaults = {k: v for k, v in defaults.items() if v is not None}
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    @property
    def ref(self) -> str:
        return function_ref(self.fn)

    def __repr__(self) -> str:
        return f"<task function {self.fn.__module__}:{self.fn.__qualname__}>"


def task(fn: Callable[..., Any] | None = None, **defaults: Any) -> Any:
    """Mark a function as a fabric task, optionally with default options:

        @task(retries=2, timeout="30s", resources={"cpu": 1})
        def process(shard: int) -> dict: ...

        wf.function("work", process, args={"shard": ITEM}, foreach=split.result)
    """
    if fn is not None:
        if defaults:
            raise TypeError("use @task or @task(option=...), not both")
        return TaskFunction(fn, {})
    unknown = sorted(set(defaults) - set(TASK_OPTIONS))
    if unknown:
        raise TypeError(f"@task got unknown option(s) {', '.join(unknown)} (known: {', '.join(TASK_OPTIONS)})")

    def decorate(f: Callable[..., Any]) -> TaskFunction:
        return TaskFunction(f, defaults)

    return decorate


def function_ref(fn: str | Callable[..., Any]) -> str:
    """`module:qualname` of an importable function (a string is returned as it is)."""
    if isinstance(fn, str):
        return fn
    if isinstance(fn, TaskFunction):
        fn = fn.fn
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if not module or not qualname:
        raise TypeError(f"{fn!r} is not a function with an importable name; pass 'module:attr'")
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            module = spec.name  # run as `python -m pkg.mod`: the module has a real name
        else:
            raise ValueError(
                f"function {qualname!r} is defined in the script being run (__main__); nodes import functions by "
                "module name, so move it to a module that is importable on the nodes (installed, or on the "
                "agent's --pythonpath) and import it from there")
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise ValueError(f"function {module}:{qualname} has no importable name (a lambda or a function defined "
                         "inside another function); define it at module level")
    return f"{module}:{qualname}"


def check_args(fn: str | Callable[..., Any], args: Mapping[str, Any]) -> None:
    """Refuse args the function cannot take (only when we have the function itself)."""
    if isinstance(fn, str):
        return
    target = fn.fn if isinstance(fn, TaskFunction) else fn
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(**args)
    except TypeError as exc:
        raise ValueError(f"{function_ref(target)} cannot be called with args {sorted(args)}: {exc}") from None
