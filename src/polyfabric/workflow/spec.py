"""The workflow file: parse an already-loaded document into a validated `WorkflowSpec`.

Validation collects every problem before it complains, so one submission shows the user all of
them (one per line), each naming the task and the field. Unknown keys and names get a "did you
mean" from the known ones. Expressions are compiled here, at submit time, and their references
checked: `tasks.NAME` must be upstream of the task that uses it, `params.NAME` must be declared,
and `item` exists only in the command, args and env of a foreach task.

Parameter overrides (`polyfabric run FILE -p shards=16`) must name declared params. Text values
are read as JSON or YAML-style scalars (16 -> int, 0.5 -> float, true -> bool, null -> None),
except for a param whose default is a string, which takes the text as it is.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.jobs import (
    RetryPolicy,
    TaskSpec,
    TriggerRule,
    WorkflowSpec,
    parse_duration,
)
from polyfabric.domain.policy import compile_rule
from polyfabric.domain.resources import Resources, parse_bytes, parse_cpu
from polyfabric.workflow.dag import ancestors, find_cycle, topological_order
from polyfabric.workflow.expressions import VARIABLES, Expression, ExpressionError, Expressions

__all__ = [
    "RESOURCE_KEYS",
    "RETRY_KEYS",
    "TASK_KEYS",
    "WORKFLOW_KEYS",
    "WorkflowInvalid",
    "parse_param_value",
    "parse_workflow",
    "retention_of",
]

WORKFLOW_KEYS = ("name", "description", "params", "priority", "max_parallel", "tasks", "labels", "requires", "rank")
TASK_KEYS = (
    "command", "function", "args", "env", "depends_on", "foreach", "max_parallel", "resources",
    "retries", "timeout", "when", "trigger", "semaphore", "workdir", "priority", "description",
    "labels", "requires", "rank", "locality", "spread", "affinity", "constraints",
)
RESOURCE_KEYS = ("cpu", "memory", "disk", "gpu", "gpus")
RETRY_KEYS = ("limit", "backoff", "factor", "max_backoff")
# Retention (issue 7): how long a finished job is kept, and the outputs kept past that.
WORKFLOW_KEYS = (*WORKFLOW_KEYS, "ttl", "keep")
TASK_KEYS = (*TASK_KEYS, "keep")
TASK_KEYS = (*TASK_KEYS, "secrets")  # issue 6: sealed secrets as env variables or files

_WORKFLOW_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
_TASK_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SECRET_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
_NEAR = re.compile(r"^\s*near\(\s*tasks\.([A-Za-z_][A-Za-z0-9_-]{0,62})\s*\)\s*$")
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62}[A-Za-z0-9])?$")
_SEMAPHORE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_FUNCTION_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_INT = re.compile(r"^[-+]?[0-9][0-9_]*$|^[-+]?0[xX][0-9a-fA-F_]+$|^[-+]?0[oO][0-7_]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$")


class WorkflowInvalid(ValidationError):
    """A workflow file with problems; `problems` lists them, the message shows one per line
    (a CEL syntax error continues on indented lines that point at the spot)."""

    def __init__(self, name: str | None, problems: list[str]) -> None:
        what = f"workflow {name!r}" if name else "the workflow"
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        lines = ("  - " + p.replace("\n", "\n    ") for p in problems)  # a CEL error shows where
        super().__init__(f"{what} is invalid ({count}):\n" + "\n".join(lines))
        self.problems = tuple(problems)


def _suggest(word: str, known: Any) -> str:
    close = difflib.get_close_matches(word, [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_param_value(text: str) -> Any:
    """A command-line value: JSON first, then YAML-style scalars; anything else stays text."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    lowered = stripped.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("null", "~", ""):
        return None if stripped else text
    if _INT.match(stripped):
        digits = stripped.replace("_", "")
        return int(digits, 0) if re.match(r"^[-+]?0[xXoO]", digits) else int(digits, 10)
    if lowered in (".inf", "+.inf"):
        return math.inf
    if lowered == "-.inf":
        return -math.inf
    if lowered == ".nan":
        return math.nan
    if _FLOAT.match(stripped):
        return float(stripped.replace("_", ""))
    return text


