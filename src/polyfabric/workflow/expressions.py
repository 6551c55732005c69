"""CEL expressions and `{{ expr }}` templates, compiled once per workflow.

Variables an expression sees:
    params              the workflow's parameters (defaults with the submitter's overrides)
    tasks.NAME.result   the result of an upstream task (a foreach task: the list of its items'
                        results, in item order); tasks.NAME.status its final status
    item                the current item, inside a foreach task's command, args and env

The extended function library of the `cel` package (sum, min, max, join, split, math.*, ...) is
available. Values come out as plain Python: int, float, str, bool, None, list, dict (bytes as
UTF-8 text, durations as seconds, timestamps as RFC 3339 strings).

Templates: `{{ expr }}` inside a string renders the value; strings stay strings, anything else is
written as compact JSON ([1,2], {"a":1}, true, null). In `args`, a string that is exactly one
`{{ expr }}` keeps the value's type (an int stays an int). To write a literal `{{`, use
`{{ "{{" }}`.

Compilation is cached per `Expressions` object (one per workflow), so each distinct expression is
compiled once; a plain variable path (`item`, `params.shards`, `tasks.split.result`) is then
resolved without calling into CEL at all.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import cel
from cel.stdlib import add_stdlib_to_context

from polyfabric.domain.errors import ValidationError

__all__ = [
    "NO_ITEM",
    "VARIABLES",
    "Expression",
    "ExpressionError",
    "Expressions",
    "Renderer",
    "Scope",
    "Template",
    "to_plain",
    "to_text",
]

VARIABLES = ("params", "tasks", "item")
"""The variables the workflow file may use."""

_NAMESPACES = frozenset({"math", "base64", "sets", "lists", "strings", "optional"})
_MACROS = re.compile(r"\b(?:map|filter|all|exists|exists_one)\s*\(\s*([A-Za-z_]\w*)\s*,")
_PATH = re.compile(r"^\s*(params|tasks|item)((?:\s*\.\s*[A-Za-z_]\w*)*)\s*$")
_SCAN = re.compile(
    r"""(?P<str>(?:[rRbB]{0,2})(?:'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"))"""
    r"""|(?<![\w.])tasks\s*(?:\.\s*(?P<dot>[A-Za-z_]\w*)|\[\s*(?P<q>['"])(?P<key>[^'"\\]*)(?P=q)\s*\])?"""
    r"""|(?<![\w.])params\s*(?:\.\s*(?P<param>[A-Za-z_]\w*))?""",
    re.DOTALL,
)
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


Renderer = Callable[["Scope"], Any]


def _constant(value: Any) -> Renderer:
    return lambda scope: value


class ExpressionError(ValidationError):
    """An expression that does not compile, or fails when evaluated; the message quotes it."""

    def __init__(self, message: str, expression: str = "") -> None:
        super().__init__(message)
        self.expression = expression


class _NoItem:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_ITEM"


NO_ITEM: Any = _NoItem()
"""The `item` of a scope outside a foreach task."""


@dataclass(frozen=True, slots=True)
class Scope:
    """What an evaluation can see. `tasks` maps terminal task names to {"result", "status"};
    only the tasks an expression mentions are handed to CEL, so big results cost nothing to
    expressions that do not use them."""

    params: Mapping[str, Any]
    tasks: Mapping[str, Mapping[str, Any]]
    item: Any = NO_ITEM


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression and what it refers to (found by static analysis)."""

    source: str
    program: Any
    path: tuple[str, ...] | None  # a plain variable path, resolved without CEL
    variables: frozenset[str]  # free top-level variables (params, tasks, item, or unknown ones)
    tasks: frozenset[str]  # task names it mentions as tasks.NAME or tasks["NAME"]
    params: frozenset[str]  # parameter names it mentions as params.NAME
    dynamic_tasks: bool  # `tasks` used in a way static analysis cannot follow (tasks[x])


@dataclass(frozen=True, slots=True)
class Template:
    """A string split into literal text and expressions."""

    source: str
    parts: tuple[str | Expression, ...]

    @property
    def whole(self) -> Expression | None:
        """The expression when the string is exactly one `{{ expr }}`, else None."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Expression):
            return self.parts[0]
        return None

    @property
    def expressions(self) -> tuple[Expression, ...]:
        return tuple(p for p in self.parts if isinstance(p, Expression))


def to_plain(value: Any) -> Any:
    """A CEL result as plain Python data (see the module docstring for the mapping)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {to_plain(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ExpressionError("a bytes value is not UTF-8 text; use base64.encode()") from None
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, _dt.datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, cel.OptionalValue):
        return to_plain(value.value()) if value.has_value() else None
    raise ExpressionError(f"a value of type {type(value).__name__} cannot leave an expression")


def to_text(value: Any) -> str:
    """How a value is written into a string: strings as they are, the rest as compact JSON."""
    kind = type(value)
    if kind is str:
        return value
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _analyse(source: str) -> tuple[frozenset[str], frozenset[str], bool]:
    tasks: set[str] = set()
    params: set[str] = set()
    dynamic = False
    for match in _SCAN.finditer(source):
        if match.group("str") is not None:
            continue
        text = match.group(0)
        if text.startswith("tasks"):
            name = match.group("dot") or match.group("key")
            if name:
                tasks.add(name)
            else:
                dynamic = True
        elif match.group("param"):
            params.add(match.group("param"))
    return frozenset(tasks), frozenset(params), dynamic


def _clean(detail: str, source: str) -> str:
    prefix = f"Failed to parse expression '{source}': "
    return detail[len(prefix):] if detail.startswith(prefix) else detail


class Expressions:
    """A workflow's compile cache and evaluator. Not thread-safe: one per workflow run."""

    def __init__(self) -> None:
        self._compiled: dict[str, Expression] = {}
        self._templates: dict[str, Template | None] = {}
        # One context per workflow: the extended library is registered once, and each evaluation
        # hands over its variables through the resolver (cheaper than updating the context). The
        # resolver cannot return null, so `item` = null falls through to a registered null.
        self._variables: dict[str, Any] = {}
        self._context = cel.Context()
        add_stdlib_to_context(self._context)
        self._context.add_variable("item", None)
        self._context.set_variable_resolver(self._variables.get)

    def __len__(self) -> int:
        return len(self._compiled)

    # -- compiling -------------------------------------------------------------------------------

    def compile(self, source: str) -> Expression:
        """Compile once; raise ExpressionError (a ValidationError) naming the expression."""
        found = self._compiled.get(source)
        if found is not None:
            return found
        if not source.strip():
            raise ExpressionError("an empty expression", source)
        try:
            program = cel.compile(source)
            names = set(program.variables())
        except Exception as exc:  # the binding raises ValueError; be liberal
            raise ExpressionError(
                f"invalid expression {source!r}: {_clean(str(exc), source)}", source
            ) from None
        names -= set(_MACROS.findall(source))
        names -= _NAMESPACES
        match = _PATH.match(source)
        path = tuple(p.strip() for p in re.split(r"\.", source.strip())) if match else None
        tasks, params, dynamic = _analyse(source)
        expression = Expression(source, program, path, frozenset(names), tasks, params, dynamic)
        self._compiled[source] = expression
        return expression

    def template(self, text: str) -> Template | None:
        """Parse a string's `{{ }}` parts (compiled, cached); None when it has none."""
        if "{{" not in text:
            return None
        if text in self._templates:
            return self._templates[text]
        parts: list[str | Expression] = []
        position = 0
        for match in _TEMPLATE.finditer(text):
            if match.start() > position:
                parts.append(text[position : match.start()])
            inner = match.group(1).strip()
            if not inner:
                raise ExpressionError(f"an empty {{{{ }}}} in {text!r}", text)
            parts.append(self.compile(inner))
            position = match.end()
        if position < len(text):
            parts.append(text[position:])
        template = Template(text, tuple(parts)) if any(isinstance(p, Expression) for p in parts) else None
        self._templates[text] = template
        return template

    def templates_in(self, value: Any) -> Iterator[Template]:
        """Every template inside a (nested) value: strings of lists and dict values."""
        if isinstance(value, str):
            template = self.template(value)
            if template is not None:
                yield template
        elif isinstance(value, list | tuple):
            for v in value:
                yield from self.templates_in(v)
        elif isinstance(value, dict):
            for v in value.values():
                yield from self.templates_in(v)

    # -- evaluating ------------------------------------------------------------------------------

    def evaluate(self, expression: Expression | str, scope: Scope) -> Any:
        """The value as plain Python; raise ExpressionError with the expression's text."""
        if isinstance(expression, str):
            expression = self.compile(expression)
        if expression.path is not None:
            return self._resolve(expression, scope)
        variables = self._variables
        variables["params"] = scope.params
        if expression.dynamic_tasks:
            variables["tasks"] = dict(scope.tasks)
        else:
            variables["tasks"] = {n: scope.tasks[n] for n in expression.tasks if n in scope.tasks}
        variables["item"] = None if scope.item is NO_ITEM else scope.item
        try:
            return to_plain(expression.program.execute(self._context))
        except ExpressionError as exc:
            raise ExpressionError(f"{expression.source!r}: {exc.message}", expression.source) from None
        except KeyError as exc:
            raise ExpressionError(
                f"{expression.source!r}: no such key {exc.args[0]!r}", expression.source
            ) from None
        except Exception as exc:
            raise ExpressionError(f"{expression.source!r}: {exc}", expression.source) from None

    def _resolve(self, expression: Expression, scope: Scope) -> Any:
        assert expression.path is not None
        root, *rest = expression.path
        if root == "params":
            value: Any = scope.params
        elif root == "tasks":
            value = scope.tasks
        elif scope.item is NO_ITEM:
            raise ExpressionError(
                f"{expression.source!r}: 'item' exists only inside a foreach task", expression.source
            )
        else:
            value = scope.item
        for key in rest:
            if not isinstance(value, Mapping):
                raise ExpressionError(
                    f"{expression.source!r}: cannot select {key!r} from a {type(value).__name__}",
                    expression.source,
                )
            if key not in value:
                raise ExpressionError(f"{expression.source!r}: no such key {key!r}", expression.source)
            value = value[key]
        return value

    def evaluate_bool(self, expression: Expression | str, scope: Scope) -> bool:
        value = self.evaluate(expression, scope)
        if not isinstance(value, bool):
            source = expression if isinstance(expression, str) else expression.source
            raise ExpressionError(f"{source!r} must be true or false, got {to_text(value)}", source)
        return value

    def evaluate_list(self, expression: Expression | str, scope: Scope) -> list[Any]:
        value = self.evaluate(expression, scope)
        if not isinstance(value, list):
            source = expression if isinstance(expression, str) else expression.source
            raise ExpressionError(f"{source!r} must give a list, got {to_text(value)}", source)
        return value

    # -- rendering -------------------------------------------------------------------------------

    def render(self, value: Any, scope: Scope, *, keep_type: bool = True) -> Any:
        """Render every `{{ }}` inside a (nested) value; dict keys are left alone.

        With keep_type, a string that is exactly one `{{ expr }}` becomes the value itself.
        """
        return self.renderer(value, keep_type=keep_type)(scope)

    def render_text(self, value: Any, scope: Scope) -> str:
        """Render into a string (command arguments, environment values)."""
        return to_text(self.render(value, scope, keep_type=False))

    def renderer(self, value: Any, *, keep_type: bool = True, text: bool = False) -> Renderer:
        """Compile a (nested) value into a function of the scope that renders it.

        `text` turns every string of the value into text (command arguments, env values).
        Parts without templates are returned as they are (shared: treat results as read-only).
        """
        return self._renderer(value, keep_type and not text, text)[0]

    def _renderer(self, value: Any, keep_type: bool, text: bool) -> tuple[Renderer, bool]:
        """(function, whether the value is constant)."""
        if isinstance(value, str):
            template = self.template(value)
            if template is None:
                return _constant(value), True
            whole = template.whole
            if whole is not None:
                evaluate = self._evaluator(whole)
                if keep_type:
                    return evaluate, False
                return (lambda scope: to_text(evaluate(scope))), False
            parts = [p if isinstance(p, str) else self._evaluator(p) for p in template.parts]

            def join(scope: Scope) -> str:
                return "".join(p if isinstance(p, str) else to_text(p(scope)) for p in parts)

            return join, False
        if isinstance(value, list | tuple):
            compiled = [self._renderer(v, keep_type, text) for v in value]
            if all(const for _, const in compiled):
                fixed = [to_text(v) for v in value] if text else list(value)
                return _constant(fixed), True
            fns = [fn for fn, _ in compiled]
            return (lambda scope: [fn(scope) for fn in fns]), False
        if isinstance(value, dict):
            items = [(k, *self._renderer(v, keep_type, text)) for k, v in value.items()]
            if all(const for _, _, const in items):
                fixed_map = {k: to_text(v) for k, v in value.items()} if text else dict(value)
                return _constant(fixed_map), True
            pairs = [(k, fn) for k, fn, _ in items]
            return (lambda scope: {k: fn(scope) for k, fn in pairs}), False
        return _constant(to_text(value) if text else value), True

    def _evaluator(self, expression: Expression) -> Renderer:
        """A function of the scope evaluating one expression; plain paths skip CEL entirely."""
        if expression.path is None:
            return lambda scope: self.evaluate(expression, scope)
        root, *rest = expression.path
        if not rest and root == "item":

            def item(scope: Scope) -> Any:
                if scope.item is NO_ITEM:
                    return self._resolve(expression, scope)  # raises the proper error
                return scope.item

            return item
        return lambda scope: self._resolve(expression, scope)
