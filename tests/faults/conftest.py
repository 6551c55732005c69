"""The fault-injection suite's report: each scenario's figures, printed as a table and written as JSON.

A scenario calls the `fault_report` fixture with its figures (tasks lost, results accepted twice,
tasks re-executed, recovery time, ...) *before* it asserts on them, so a failing scenario still
shows what it measured. The figures travel in the test report's `user_properties` (so they also
cross from pytest-xdist workers to the controller); this plugin collects them, prints a table in
the terminal summary and writes them as JSON to `$POLYFABRIC_FAULT_REPORT`, or else to
`fault-report.json` in pytest's base temporary directory (the path is printed under the table).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Fleet

PROPERTY = "fault_figures"
_rows: list[dict[str, Any]] = []


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    """`fault_report(scenario=..., backend=..., lost=..., accepted_twice=..., re_executed=...,
    recovery_s=..., **more)`: records one scenario's figures (call it once per scenario run)."""

    def record(**figures: Any) -> dict[str, Any]:
        row = {"test": request.node.nodeid, **figures}
        request.node.user_properties.append((PROPERTY, json.dumps(row, default=str)))
        print(f"\nfault report: {json.dumps(row, default=str)}")
        return row

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == PROPERTY:
            row = json.loads(value)
            row["outcome"] = report.outcome
            _rows.append(row)


def _report_path(config: pytest.Config) -> Path:
    explicit = os.environ.get("POLYFABRIC_FAULT_REPORT")
    if explicit:
        return Path(explicit)
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None:  # pragma: no cover - the tmp_path plugin is always there
        return Path("fault-report.json")
    return factory.getbasetemp() / "fault-report.json"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if not _rows or _is_worker(config):
        # An xdist worker hands its rows to the controller through the reports; it writes only
        # when the controller cannot collect them (it did not load this conftest).
        if not (_rows and _is_worker(config) and os.environ.get("POLYFABRIC_FAULT_REPORT")):
            return
    path = _report_path(config)
    if _is_worker(config):
        path = path.with_name(f"{path.stem}-{config.workerinput['workerid']}{path.suffix}")  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scenarios": _rows}, indent=2, default=str) + "\n")
    config.stash[_PATH_KEY] = path


_PATH_KEY = pytest.StashKey[Path]()

COLUMNS = [("scenario", "scenario", 44), ("backend", "backend", 10), ("tasks", "tasks", 5), ("lost", "lost", 4),
           ("accepted_twice", "2x", 3), ("re_executed", "re-run", 6), ("recovery_s", "recovery s", 10),
           ("outcome", "outcome", 7)]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _rows or _is_worker(config):
        return
    tr = terminalreporter
    tr.section("fault-injection report")
    widths = [max(w, len(h)) for _, h, w in COLUMNS]
    tr.write_line("  ".join(h.ljust(w) for (_, h, _), w in zip(COLUMNS, widths, strict=True)) + "  notes")
    for row in _rows:
        cells = [_cell(row.get(k)).ljust(w) for (k, _, _), w in zip(COLUMNS, widths, strict=True)]
        tr.write_line("  ".join(cells) + "  " + _cell(row.get("notes", "")))
    tr.write_line("lost: tasks without an accepted result; 2x: results accepted twice (coordinator records and "
                  "task side effects); re-run: tasks executed more than once (side effects)")
    path = config.stash.get(_PATH_KEY, None)
    if path is not None:
        tr.write_line(f"figures written to {path}")


@pytest.fixture(scope="module")
def fleet_root(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(Path(str(request.node.name)).stem.replace("test_", "faults-"))


def close_fleet(fleet: Fleet) -> Iterator[Fleet]:
    try:
        yield fleet
    finally:
        fleet.close()
