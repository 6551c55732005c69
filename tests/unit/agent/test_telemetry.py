"""Telemetry samples: the fields the heartbeat carries, cheap enough for every heartbeat."""

from __future__ import annotations

import time

from polyfabric.agent import telemetry
from polyfabric.agent.fingerprint import gpu

FIELDS = {
    "cpu_percent",
    "memory_percent",
    "memory_used_bytes",
    "disk_percent",
    "disk_free_bytes",
    "load1",
    "load5",
    "load15",
    "processes",
    "gpus",
}


def test_sample_has_every_field(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "_SESSION", gpu.NvmlSession())
    monkeypatch.setattr(gpu, "_nvml", lambda: None)
    sample = telemetry.sample(tmp_path)
    assert set(sample) == FIELDS
    assert 0.0 <= sample["cpu_percent"] <= 100.0 * 1024
    assert 0.0 < sample["memory_percent"] <= 100.0
    assert sample["memory_used_bytes"] > 0
    assert 0.0 <= sample["disk_percent"] <= 100.0
    assert sample["disk_free_bytes"] >= 0
    assert sample["processes"] >= 1
    assert sample["gpus"] == []


def test_sample_is_cheap(tmp_path):
    telemetry.sample(tmp_path)
    started = time.perf_counter()
    for _ in range(20):
        telemetry.sample(tmp_path)
    assert (time.perf_counter() - started) / 20 < 0.05  # generous: the typical figure is < 2 ms
