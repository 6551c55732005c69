"""Shared fixtures: databases on both backends, and real processes started once per module.

PostgreSQL comes from POLYFABRIC_TEST_PG (`.ci/run` and the Makefile set it). Without it the
PostgreSQL half of a test is skipped, except when CI=true: there a missing PostgreSQL fails.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyfabric.testing import postgres_available
from polyfabric.testing.databases import drop_postgres_database, fresh_postgres_url

BACKENDS = ["sqlite", "postgresql"]


def _require_postgres() -> None:
    if postgres_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but PostgreSQL is not reachable through POLYFABRIC_TEST_PG")
    pytest.skip("PostgreSQL not available (set POLYFABRIC_TEST_PG)")


def make_db_url(backend: str, directory: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{directory / 'polyfabric.db'}"
    _require_postgres()
    return fresh_postgres_url()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module", params=BACKENDS)
def module_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    url = make_db_url(backend, tmp_path)
    yield url
    if backend == "postgresql":
        drop_postgres_database(url)


@pytest.fixture(scope="module")
def module_db_url(module_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = make_db_url(module_backend, tmp_path_factory.mktemp("db"))
    yield url
    if module_backend == "postgresql":
        drop_postgres_database(url)


# -- the fault-injection suite's report (tests/faults): collected from the test reports, which
# xdist forwards to its controller, so a whole-tree run prints the table too ----------------------

FAULT_PROPERTY = "fault_figures"
_rows: list[dict[str, Any]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == FAULT_PROPERTY:
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
