"""`Workflow`: build a workflow document in code, exactly as the YAML file would be.

Why a document builder and not a second model: the coordinator accepts one format, the workflow
document (docs/protocol.md, `POST /v1/jobs`). The builder only assembles that dict — keys and
values as a person would write them in YAML (`timeout: 30s`, `retries: 2`) — and validation is
the coordinator's own parser, run locally. So a workflow built here and the same one written as
YAML are indistinguishable, and `to_yaml()` turns one into the other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from polyfabric.domain.jobs import WorkflowSpec
from polyfabric.sdk.functions import TaskFunction, check_args, function_ref
from polyfabric.workflow.spec import parse_workflow

__all__ = ["ITEM", "Expr", "Task", "Workflow"]


@dataclass(frozen=True)
class Expr:
    """A CEL expression. Stands for itself where an expression is expected (`foreach`, `when`)
    and becomes a `{{ ... }}` template inside `command`, `args` and `env`. `tasks` names the
    tasks it reads, so that they can be made upstream of the task using it."""

    source: str
    tasks: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return self.source

    @property
    def template(self) -> str:
        return "{{ " + self.source + " }}"


ITEM = Expr("item")
"""A foreach task's current item: `args={"shard": ITEM}` is `args: {shard: "{{ item }}"}`."""


class Task:
    """A task added to a `Workflow`: pass it to `depends_on`, read `result` and `status`."""

    def __init__(self, workflow: Workflow, name: str) -> None:
        self.workflow = workflow
        self.name = name

    @property
    def result(self) -> Expr:
        """The task's result (for a foreach task: the list of its items' results, in item order)."""
        return Expr(f"tasks.{self.name}.result", frozenset({self.name}))

    @property
    def status(self) -> Expr:
        return Expr(f"tasks.{self.name}.status", frozenset({self.name}))

    @property
    def body(self) -> dict[str, Any]:
        """This task's part of the document (a live view: changing it changes the workflow)."""
        return self.workflow._tasks[self.name]

    def __repr__(self) -> str:
        return f"<Task {self.name!r} of workflow {self.workflow.name!r}>"


Dep = Task | str


def _plain(value: Any, *, template: bool) -> Any:
    """Deep copy into plain YAML/JSON values; an Expr becomes its template or its source."""
    if isinstance(value, Expr):
        return value.template if template else value.source
    if isinstance(value, Task):
        raise TypeError(f"use {value.name}.result or {value.name}.status, not the task {value.name!r} itself")
    if isinstance(value, Mapping):
        return {str(k) if isinstance(k, Expr) else k: _plain(v, template=template) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, template=template) for v in value]
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return value


