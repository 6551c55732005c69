"""CEL expressions and `{{ }}` templates: compile once, plain values out, type-keeping rules."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyfabric.domain.errors import ValidationError
from polyfabric.workflow.expressions import (
    NO_ITEM,
    ExpressionError,
    Expressions,
    Scope,
    to_plain,
    to_text,
)

TASKS: dict[str, dict[str, Any]] = {
    "split": {"status": "succeeded", "result": [0, 1, 2]},
    "work": {"status": "succeeded", "result": [{"n": 1}, {"n": 2}]},
    "skipped": {"status": "skipped", "result": None},
}
SCOPE = Scope(params={"shards": 8, "name": "x", "ratio": 0.5}, tasks=TASKS)


@pytest.fixture
def ex() -> Expressions:
    return Expressions()


def test_compile_is_cached(ex: Expressions) -> None:
    first = ex.compile("params.shards * 2")
    assert ex.compile("params.shards * 2") is first
    assert len(ex) == 1


def test_compile_error_names_the_expression(ex: Expressions) -> None:
    with pytest.raises(ExpressionError) as info:
        ex.compile("1 +")
    assert isinstance(info.value, ValidationError)
    assert "'1 +'" in info.value.message and "Syntax error" in info.value.message
    assert info.value.expression == "1 +"
    with pytest.raises(ExpressionError, match="empty"):
        ex.compile("  ")


def test_static_analysis(ex: Expressions) -> None:
    e = ex.compile("size(tasks.work.result) > params.shards && tasks['split'].status == 'x'")
    assert e.tasks == {"work", "split"}
    assert e.params == {"shards"}
    assert e.variables == {"tasks", "params"}
    assert not e.dynamic_tasks
    assert ex.compile("'tasks.fake' + params.name").tasks == frozenset()  # inside a string literal
    assert ex.compile("tasks[params.name].result").dynamic_tasks
    assert ex.compile("[1].map(x, x + 1)").variables == frozenset()
    assert ex.compile("math.greatest([1, 2])").variables == frozenset()
    assert ex.compile("item").path == ("item",)
    assert ex.compile("tasks.split.result").path == ("tasks", "split", "result")
    assert ex.compile("params.shards + 1").path is None


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("params.shards", 8),
        ("params.shards * 2", 16),
        ("params.ratio", 0.5),
        ("tasks.split.result", [0, 1, 2]),
        ("size(tasks.work.result) > 0", True),
        ("tasks.work.result.map(r, r.n)", [1, 2]),
        ("sum(tasks.work.result.map(r, r.n))", 3),  # the extended library is on
        ("tasks.skipped.status", "skipped"),
        ("tasks.skipped.result == null", True),
        ("{'a': [1, 2.5, 'x', null, true]}", {"a": [1, 2.5, "x", None, True]}),
        ("b'abc'", "abc"),
        ("duration('1m30s')", 90.0),
        ("timestamp('2024-01-02T03:04:05Z')", "2024-01-02T03:04:05Z"),
        ("1u", 1),
        ("['b', 'a'].join('-')", "b-a"),
    ],
)
def test_evaluate_gives_plain_python(ex: Expressions, source: str, value: Any) -> None:
    result = ex.evaluate(source, SCOPE)
    assert result == value and type(result) is type(value)


def test_item_is_seen_only_in_a_foreach_scope(ex: Expressions) -> None:
    scope = Scope(SCOPE.params, TASKS, item={"k": 3})
    assert ex.evaluate("item", scope) == {"k": 3}
    assert ex.evaluate("item.k", scope) == 3
    assert ex.evaluate("item.k + 1", scope) == 4
    assert ex.evaluate("item", Scope({}, {}, item=None)) is None
    with pytest.raises(ExpressionError, match="only inside a foreach"):
        ex.evaluate("item", SCOPE)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("params.missing", "no such key 'missing'"),
        ("params.missing + 1", "no such key 'missing'"),
        ("tasks.nope.result", "no such key 'nope'"),
        ("params.shards.x", "cannot select 'x'"),
        ("1 / 0", "division by zero"),
        ("params.shards + 'a'", "No such overload"),
        ("nofun(1)", "Undefined variable or function"),
    ],
)
def test_runtime_errors_quote_the_expression(ex: Expressions, source: str, expected: str) -> None:
    with pytest.raises(ExpressionError) as info:
        ex.evaluate(source, SCOPE)
    assert info.value.message.startswith(repr(source))
    assert expected in info.value.message
    assert info.value.expression == source


def test_evaluate_bool_and_list_check_the_type(ex: Expressions) -> None:
    assert ex.evaluate_bool("params.shards > 1", SCOPE) is True
    with pytest.raises(ExpressionError, match="must be true or false, got 8"):
        ex.evaluate_bool("params.shards", SCOPE)
    assert ex.evaluate_list("tasks.split.result", SCOPE) == [0, 1, 2]
    with pytest.raises(ExpressionError, match="must give a list"):
        ex.evaluate_list("params.name", SCOPE)


def test_fast_path_agrees_with_cel(ex: Expressions) -> None:
    """A plain path is resolved in Python; `(path)` forces CEL: both give the same."""
    scope = Scope(SCOPE.params, TASKS, item={"a": [1, {"b": None}]})
    for source in ["params.shards", "tasks.work.result", "item", "item.a", "tasks.skipped.result"]:
        assert ex.compile(source).path is not None
        assert ex.evaluate(source, scope) == ex.evaluate(f"({source})", scope)


def test_only_mentioned_tasks_reach_cel(ex: Expressions) -> None:
    class Exploding(dict[str, Any]):
        def __getitem__(self, key: str) -> Any:
            if key == "huge":
                raise AssertionError("an unmentioned task was converted")
            return super().__getitem__(key)

    tasks = Exploding({**TASKS, "huge": {"status": "succeeded", "result": list(range(10))}})
    assert ex.evaluate("size(tasks.split.result)", Scope({}, tasks)) == 3


# -- rendering ---------------------------------------------------------------------------------


def test_whole_template_keeps_the_type_in_args(ex: Expressions) -> None:
    scope = Scope(SCOPE.params, TASKS, item=3)
    args = {"shard": "{{ item }}", "n": "{{ params.shards * 2 }}", "label": "shard-{{ item }}",
            "nested": {"xs": ["{{ tasks.split.result }}", 1, "plain"]}, "flag": True}
    assert ex.render(args, scope) == {
        "shard": 3, "n": 16, "label": "shard-3", "nested": {"xs": [[0, 1, 2], 1, "plain"]}, "flag": True,
    }


def test_strings_render_lists_and_maps_as_json(ex: Expressions) -> None:
    assert ex.render_text("echo {{ tasks.split.result }}", SCOPE) == "echo [0,1,2]"
    assert ex.render_text("{{ tasks.work.result[0] }}", SCOPE) == '{"n":1}'
    assert ex.render_text("{{ params.name }}/{{ params.shards }}", SCOPE) == "x/8"
    assert ex.render_text("{{ params.ratio }} {{ true }} {{ null }}", SCOPE) == "0.5 true null"
    assert ex.render_text("{{ params.shards }}", SCOPE) == "8"  # text, even when whole
    assert ex.render_text("no templates", SCOPE) == "no templates"
    assert ex.render_text('{{ "{{" }} literal', SCOPE) == "{{ literal"


def test_text_renderer_for_commands_and_env(ex: Expressions) -> None:
    scope = Scope(SCOPE.params, TASKS, item=2)
    command = ex.renderer(["python3", "-c", "print({{ item }} * {{ params.shards }})"], text=True)
    assert command(scope) == ["python3", "-c", "print(2 * 8)"]
    env = ex.renderer({"N": "{{ item }}", "RAW": "1"}, text=True)
    assert env(scope) == {"N": "2", "RAW": "1"}
    constant = ex.renderer({"a": [1, "b"]})
    assert constant(scope) == {"a": [1, "b"]}


def test_empty_template_is_an_error(ex: Expressions) -> None:
    with pytest.raises(ExpressionError, match="empty"):
        ex.render_text("a {{ }} b", SCOPE)


def test_templates_in_walks_nested_values(ex: Expressions) -> None:
    found = list(ex.templates_in({"a": ["{{ item }}", {"b": "x {{ params.shards }}"}], "c": 1}))
    assert [t.source for t in found] == ["{{ item }}", "x {{ params.shards }}"]
    assert found[0].whole is not None and found[1].whole is None


def test_to_plain_and_to_text() -> None:
    assert to_plain((1, (2,))) == [1, [2]]
    with pytest.raises(ExpressionError, match="not UTF-8"):
        to_plain(b"\xff")
    with pytest.raises(ExpressionError, match="cannot leave"):
        to_plain(object())
    assert to_text("s") == "s" and to_text(3) == "3" and to_text(False) == "false"
    assert to_text(None) == "null" and to_text(1.5) == "1.5" and to_text({"a": [1]}) == '{"a":[1]}'
    assert repr(NO_ITEM) == "NO_ITEM"


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**62), 2**62) | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
))
def test_values_pass_through_cel_unchanged(value: Any) -> None:
    ex = Expressions()
    scope = Scope({"v": value}, {})
    assert ex.evaluate("(params.v)", scope) == value
    assert ex.render({"x": "{{ params.v }}"}, scope) == {"x": value}


def test_evaluation_is_fast_once_compiled() -> None:
    ex = Expressions()
    source = "size(tasks.work.result) > params.shards"
    ex.compile(source)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        ex.evaluate(source, SCOPE)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 250e-6, f"{per_call * 1e6:.1f} µs per evaluation"
