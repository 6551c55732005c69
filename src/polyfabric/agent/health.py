"""Is this node fit to run tasks? Built-in probes plus an optional script of the owner's.

The agent reports the results with its heartbeat; a failed check drains the node (no new tasks)
until it passes again. The built-in probes catch what breaks every task (a read-only or full data
directory, exhausted memory). The owner's script, like Slurm's HealthCheckProgram, covers the
rest (a mount, a licence server, a GPU's ECC errors): exit status 0 means healthy, and the last
non-empty line it prints is the message. It runs in its own process group, which is killed as a
whole when it exceeds its timeout, so a hanging check cannot pile up processes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MIN_FREE_FRACTION",
    "check_data_dir_writable",
    "check_disk_free",
    "check_memory_available",
    "run_checks",
    "run_script",
]

DEFAULT_TIMEOUT_S = 10.0
MIN_FREE_FRACTION = 0.01
MESSAGE_LIMIT = 200

Check = dict[str, Any]


def run_checks(data_dir: Path, script: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> list[Check]:
    """Every check's {"name", "ok", "message", "duration_ms"}: the built-in ones, then the script."""
    data_dir = Path(data_dir)
    checks = [check_data_dir_writable(data_dir), check_memory_available(), check_disk_free(data_dir)]
    if script is not None:
        checks.append(run_script(Path(script), timeout=timeout, data_dir=data_dir))
    return checks


def check_data_dir_writable(data_dir: Path) -> Check:
    """Write, fsync and remove a small file in the data directory."""
    started = time.perf_counter()
    probe = Path(data_dir) / f".health-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"polyfabric health probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(probe)
    except OSError as exc:
        message = f"cannot write in {data_dir}: {exc.strerror or exc}"
        return _result("data_dir_writable", False, message, started)
    return _result("data_dir_writable", True, f"{data_dir} is writable", started)


def check_memory_available() -> Check:
    """More than 1% of memory available."""
    started = time.perf_counter()
    memory = psutil.virtual_memory()
    fraction = memory.available / memory.total if memory.total else 0.0
    ok = fraction > MIN_FREE_FRACTION
    return _result("memory_available", ok, f"{fraction:.1%} of memory available", started)


def check_disk_free(data_dir: Path) -> Check:
    """More than 1% of the data directory's file system free."""
    started = time.perf_counter()
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError as exc:
        return _result("disk_free", False, f"cannot measure {data_dir}: {exc.strerror or exc}", started)
    fraction = usage.free / usage.total if usage.total else 0.0
    ok = fraction > MIN_FREE_FRACTION
    return _result("disk_free", ok, f"{fraction:.1%} of the disk holding {data_dir} free", started)


def run_script(script: Path, *, timeout: float = DEFAULT_TIMEOUT_S, data_dir: Path | None = None) -> Check:
    """Run the owner's health script (an executable, no arguments) with a timeout.

    Exit status 0: ok. Non-zero, a signal, a timeout, or a script that cannot start: failed.
    The message is the last non-empty line of stdout and stderr together (at most 200
    characters), else a description of the outcome. The script gets POLYFABRIC_DATA_DIR.
    """
    started = time.perf_counter()
    env = dict(os.environ)
    if data_dir is not None:
        env["POLYFABRIC_DATA_DIR"] = str(data_dir)
    try:
        proc = subprocess.Popen(
            [str(script)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session and process group, to kill it whole
            env=env,
            cwd=str(data_dir) if data_dir is not None and Path(data_dir).is_dir() else None,
        )
    except OSError as exc:
        return _result("script", False, f"cannot run {script}: {exc.strerror or exc}", started)

    timed_out = False
    with proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Either the script hangs, or it exited and left children holding its output open.
            timed_out = proc.poll() is None
            _kill_group(proc)
            try:
                output, _ = proc.communicate(timeout=2.0)
            except subprocess.TimeoutExpired:
                # A descendant escaped the group (setsid) and still holds the pipe: stop reading.
                output = b""
                proc.kill()
                proc.wait()
        else:
            _kill_group(proc)  # leave nothing behind that the script started in the background
    last = _last_line(output)
    if timed_out:
        message = f"timed out after {timeout:g}s" + (f": {last}" if last else "")
        return _result("script", False, message, started)
    code = proc.returncode
    if code == 0:
        return _result("script", True, last or "ok", started)
    if code < 0:
        name = _signal_name(-code)
        return _result("script", False, last or f"killed by {name}", started)
    return _result("script", False, last or f"exit status {code}", started)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if not hasattr(os, "killpg"):
        proc.kill()
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _last_line(output: bytes | None) -> str:
    text = (output or b"").decode("utf-8", "replace")
    for line in reversed(text.splitlines()):
        if line.strip():
            return _truncate(line.strip())
    return ""


def _truncate(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _result(name: str, ok: bool, message: str, started: float) -> Check:
    return {
        "name": name,
        "ok": ok,
        "message": _truncate(message),
        "duration_ms": round((time.perf_counter() - started) * 1000.0, 3),
    }
