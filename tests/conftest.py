"""Shared fixtures: databases on both backends, and real processes started once per module.

PostgreSQL comes from POLYFABRIC_TEST_PG (`.ci/run` and the Makefile set it). Without it the
PostgreSQL half of a test is skipped, except when CI=true: there a missing PostgreSQL fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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