def _override(name: str, default: Any, given: Any) -> tuple[Any, str | None]:
    """The override's value, or a problem when it does not fit the declared default's type."""
    if isinstance(default, str) and isinstance(given, str):
        return given, None
    value = parse_param_value(given) if isinstance(given, str) else given
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        expected = "true or false"
    elif _is_int(default):
        ok = _is_int(value)
        expected = "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
        expected = "a number"
    elif isinstance(default, list):
        ok = isinstance(value, list)
        expected = "a list"
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
        expected = "a map"
    else:
        return value, None
    if ok:
        return value, None
    return value, f"param {name!r} expects {expected} (its default is {json.dumps(default)}), got {given!r}"


class _Parser:
    def __init__(self, expressions: Expressions) -> None:
        self.problems: list[str] = []
        self.expressions = expressions

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def unknown_keys(self, where: str, body: Mapping[Any, Any], known: tuple[str, ...]) -> None:
        for key in body:
            if key not in known:
                self.add(f"{where}unknown key {key!r}{_suggest(str(key), known)}")

    # -- one task ----------------------------------------------------------------------------------

    def task(self, name: str, body: Any) -> tuple[TaskSpec | None, tuple[str, ...]]:
        where = f"task {name!r}: "
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            self.add(f"{where}must be a map of settings (command or function, depends_on, ...)")
            return None, ()
        before = len(self.problems)
        self.unknown_keys(where, body, TASK_KEYS)
        deps = self.depends_on(where, body.get("depends_on"))
        fields: dict[str, Any] = {"name": name, "depends_on": deps}

        has_command, has_function = "command" in body, "function" in body
        if has_command and has_function:
            self.add(f"{where}has both command and function; give exactly one")
        elif not has_command and not has_function:
            self.add(f"{where}has neither command nor function; give exactly one")
        elif has_command:
            fields["command"] = self.command(where, body["command"])
        else:
            fields["function"] = self.function(where, body["function"])

        if "args" in body:
            args = body["args"]
            if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
                self.add(f"{where}args must be a map from names to values")
            else:
                fields["args"] = dict(args)
        if "env" in body:
            fields["env"] = self.env(where, body["env"])
        if "foreach" in body:
            fields["foreach"] = self.foreach(where, body["foreach"])
        if "max_parallel" in body and body["max_parallel"] is not None:
            fields["max_parallel"] = self.positive_int(where, "max_parallel", body["max_parallel"])
        if "resources" in body:
            fields["resources"] = self.resources(where, body["resources"])
        if "retries" in body:
            fields["retry"] = self.retries(where, body["retries"])
        if "timeout" in body and body["timeout"] is not None:
            fields["timeout_s"] = self.duration(where, "timeout", body["timeout"], positive=True)
        if "when" in body and body["when"] is not None:
            when = body["when"]
            if isinstance(when, bool):
                when = "true" if when else "false"
            if not isinstance(when, str) or not when.strip():
                self.add(f"{where}when must be a CEL expression, e.g. \"size(tasks.work.result) > 0\"")
            else:
                fields["when"] = when
        if "trigger" in body:
            trigger = body["trigger"]
            known = [t.value for t in TriggerRule]
            if trigger not in known:
                self.add(
                    f"{where}unknown trigger {trigger!r}{_suggest(str(trigger), known)} "
                    f"(known: {', '.join(sorted(known))})"
                )
            else:
                fields["trigger"] = TriggerRule(trigger)
        if "semaphore" in body and body["semaphore"] is not None:
            semaphore = body["semaphore"]
            if not isinstance(semaphore, str) or not _SEMAPHORE.match(semaphore):
                self.add(f"{where}semaphore {semaphore!r} is not a name (letters, digits, '.', '_', ':', '-')")
            else:
                fields["semaphore"] = semaphore
        if "workdir" in body and body["workdir"] is not None:
            if not isinstance(body["workdir"], str) or not body["workdir"]:
                self.add(f"{where}workdir must be a path")
            else:
                fields["workdir"] = body["workdir"]
        if "priority" in body and body["priority"] is not None:
            if not _is_int(body["priority"]):
                self.add(f"{where}priority must be an integer, got {body['priority']!r}")
            else:
                fields["priority"] = body["priority"]
        if "description" in body:
            fields["description"] = str(body["description"] or "")
        if body.get("secrets") is not None:
            fields["secrets"] = self.secrets(where, body["secrets"])
        self.placement(where, body, deps, fields)
        if body.get("keep") is not None:  # retention (issue 7): this task's outputs outlive the job's ttl
            if not isinstance(body["keep"], bool):
                self.add(f"{where}keep must be true or false")
            else:
                fields["keep"] = body["keep"]
        self.negotiation(where, body, fields)
        if len(self.problems) > before:
            return None, deps
        return TaskSpec(**fields), deps

    def negotiation(self, where: str, body: Mapping[str, Any], fields: dict[str, Any]) -> None:
        """`labels` (what policies and node owners read), `requires` and `rank` (CEL over node)."""
        labels = body.get("labels")
        if labels is not None:
            if not isinstance(labels, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str | int | float | bool) for k, v in labels.items()):
                self.add(f"{where}labels must map names to values")
            else:
                fields["labels"] = {k: str(v) for k, v in labels.items()}
        for key in ("requires", "rank"):
            source = body.get(key)
            if source is None:
                continue
            try:
                rule = compile_rule(source, f"{where}{key}")
            except ValidationError as exc:
                self.add(str(exc))
                continue
            if not rule.variables <= {"node", "job", "task", "now"}:
                self.add(f"{where}{key} may read node, job, task and now")
            fields[key] = source

    def placement(self, where: str, body: Mapping[str, Any], deps: tuple[str, ...], fields: dict[str, Any]) -> None:
        """`locality: near(tasks.NAME)` (NAME among depends_on), `spread: LABEL`, `affinity:
        {"LABEL=VALUE": weight}` (-100..100, not 0), `constraints: {LABEL: VALUE}`."""
        if body.get("locality") is not None:
            locality = body["locality"]
            match = _NEAR.match(locality) if isinstance(locality, str) else None
            if match is None:
                self.add(f"{where}locality must be near(tasks.NAME), got {locality!r}")
            elif match.group(1) not in deps:
                self.add(f"{where}locality near(tasks.{match.group(1)}) needs {match.group(1)!r} in depends_on")
            else:
                fields["near"] = match.group(1)
        if body.get("spread") is not None:
            if not isinstance(body["spread"], str) or not _LABEL.match(body["spread"]):
                self.add(f"{where}spread must name a node label, e.g. zone, got {body['spread']!r}")
            else:
                fields["spread"] = body["spread"]
        if body.get("affinity") is not None:
            value = body["affinity"]
            if not isinstance(value, Mapping) or not value:
                self.add(f"{where}affinity must be a map of \"LABEL=VALUE\" to a weight, e.g. {{\"disk=ssd\": 10}}")
            else:
                terms = []
                for term, weight in value.items():
                    label, sep, wanted = str(term).partition("=")
                    if not sep or not _LABEL.match(label) or not wanted:
                        self.add(f"{where}affinity term {term!r} must be LABEL=VALUE")
                    elif (isinstance(weight, bool) or not isinstance(weight, int | float)
                          or not -100 <= weight <= 100 or weight == 0):
                        self.add(f"{where}affinity weight of {term!r} must be a number in -100..100, not 0, "
                                 f"got {weight!r}")
                    else:
                        terms.append((label, wanted, float(weight)))
                fields["affinity"] = tuple(terms)
        if body.get("constraints") is not None:
            value = body["constraints"]
            if not isinstance(value, Mapping) or not all(
                    isinstance(k, str) and _LABEL.match(k) and isinstance(v, str) for k, v in value.items()):
                self.add(f"{where}constraints must be a map of node labels to values, e.g. {{zone: eu-1}}")
            else:
                fields["constraints"] = dict(value)

    def depends_on(self, where: str, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
            self.add(f"{where}depends_on must be a list of task names")
            return ()
        return tuple(dict.fromkeys(value))

    def command(self, where: str, value: Any) -> tuple[str, ...] | None:
        if isinstance(value, str):
            self.add(f"{where}command must be a list of strings, e.g. [sh, -c, {value!r}]")
            return None
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(a, str | int | float) and not isinstance(a, bool) for a in value)
        ):
            self.add(f"{where}command must be a non-empty list of strings")
            return None
        return tuple(a if isinstance(a, str) else str(a) for a in value)

    def function(self, where: str, value: Any) -> str | None:
        if not isinstance(value, str) or not _FUNCTION_REF.match(value):
            self.add(
                f"{where}function {value!r} is not a module:attr reference (e.g. examples.stats:process)"
            )
            return None
        return value

    def secrets(self, where: str, value: Any) -> dict[str, tuple[str, str]]:
        """`{VAR: name}` (the secret as env variable VAR) or `{FILE: {file: name}}` (as the file FILE in
        $POLYFABRIC_SECRETS_DIR): target -> ("env" | "file", secret name)."""
        if not isinstance(value, Mapping):
            self.add(f"{where}secrets must be a map: {{API_KEY: secret-name}} or {{cert.pem: {{file: secret-name}}}}")
            return {}
        out: dict[str, tuple[str, str]] = {}
        for key, item in value.items():
            kind, name = "env", item
            if isinstance(item, Mapping) and set(item) == {"file"}:
                kind, name = "file", item["file"]
            if not isinstance(name, str) or not _SECRET_NAME.match(name):
                self.add(f"{where}secrets: {key}: {item!r} is not a secret name (or {{file: secret-name}})")
            elif kind == "env" and (not isinstance(key, str) or not _ENV_NAME.match(key)):
                self.add(f"{where}secrets: {key!r} is not a variable name (letters, digits, '_')")
            elif kind == "file" and (not isinstance(key, str) or not _SECRET_FILE.match(key)):
                self.add(f"{where}secrets: {key!r} is not a file name (letters, digits, '.', '_', '-')")
            else:
                out[key] = (kind, name)
        return out

    def env(self, where: str, value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            self.add(f"{where}env must be a map from variable names to values")
            return {}
        env: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key):
                self.add(f"{where}env: {key!r} is not a variable name (letters, digits, '_')")
            elif isinstance(item, bool):
                env[key] = "true" if item else "false"
            elif isinstance(item, str | int | float):
                env[key] = str(item)
            else:
                self.add(f"{where}env: {key} must be a string or a number, got {item!r}")
        return env

    def foreach(self, where: str, value: Any) -> str | tuple[Any, ...] | None:
        if isinstance(value, list):
            return tuple(value)
        if isinstance(value, str) and value.strip():
            return value
        self.add(f"{where}foreach must be a CEL expression or a list, got {value!r}")
        return None

    def positive_int(self, where: str, key: str, value: Any) -> int | None:
        if not _is_int(value) or value < 1:
            self.add(f"{where}{key} must be an integer of at least 1, got {value!r}")
            return None
        return int(value)

    def duration(self, where: str, key: str, value: Any, *, positive: bool = False) -> float | None:
        try:
            seconds = parse_duration(value)
        except ValidationError as exc:
            self.add(f"{where}{key}: {exc.message}")
            return None
        if positive and seconds <= 0:
            self.add(f"{where}{key} must be more than 0, got {value!r}")
            return None
        return seconds

    def resources(self, where: str, value: Any) -> Resources:
        if not isinstance(value, Mapping):
            self.add(f"{where}resources must be a map (cpu, memory, disk, gpu)")
            return Resources(slots=1)
        self.unknown_keys(f"{where}resources: ", value, RESOURCE_KEYS)
        cpu = memory = disk = gpus = 0
        for key, parse in (("cpu", parse_cpu), ("memory", parse_bytes), ("disk", parse_bytes)):
            if key in value:
                try:
                    amount = parse(value[key])
                except (ValidationError, TypeError, AttributeError) as exc:
                    text = exc.message if isinstance(exc, ValidationError) else f"{value[key]!r} is not valid"
                    self.add(f"{where}resources.{key}: {text}")
                    continue
                if key == "cpu":
                    cpu = amount
                elif key == "memory":
                    memory = amount
                else:
                    disk = amount
        if "gpu" in value and "gpus" in value:
            self.add(f"{where}resources: give gpu or gpus, not both")
        for key in ("gpu", "gpus"):
            if key in value:
                if not _is_int(value[key]) or value[key] < 0:
                    self.add(f"{where}resources.{key} must be a whole number of GPUs, got {value[key]!r}")
                else:
                    gpus = value[key]
        return Resources(cpu_millis=cpu, memory_bytes=memory, disk_bytes=disk, gpus=gpus, slots=1)

    def retries(self, where: str, value: Any) -> RetryPolicy:
        if _is_int(value):
            if value < 0:
                self.add(f"{where}retries cannot be negative, got {value}")
                return RetryPolicy()
            return RetryPolicy(limit=value)
        if not isinstance(value, Mapping):
            self.add(f"{where}retries must be a number or a map like {{limit: 2, backoff: 1s}}")
            return RetryPolicy()
        self.unknown_keys(f"{where}retries: ", value, RETRY_KEYS)
        fields: dict[str, Any] = {}
        limit = value.get("limit", 0)
        if not _is_int(limit) or limit < 0:
            self.add(f"{where}retries.limit must be a whole number >= 0, got {limit!r}")
        else:
            fields["limit"] = limit
        for key, attr in (("backoff", "backoff_s"), ("max_backoff", "max_backoff_s")):
            if key in value:
                seconds = self.duration(where, f"retries.{key}", value[key])
                if seconds is not None:
                    fields[attr] = seconds
        if "factor" in value:
            factor = value["factor"]
            if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 1:
                self.add(f"{where}retries.factor must be a number >= 1, got {factor!r}")
            else:
                fields["factor"] = float(factor)
        try:
            return RetryPolicy(**fields)
        except ValidationError as exc:
            self.add(f"{where}retries: {exc.message}")
            return RetryPolicy()

    # -- expressions -------------------------------------------------------------------------------

    def check_expression(
        self,
        where: str,
        source: str,
        *,
        task: str,
        upstream: set[str],
        tasks: Mapping[str, Any],
        params: Mapping[str, Any],
        item_allowed: bool,
    ) -> None:
        try:
            expression = self.expressions.compile(source)
        except ExpressionError as exc:
            self.add(f"{where}{exc.message}")
            return
        self.check_references(
            where, expression, task=task, upstream=upstream, tasks=tasks, params=params,
            item_allowed=item_allowed,
        )

    def check_references(
        self,
        where: str,
        expression: Expression,
        *,
        task: str,
        upstream: set[str],
        tasks: Mapping[str, Any],
        params: Mapping[str, Any],
        item_allowed: bool,
    ) -> None:
        quoted = f"{expression.source!r}"
        for name in sorted(expression.variables - set(VARIABLES)):
            self.add(
                f"{where}unknown variable {name!r} in {quoted}{_suggest(name, VARIABLES)} "
                f"(variables: {', '.join(VARIABLES)})"
            )
        if "item" in expression.variables and not item_allowed:
            self.add(
                f"{where}{quoted} uses 'item', which exists only in the command, args and env "
                "of a foreach task"
            )
        for name in sorted(expression.tasks):
            if name == task:
                self.add(f"{where}{quoted} uses the task's own result (tasks.{name})")
            elif name not in tasks:
                self.add(f"{where}{quoted} refers to tasks.{name}, which does not exist{_suggest(name, tasks)}")
            elif name not in upstream:
                self.add(
                    f"{where}{quoted} uses tasks.{name}, but {name!r} is not upstream of {task!r}; "
                    "add it to depends_on"
                )
        for name in sorted(expression.params):
            if name not in params:
                self.add(
                    f"{where}{quoted} uses params.{name}, which is not declared{_suggest(name, params)}"
                )

    def task_expressions(
        self, spec: TaskSpec, upstream: set[str], tasks: Mapping[str, Any], params: Mapping[str, Any]
    ) -> None:
        where = f"task {spec.name!r}: "
        common: dict[str, Any] = {"task": spec.name, "upstream": upstream, "tasks": tasks, "params": params}
        if spec.when is not None:
            self.check_expression(f"{where}when: ", spec.when, item_allowed=False, **common)
        if isinstance(spec.foreach, str):
            self.check_expression(f"{where}foreach: ", spec.foreach, item_allowed=False, **common)
        for label, value in (("command", spec.command), ("args", spec.args), ("env", spec.env)):
            try:
                templates = list(self.expressions.templates_in(value)) if value else []
            except ExpressionError as exc:
                self.add(f"{where}{label}: {exc.message}")
                continue
            for template in templates:
                for expression in template.expressions:
                    self.check_references(
                        f"{where}{label}: ", expression, item_allowed=spec.is_foreach, **common
                    )


