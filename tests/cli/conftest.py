"""CLI fixtures: a fake coordinator per test and a way to run `polyfabric ...` against it in-process.

`cli(...)` runs the real click command tree with CliRunner (stdout and stderr apart), with
POLYFABRIC_URL / POLYFABRIC_TOKEN pointing at the fake and no config file to fall back on; an
exception that would reach a user as a traceback fails the test instead of being swallowed.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from polyfabric.cli.main import cli as polyfabric

from .fake import TOKEN, FakeCoordinator


@pytest.fixture
def fake() -> Iterator[FakeCoordinator]:
    coordinator = FakeCoordinator().start()
    try:
        yield coordinator
    finally:
        coordinator.stop()


@pytest.fixture
def cli(fake: FakeCoordinator, tmp_path: Path) -> Callable[..., Result]:
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, url: str | None = None) -> Result:
        env = {"POLYFABRIC_URL": url or fake.url, "POLYFABRIC_TOKEN": TOKEN,
               "POLYFABRIC_CONFIG": str(tmp_path / "no-client-config.json"), "POLYFABRIC_TOKEN_FILE": None,
               "POLYFABRIC_DOMAIN": None}
        return runner.invoke(polyfabric, list(args), env=env, input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def workflow(tmp_path: Path) -> Callable[[str], str]:
    """Write a workflow file (dedented YAML) and return its path."""
    counter = iter(range(1_000_000))

    def write(text: str) -> str:
        path = tmp_path / f"wf-{next(counter)}.yaml"
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write
