"""Real coordinator and agent processes for end-to-end tests and benchmarks.

Each process gets its own data dir and a log file; `kill()` sends any signal (SIGKILL for crash
tests, SIGSTOP/SIGCONT for partitions), `stop()` ends it cleanly, `restart()` starts it again with
the same data dir (the same node, the same database).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from polyfabric.client import ApiClient
from polyfabric.testing.waiting import wait_until

__all__ = ["AgentProcess", "CoordinatorProcess", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Process:
    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.env = env
        self.netns: str | None = None  # run inside this network namespace (tests/e2e/test_topology_netns.py)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        # `ip netns exec NS` execs the program inside that network namespace: same pid, same signals.
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "polyfabric", *self.args], stdout=log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            if sig == signal.SIGKILL:
                self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class CoordinatorProcess(_Process):
    def __init__(self, data_dir: Path, db_url: str | None = None, *, port: int | None = None,
                 heartbeat_interval: float = 0.5, unreachable_after: float = 1.5, down_after: float = 3.0,
                 extra_args: list[str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = db_url or f"sqlite:///{self.data_dir / 'polyfabric.db'}"
        args = ["server", "--db", self.db_url, "--listen", f"127.0.0.1:{self.port}",
                "--data-dir", str(self.data_dir), "--heartbeat-interval", str(heartbeat_interval),
                "--unreachable-after", str(unreachable_after), "--down-after", str(down_after),
                "--log-level", "info", *(extra_args or [])]
        super().__init__(args, self.data_dir / "coordinator.log")

    def start(self, timeout: float = 30.0) -> CoordinatorProcess:  # type: ignore[override]
        super().start()
        wait_until(self._healthy, timeout=timeout, message=f"coordinator at {self.url}\n{self.log()}")
        return self

    def _healthy(self) -> bool:
        if not self.alive():
            raise AssertionError(f"coordinator exited:\n{self.log()}")
        import httpx

        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def restart(self) -> CoordinatorProcess:
        self.stop()
        return self.start()

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def api(self, token: str | None = None) -> ApiClient:
        return ApiClient(self.url, token or self.admin_token)

    def join_token(self, domain: str = "test", uses: int | None = None) -> str:
        with self.api() as client:
            return str(client.post("/v1/tokens/join", {"domain": domain, "uses": uses})["token"])


class AgentProcess(_Process):
    def __init__(self, coordinator_url: str, data_dir: Path, *, name: str, join_token: str | None = None,
                 labels: str = "", extra_args: list[str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.name = name
        args = ["agent", "--coordinator", coordinator_url, "--name", name, "--data-dir", str(self.data_dir),
                "--health-interval", "1"]
        if join_token:
            args += ["--join-token", join_token]
        if labels:
            args += ["--labels", labels]
        super().__init__([*args, *(extra_args or [])], self.data_dir.parent / f"{name}.log")

    @property
    def node_id(self) -> str | None:
        import json

        path = self.data_dir / "agent.json"
        return json.loads(path.read_text())["node_id"] if path.exists() else None

    def restart(self) -> AgentProcess:
        self.stop()
        self.start()
        return self