def parse_workflow(
    doc: Any,
    param_overrides: Mapping[str, Any] | None = None,
    *,
    expressions: Expressions | None = None,
) -> WorkflowSpec:
    """Validate a loaded workflow document; raise WorkflowInvalid listing every problem.

    Pass `expressions` to keep the compiled expressions for the run (compile once per workflow).
    """
    parser = _Parser(expressions if expressions is not None else Expressions())
    if not isinstance(doc, Mapping):
        raise WorkflowInvalid(None, ["the workflow must be a map with at least 'name' and 'tasks'"])
    parser.unknown_keys("", doc, WORKFLOW_KEYS)

    name = doc.get("name")
    if name is None:
        parser.add("missing required key 'name'")
    elif not isinstance(name, str) or not _WORKFLOW_NAME.match(name):
        parser.add(f"name {name!r} is not valid: use 1-64 letters, digits, '.', '_' and '-'")
    shown_name = name if isinstance(name, str) else None

    params: dict[str, Any] = {}
    raw_params = doc.get("params")
    if raw_params is not None and not isinstance(raw_params, Mapping):
        parser.add("params must be a map from names to default values")
    elif raw_params:
        for key, value in raw_params.items():
            if not isinstance(key, str) or not _PARAM_NAME.match(key):
                parser.add(f"param name {key!r} is not valid: use letters, digits and '_'")
            else:
                params[key] = value
    for key, given in (param_overrides or {}).items():
        if key not in params:
            declared = ", ".join(params) or "none"
            parser.add(
                f"param {key!r} is not declared by the workflow{_suggest(key, params)} (declared: {declared})"
            )
            continue
        value, problem = _override(key, params[key], given)
        if problem:
            parser.add(problem)
        else:
            params[key] = value

    priority = doc.get("priority", 0)
    if priority is None:
        priority = 0
    if not _is_int(priority):
        parser.add(f"priority must be an integer, got {priority!r}")
        priority = 0
    max_parallel = doc.get("max_parallel")
    if max_parallel is not None:
        max_parallel = parser.positive_int("", "max_parallel", max_parallel)
    description = str(doc.get("description") or "")
    negotiation: dict[str, Any] = {}
    parser.negotiation("", doc, negotiation)

    raw_tasks = doc.get("tasks")
    specs: dict[str, TaskSpec | None] = {}
    deps: dict[str, tuple[str, ...]] = {}
    if raw_tasks is None:
        parser.add("missing required key 'tasks'")
    elif not isinstance(raw_tasks, Mapping) or not raw_tasks:
        parser.add("tasks must be a non-empty map from task names to tasks")
    else:
        for task_name, body in raw_tasks.items():
            if not isinstance(task_name, str) or not _TASK_NAME.match(task_name):
                parser.add(
                    f"task name {task_name!r} is not valid: start with a letter or '_', then use "
                    "letters, digits, '_' and '-' (at most 63)"
                )
                continue
            specs[task_name], deps[task_name] = parser.task(task_name, body)

    for task_name, upstream in deps.items():
        for dep in upstream:
            if dep not in deps:
                parser.add(
                    f"task {task_name!r} depends on {dep!r}, which does not exist{_suggest(dep, deps)}"
                )
    cycle = find_cycle(deps)
    if cycle:
        parser.add(f"cycle: {' -> '.join(cycle)} (each task depends on the next)")
    else:
        for task_name, spec in specs.items():
            if spec is not None:
                parser.task_expressions(spec, ancestors(deps, task_name), deps, params)

    retention = _retention(parser, doc, set(deps))
    if parser.problems:
        raise WorkflowInvalid(shown_name, parser.problems)
    tasks = {n: s for n, s in specs.items() if s is not None}
    order = topological_order(deps)
    assert order is not None
    return WorkflowSpec(
        name=str(name),
        tasks=tasks,
        params=params,
        priority=priority,
        max_parallel=max_parallel,
        description=description,
        order=tuple(order),
        **negotiation,
        **retention,
    )


