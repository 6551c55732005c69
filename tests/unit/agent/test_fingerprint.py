"""Capacity detection and the owner's overrides."""

from __future__ import annotations

import types

import pytest

import polyfabric.agent.fingerprint as fingerprint
from polyfabric.agent.fingerprint import _cgroup, cpu, disk, gpu, memory, network
from polyfabric.domain.errors import ValidationError
from polyfabric.domain.resources import Gpu, Resources

A100 = Gpu(model="NVIDIA A100-SXM4-80GB", memory_bytes=80 * 2**30, uuid="GPU-1", index=0)
H100 = Gpu(model="NVIDIA H100 80GB HBM3", memory_bytes=80 * 2**30, uuid="GPU-2", index=1)


@pytest.fixture
def no_gpus(monkeypatch):
    monkeypatch.setattr(gpu, "_nvml", lambda: None)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(fingerprint, "detect_gpus", lambda: [A100, H100])


def test_shape_without_gpus(tmp_path, no_gpus):
    result = fingerprint.detect(tmp_path, {})
    assert set(result) == {"capacity", "network", "platform"}
    capacity = Resources.from_dict(result["capacity"])
    assert capacity.cpu_millis >= 1000 and capacity.cpu_millis % 1 == 0
    assert capacity.memory_bytes > 0
    assert capacity.disk_bytes == disk.disk_space(tmp_path).total_bytes
    assert capacity.gpus == 0 and result["capacity"]["gpu_models"] == []
    assert capacity.slots == max(1, capacity.cpu_millis // 1000)
    assert set(result["platform"]) == {"os", "arch", "python"}
    assert set(result["network"]) == {"hostname", "addresses", "interfaces"}


def test_overrides(tmp_path, no_gpus):
    capacity = fingerprint.detect(
        tmp_path, {"cpu": "500m", "memory": "4Gi", "disk": "10G", "gpus": 0, "slots": None}
    )["capacity"]
    assert capacity["cpu_millis"] == 500
    assert capacity["memory_bytes"] == 4 * 2**30
    assert capacity["disk_bytes"] == 10**10
    assert capacity["gpus"] == 0
    assert capacity["slots"] == 1  # at least one slot for half a core


def test_slots_default_to_whole_cores_and_can_be_set(tmp_path, no_gpus):
    assert fingerprint.detect(tmp_path, {"cpu": "2"})["capacity"]["slots"] == 2
    assert fingerprint.detect(tmp_path, {"cpu": 3.5})["capacity"]["slots"] == 3
    assert fingerprint.detect(tmp_path, {"cpu": "2", "slots": 8})["capacity"]["slots"] == 8
    assert fingerprint.detect(tmp_path, {"slots": "4"})["capacity"]["slots"] == 4


def test_detected_gpus_and_the_gpus_override(tmp_path, two_gpus):
    capacity = fingerprint.detect(tmp_path, {})["capacity"]
    assert capacity["gpus"] == 2
    assert [g["model"] for g in capacity["gpu_models"]] == [A100.model, H100.model]
    one = fingerprint.detect(tmp_path, {"gpus": 1})["capacity"]
    assert one["gpus"] == 1 and [g["uuid"] for g in one["gpu_models"]] == ["GPU-1"]


def test_gpus_zero_does_not_even_open_nvml(tmp_path, monkeypatch):
    def boom():
        raise AssertionError("NVML must not be touched when GPUs are disabled")

    monkeypatch.setattr(fingerprint, "detect_gpus", boom)
    assert fingerprint.detect(tmp_path, {"gpus": 0})["capacity"]["gpus"] == 0


@pytest.mark.parametrize(
    "overrides",
    [{"cpus": "2"}, {"cpu": "two"}, {"memory": "lots"}, {"gpus": -1}, {"gpus": True}, {"slots": 1.5}],
)
def test_bad_overrides_are_refused(tmp_path, no_gpus, overrides):
    with pytest.raises(ValidationError):
        fingerprint.detect(tmp_path, overrides)


# --- detectors -------------------------------------------------------------------------------


def test_cpu_and_memory_detectors():
    assert cpu.logical_cores() >= 1
    assert cpu.cpu_millis() >= 1
    assert memory.total_bytes() > 0


def test_cgroup_limits(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/agent.slice/agent.service\n")
    (tmp_path / "agent.slice" / "agent.service").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "agent.slice" / "cpu.max").write_text("400000 100000\n")
    (tmp_path / "agent.slice" / "agent.service" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "agent.slice" / "memory.max").write_text("max\n")
    (tmp_path / "agent.slice" / "agent.service" / "memory.max").write_text(f"{2**30}\n")
    assert _cgroup.cpu_limit_millis(tmp_path, proc) == 1500
    assert _cgroup.memory_limit_bytes(tmp_path, proc) == 2**30
    (tmp_path / "agent.slice" / "agent.service" / "cpu.max").write_text("max 100000\n")
    assert _cgroup.cpu_limit_millis(tmp_path, proc) == 4000
    empty = tmp_path / "none"
    assert _cgroup.cpu_limit_millis(empty, empty / "cgroup") is None
    assert _cgroup.memory_limit_bytes(empty, empty / "cgroup") is None


def test_disk_space_of_a_directory_that_does_not_exist_yet(tmp_path):
    space = disk.disk_space(tmp_path / "not" / "yet")
    assert space == disk.disk_space(tmp_path)
    assert 0 <= space.free_bytes <= space.total_bytes


def test_network_leaves_out_loopback():
    result = network.detect_network()
    assert isinstance(result["hostname"], str)
    assert "127.0.0.1" not in result["addresses"] and "::1" not in result["addresses"]
    assert all(i["name"] != "lo" for i in result["interfaces"])
    for interface in result["interfaces"]:
        assert set(interface) == {"name", "up", "speed_mbps", "mtu", "addresses"}


# --- GPUs through a fake NVML ----------------------------------------------------------------


class FakeNvml(types.SimpleNamespace):
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, devices, *, fail_init=False):
        super().__init__(devices=devices, fail_init=fail_init, inits=0, shutdowns=0)

    def nvmlInit(self):
        if self.fail_init:
            raise OSError("NVML Shared Library Not Found")
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.devices[index]

    def nvmlDeviceGetName(self, handle):
        return handle["name"]

    def nvmlDeviceGetUUID(self, handle):
        return handle["uuid"]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(total=handle["total"], used=handle["used"], free=0)

    def nvmlDeviceGetUtilizationRates(self, handle):
        return types.SimpleNamespace(gpu=handle["util"], memory=0)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        if "temp" not in handle:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return handle["temp"]


