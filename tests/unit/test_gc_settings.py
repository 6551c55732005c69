"""The coordinator's GC setting (coordinator/gc_settings.py): `polyfabric server --gc-threshold`."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from polyfabric.cli.main import cli
from polyfabric.coordinator.gc_settings import DEFAULT_GC_THRESHOLD, apply_gc_threshold
from polyfabric.coordinator.settings import CoordinatorSettings


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def test_the_young_threshold_is_raised_and_the_older_ones_kept(thresholds):
    middle, old = thresholds[1:]
    assert apply_gc_threshold(25_000) == (25_000, middle, old) == gc.get_threshold()
    gc.set_threshold(700, middle, old)
    assert apply_gc_threshold(0) == (700, middle, old)  # 0 leaves CPython's
    with pytest.raises(ValueError, match="0 or more"):
        apply_gc_threshold(-1)


def test_the_server_defaults_to_a_raised_threshold_and_refuses_a_negative_one():
    assert CoordinatorSettings(db_url="sqlite://", data_dir=".").gc_threshold == DEFAULT_GC_THRESHOLD > 700
    out = CliRunner().invoke(cli, ["server", "--gc-threshold", "-5"])
    assert out.exit_code == 2 and "--gc-threshold" in out.output and "Traceback" not in out.output