NEVER = ("never", "forever")


def _retention(parser: _Parser, doc: Mapping[str, Any], task_names: set[str]) -> dict[str, Any]:
    """`ttl: 7d` (or never) and `keep: [task, ...]`: how long the finished job's records, logs,
    artifacts and checkpoints stay, and whose outputs stay past that (issue 7, services/gc.py)."""
    out: dict[str, Any] = {}
    ttl = doc.get("ttl")
    if ttl is not None:
        if isinstance(ttl, str) and ttl.strip().lower() in NEVER:
            out["ttl_s"] = float("inf")
        else:
            try:
                out["ttl_s"] = parse_duration(ttl)
            except ValidationError:
                parser.add(f"ttl {ttl!r} is not a duration (e.g. 30m, 12h, 7d) or 'never'")
    keep = doc.get("keep")
    if keep is not None:
        if not isinstance(keep, list | tuple) or not all(isinstance(k, str) for k in keep):
            parser.add("keep must be a list of task names whose outputs outlive the job's ttl")
        else:
            for name in keep:
                if name not in task_names:
                    parser.add(f"keep names task {name!r}, which does not exist{_suggest(name, task_names)}")
            out["keep"] = tuple(keep)
    return out


def retention_of(doc: Any) -> tuple[float | None, frozenset[str]]:
    """(ttl in seconds, None: the coordinator's default; the task names whose outputs are kept) of
    a stored workflow document, without validating the rest (it was validated at submission)."""
    if not isinstance(doc, Mapping):
        return None, frozenset()
    ttl: float | None = None
    raw = doc.get("ttl")
    if isinstance(raw, str) and raw.strip().lower() in NEVER:
        ttl = float("inf")
    elif raw is not None:
        try:
            ttl = parse_duration(raw)
        except ValidationError:
            ttl = None
    kept = {k for k in doc.get("keep") or () if isinstance(k, str)}
    tasks = doc.get("tasks")
    if isinstance(tasks, Mapping):
        kept |= {name for name, body in tasks.items() if isinstance(body, Mapping) and body.get("keep") is True}
    return ttl, frozenset(kept)