DEVICES = [
    {
        "name": b"NVIDIA A100-SXM4-80GB",
        "uuid": b"GPU-1",
        "total": 80 * 2**30,
        "used": 2**30,
        "util": 40,
        "temp": 51,
    },
    {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-2", "total": 80 * 2**30, "used": 0, "util": 0},
]


def test_detect_gpus_reads_nvml(monkeypatch):
    fake = FakeNvml(DEVICES)
    monkeypatch.setattr(gpu, "_nvml", lambda: fake)
    assert gpu.detect_gpus() == [
        Gpu(model="NVIDIA A100-SXM4-80GB", memory_bytes=80 * 2**30, uuid="GPU-1", index=0),
        Gpu(model="NVIDIA H100 80GB HBM3", memory_bytes=80 * 2**30, uuid="GPU-2", index=1),
    ]
    assert fake.inits == fake.shutdowns == 1


def test_detect_gpus_without_nvml_is_empty(monkeypatch):
    monkeypatch.setattr(gpu, "_nvml", lambda: None)
    assert gpu.detect_gpus() == []
    monkeypatch.setattr(gpu, "_nvml", lambda: FakeNvml(DEVICES, fail_init=True))
    assert gpu.detect_gpus() == []


def test_nvml_session_samples_and_stays_open(monkeypatch):
    fake = FakeNvml(DEVICES)
    monkeypatch.setattr(gpu, "_nvml", lambda: fake)
    session = gpu.NvmlSession()
    first = session.sample()
    assert first == [
        {
            "index": 0,
            "util_percent": 40.0,
            "memory_used_bytes": 2**30,
            "memory_total_bytes": 80 * 2**30,
            "temperature_c": 51.0,
        },
        {
            "index": 1,
            "util_percent": 0.0,
            "memory_used_bytes": 0,
            "memory_total_bytes": 80 * 2**30,
            "temperature_c": None,
        },
    ]
    session.sample()
    assert fake.inits == 1
    session.close()
    assert fake.shutdowns == 1


def test_nvml_session_remembers_a_failure(monkeypatch):
    fake = FakeNvml(DEVICES, fail_init=True)
    calls = []
    monkeypatch.setattr(gpu, "_nvml", lambda: calls.append(1) or fake)
    session = gpu.NvmlSession(retry_after_s=3600)
    assert session.sample() == [] and session.sample() == []
    assert len(calls) == 1