def _referenced(value: Any) -> set[str]:
    if isinstance(value, Expr):
        return set(value.tasks)
    if isinstance(value, Mapping):
        return set().union(*(_referenced(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(_referenced(v) for v in value)) if value else set()
    return set()


class Workflow:
    """A workflow being built: `command()` and `function()` add tasks, `to_dict()` is the document.

    Options are those of a task in the YAML file, under the same names: `depends_on`, `foreach`,
    `max_parallel`, `resources` ({"cpu": 1, "memory": "256Mi"}), `retries` (2 or {"limit": 2,
    "backoff": "1s"}), `timeout` ("30s", seconds, or a timedelta), `when`, `trigger`, `semaphore`,
    `workdir`, `priority`, `description`, `env`.
    """

    def __init__(self, name: str, params: Mapping[str, Any] | None = None, *, description: str | None = None,
                 priority: int | None = None, max_parallel: int | None = None) -> None:
        self.name = name
        self.params: dict[str, Any] = dict(params or {})
        self.description = description
        self.priority = priority
        self.max_parallel = max_parallel
        self._tasks: dict[str, dict[str, Any]] = {}
        self._refs: dict[str, Task] = {}

    # -- references ------------------------------------------------------------------------------

    def param(self, name: str) -> Expr:
        """`params.NAME` as an Expr (the param must be declared)."""
        if name not in self.params:
            declared = ", ".join(self.params) or "none"
            raise KeyError(f"workflow {self.name!r} declares no param {name!r} (declared: {declared})")
        return Expr(f"params.{name}")

    def __getitem__(self, name: str) -> Task:
        return self._refs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._refs

    @property
    def tasks(self) -> list[Task]:
        return list(self._refs.values())

    # -- adding tasks ----------------------------------------------------------------------------

    def command(self, name: str, command: Sequence[Any], *, depends_on: Iterable[Dep] = (), foreach: Any = None,
                when: Any = None, trigger: str | None = None, max_parallel: int | None = None,
                env: Mapping[str, Any] | None = None, resources: Mapping[str, Any] | None = None,
                retries: Any = None, timeout: Any = None, semaphore: str | None = None, workdir: str | None = None,
                priority: int | None = None, description: str | None = None) -> Task:
        """Add a task that runs `command` (a list: no shell) and whose result is the JSON it writes
        to $POLYFABRIC_RESULT."""
        if isinstance(command, str):
            raise TypeError(f"task {name!r}: command must be a list of strings, e.g. ['sh', '-c', {command!r}]")
        return self._add(name, {"command": list(command)}, depends_on=depends_on, foreach=foreach, when=when,
                         trigger=trigger, max_parallel=max_parallel, env=env, resources=resources, retries=retries,
                         timeout=timeout, semaphore=semaphore, workdir=workdir, priority=priority,
                         description=description)

    def function(self, name: str, function: str | Callable[..., Any], *, args: Mapping[str, Any] | None = None,
                 depends_on: Iterable[Dep] = (), foreach: Any = None, when: Any = None, trigger: str | None = None,
                 max_parallel: int | None = None, env: Mapping[str, Any] | None = None,
                 resources: Mapping[str, Any] | None = None, retries: Any = None, timeout: Any = None,
                 semaphore: str | None = None, workdir: str | None = None, priority: int | None = None,
                 description: str | None = None) -> Task:
        """Add a task that calls `function(**args)` on a node: a "pkg.module:attr" reference or the
        (importable) function itself; its return value is the result."""
        options: dict[str, Any] = {
            "trigger": trigger, "max_parallel": max_parallel, "env": env, "resources": resources,
            "retries": retries, "timeout": timeout, "semaphore": semaphore, "workdir": workdir,
            "priority": priority, "description": description,
        }
        if isinstance(function, TaskFunction):
            for key, value in function.defaults.items():
                if options.get(key) is None:
                    options[key] = value
        body: dict[str, Any] = {"function": function_ref(function)}
        if args is not None:
            check_args(function, args)
            body["args"] = args
        return self._add(name, body, depends_on=depends_on, foreach=foreach, when=when, **options)

    def _add(self, name: str, action: dict[str, Any], *, depends_on: Iterable[Dep], foreach: Any, when: Any,
             **options: Any) -> Task:
        if not isinstance(name, str):
            raise TypeError(f"a task name is a string, got {name!r}")
        if name in self._tasks:
            raise ValueError(f"workflow {self.name!r} already has a task {name!r}")
        if isinstance(depends_on, Task | str):
            depends_on = [depends_on]
        deps: list[str] = []
        for dep in depends_on:
            if isinstance(dep, Task):
                if dep.workflow is not self:
                    raise ValueError(f"task {name!r}: {dep!r} belongs to another workflow")
                dep = dep.name
            if not isinstance(dep, str):
                raise TypeError(f"task {name!r}: depends_on takes tasks or task names, got {dep!r}")
            if dep not in deps:
                deps.append(dep)
        # Tasks read through an Expr become dependencies unless they are upstream already.
        upstream = self._ancestors(deps)
        for read in sorted(_referenced([foreach, when, action, options.get("env")]) - upstream - {name}):
            if read in self._tasks:
                deps.append(read)
                upstream |= {read} | self._ancestors([read])

        body: dict[str, Any] = {}
        if options.get("description") is not None:
            body["description"] = options["description"]
        if deps:
            body["depends_on"] = deps
        if foreach is not None:
            body["foreach"] = _plain(foreach, template=False)
        if when is not None:
            body["when"] = _plain(when, template=False)
        for key in ("trigger", "max_parallel"):
            if options.get(key) is not None:
                body[key] = options[key]
        for key, value in action.items():
            body[key] = _plain(value, template=True)
        if options.get("env") is not None:
            body["env"] = _plain(options["env"], template=True)
        for key in ("resources", "retries", "timeout", "semaphore", "workdir", "priority"):
            if options.get(key) is not None:
                body[key] = _plain(options[key], template=False)
        self._tasks[name] = body
        ref = Task(self, name)
        self._refs[name] = ref
        return ref

    def _ancestors(self, names: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(names)
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            deps = self._tasks.get(name, {}).get("depends_on") or ()
            stack.extend([deps] if isinstance(deps, str) else deps)
        return seen

    # -- the document ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The workflow document, as `yaml.safe_load` of the equivalent file would give it."""
        doc: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            doc["description"] = self.description
        if self.params:
            doc["params"] = _plain(self.params, template=False)
        if self.priority is not None:
            doc["priority"] = self.priority
        if self.max_parallel is not None:
            doc["max_parallel"] = self.max_parallel
        doc["tasks"] = {name: _plain(body, template=False) for name, body in self._tasks.items()}
        return doc

    def to_yaml(self) -> str:
        """The workflow as a file for `polyfabric run`."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110)

    def validate(self, params: Mapping[str, Any] | None = None) -> WorkflowSpec:
        """Check the workflow (and param overrides) as the coordinator will; raise `WorkflowInvalid`
        listing every problem. Returns the parsed spec."""
        return parse_workflow(self.to_dict(), params)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Workflow:
        """A builder holding an existing document (e.g. a loaded YAML file), to extend or submit."""
        wf = cls(str(doc.get("name")), doc.get("params") or {}, description=doc.get("description"),
                 priority=doc.get("priority"), max_parallel=doc.get("max_parallel"))
        for name, body in (doc.get("tasks") or {}).items():
            wf._tasks[name] = _plain(dict(body or {}), template=False)
            wf._refs[name] = Task(wf, name)
        return wf

    @classmethod
    def from_yaml(cls, text: str) -> Workflow:
        return cls.from_dict(yaml.safe_load(text))

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r}: {len(self._tasks)} tasks>"
