"""agent/usage.py: what an attempt used, measured on real processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from polyfabric.agent.usage import UsageMeter, read_proc

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass"


def _run(code: str, meter: UsageMeter) -> int:
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    meter.watch_group(proc.pid)
    meter.reap(proc)
    assert proc.returncode is not None
    return proc.returncode


def test_a_command_burning_cpu_is_charged_what_the_kernel_counted():
    meter = UsageMeter()
    assert _run(BURN.format(s=0.6), meter) == 0
    usage = meter.finish()
    assert 0.55 <= usage["cpu_s"] <= 2.0, usage
    assert usage["wall_s"] >= 0.55 and usage["method"] == "wait4+proc"
    assert usage["max_rss_bytes"] > 1 << 20 and 0 < usage["memory_byte_s"] <= usage["max_rss_bytes"] * usage["wall_s"]
    assert meter.finish() is usage  # the same figures on every later call


def test_cpu_of_waited_for_children_counts_and_the_exit_code_is_kept():
    child = BURN.format(s=0.4)
    code = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {child!r}])\nsys.exit(3)"
    meter = UsageMeter()
    assert _run(code, meter) == 3
    assert meter.finish()["cpu_s"] >= 0.35


def test_gpu_seconds_are_the_allocation_times_wall_time():
    meter = UsageMeter(gpus=2)
    assert _run("import time; time.sleep(0.3)", meter) == 0
    usage = meter.finish()
    assert usage["cpu_s"] < 0.3
    assert usage["gpu_s"] == pytest.approx(2 * usage["wall_s"], abs=1e-5)


def test_a_warm_worker_is_charged_only_the_cpu_of_its_call():
    worker = subprocess.Popen([sys.executable, "-c", "import sys, time\n" + BURN.format(s=0.3) + "\n"
                               "sys.stdin.readline()\n" + BURN.format(s=0.5) + "\nsys.stdin.readline()"],
                              stdin=subprocess.PIPE, start_new_session=True, text=True)
    try:
        import time

        deadline = time.monotonic() + 20
        while (read_proc(worker.pid) or (0.0, 0.0, 0))[0] < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)  # the worker's start-up burn, not the call's
        meter = UsageMeter()
        meter.begin_worker(worker.pid)
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
        while (read_proc(worker.pid) or (0.0, 0.0, 0))[0] < 0.75 and time.monotonic() < deadline:
            time.sleep(0.05)
        meter.end_worker(worker.pid)
        usage = meter.finish()
        assert usage["method"].startswith("worker-cpu-delta")
        assert 0.4 <= usage["cpu_s"] <= 1.0, usage
    finally:
        worker.kill()
        worker.wait()
        if worker.stdin is not None:
            worker.stdin.close()


def test_read_proc_of_a_gone_process_is_none():
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert read_proc(proc.pid) is None
