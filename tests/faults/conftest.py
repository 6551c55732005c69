"""The fault-injection suite's report: each scenario's figures, printed as a table and written as JSON.

A scenario calls the `fault_report` fixture with its figures (tasks lost, results accepted twice,
tasks re-executed, recovery time, ...) *before* it asserts on them, so a failing scenario still
shows what it measured. The figures travel in the test report's `user_properties` (so they also
cross from pytest-xdist workers to the controller); this plugin collects them, prints a table in
the terminal summary and writes them as JSON to `$POLYFABRIC_FAULT_REPORT`, or else to
`fault-report.json` in pytest's base temporary directory (the path is printed under the table).
Under xdist each worker also writes its own rows (`fault-report-gwN.json` beside the named file,
or `fault-report.json` in the worker's base temporary directory): when the whole `tests` tree
runs, the controller does not load this conftest and prints no table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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
    if not _rows:
        return
    path = _report_path(config)
    if _is_worker(config):
        # An xdist worker also hands its rows to the controller through the reports, but a
        # controller started on `tests` as a whole has not loaded this conftest: so each worker
        # writes its own file too (its basetemp, or the named file with the worker's id added).
        worker = config.workerinput["workerid"]  # type: ignore[attr-defined]
        if os.environ.get("POLYFABRIC_FAULT_REPORT"):
            path = path.with_name(f"{path.stem}-{worker}{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scenarios": _rows}, indent=2, default=str) + "\n")
    config.stash[_PATH_KEY] = path


_PATH_KEY = pytest.StashKey[Path]()

COLUMNS = [("scenario", "scenario"), ("backend", "backend"), ("tasks", "tasks"), ("lost", "lost"),
           ("accepted_twice", "2x"), ("re_executed", "re-run"), ("recovery_s", "recovery s"), ("outcome", "outcome"),
           ("notes", "notes")]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The report as text lines: one row per scenario run, columns as wide as their widest cell."""
    cells = [[_cell(row.get(key)) for key, _ in COLUMNS] for row in rows]
    widths = [max([len(head), *(len(line[i]) for line in cells)]) for i, (_, head) in enumerate(COLUMNS)]
    lines = ["  ".join(head.ljust(w) for (_, head), w in zip(COLUMNS, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _rows or _is_worker(config):
        return
    tr = terminalreporter
    tr.section("fault-injection report")
    for line in table(_rows):
        tr.write_line(line)
    tr.write_line("lost: tasks without an accepted result; 2x: results accepted twice (coordinator records and "
                  "task side effects); re-run: tasks executed more than once (side effects); recovery: see notes")
    path = config.stash.get(_PATH_KEY, None)
    if path is not None:
        tr.write_line(f"figures written to {path}")


@pytest.fixture(scope="module")
def fleet_root(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A directory per test module (and backend) for its processes' data dirs, logs and ledgers."""
    return tmp_path_factory.mktemp(Path(str(request.node.name)).stem.replace("test_", "faults-"))
