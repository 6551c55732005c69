"""The fault-injection suite's report: each scenario's figures, printed as a table and written as JSON.

A scenario calls the `fault_report` fixture with its figures (tasks lost, results accepted twice,
tasks re-executed, recovery time, ...) *before* it asserts on them, so a failing scenario still
shows what it measured. The figures travel in the test report's `user_properties` (so they also
cross from pytest-xdist workers to the controller); this plugin collects them, prints a table in
the terminal summary and writes them as JSON to `$POLYFABRIC_FAULT_REPORT`, or else to
`fault-report.json` in pytest's base temporary directory (the path is printed under the table).
The hooks that collect, print and write the figures live in `tests/conftest.py`, so that the
xdist controller of a whole-tree run (`make test`) loads them too and prints the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PROPERTY = "fault_figures"  # read by the report hooks in tests/conftest.py


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


@pytest.fixture(scope="module")
def fleet_root(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A directory per test module (and backend) for its processes' data dirs, logs and ledgers."""
    return tmp_path_factory.mktemp(Path(str(request.node.name)).stem.replace("test_", "faults-"))
