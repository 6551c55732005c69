"""Checkpoints on the agent: restore one before an attempt starts, save them while it runs.

How a task reaches its agent (docs/protocol.md, "Checkpoints"): the agent listens on ONE Unix
socket, in a private directory of its own (`/tmp/pf-agent-XXXX/agent.sock`, 0700: tasks run as
the agent's user; the path stays short, under the 108-byte limit of socket paths). Every attempt
gets a random token. Both go to the task in its environment, with two more:

    POLYFABRIC_AGENT_SOCKET       the socket
    POLYFABRIC_CHECKPOINT_TOKEN   this attempt's token (it names the attempt; others are refused)
    POLYFABRIC_CHECKPOINT_DIR     WORKSPACE/checkpoint: restored before the task starts
    POLYFABRIC_STOP_FILE          WORKSPACE/.polyfabric-stop: exists once the task is asked to
                                  checkpoint and stop (`ctx.should_stop()`)

A save is one connection: the task sends a JSON line `{"op": "checkpoint", "token", "format":
"json"|"bytes"|"tar", "size": N}` and N bytes; the agent uploads them to the coordinator (in
parts, services/checkpoints.py) and answers one JSON line, `{"ok": true, "seq", "size", "sha256"}`
once the coordinator has stored it durably, or `{"ok": false, "error": "..."}` (refused: the
attempt is no longer current; or the coordinator could not be reached within UPLOAD_TIMEOUT_S).

Restore: a lease that names a checkpoint (`"checkpoint": {"seq", "size", "sha256", "format"}`)
has its latest checkpoint fetched (in parts, sha256 checked) into POLYFABRIC_CHECKPOINT_DIR before
the task starts: a `tar` checkpoint (what `polyfabric checkpoint` saves) is unpacked there, a
`json` or `bytes` one (what `ctx.checkpoint(state)` saves) is written there as STATE_JSON or
STATE_BYTES, which `ctx.restore()` reads. An attempt whose checkpoint cannot be fetched fails,
naming why (it does not silently start over).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import os
import secrets
import shutil
import signal
import socketserver
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from polyfabric.agent.runner.lease import Ident, Lease
from polyfabric.agent.runner.process import SetupError
from polyfabric.agent.runner.workspace import Workspace
from polyfabric.client import AgentClient, ApiError, CoordinatorUnreachable

__all__ = ["CHECKPOINT_DIR", "CheckpointAgent", "CheckpointUnavailable", "STATE_BYTES", "STATE_JSON", "STOP_FILE"]

log = logging.getLogger("polyfabric.agent.checkpoints")

CHECKPOINT_DIR = "checkpoint"
STOP_FILE = ".polyfabric-stop"
STATE_JSON = "_polyfabric_state.json"
STATE_BYTES = "_polyfabric_state.bin"
PATH = "/v1/agent/checkpoint"
FETCH_PATH = "/v1/agent/checkpoint/fetch"
PART_BYTES = 512 * 1024
MAX_BYTES = 256 * 1024 * 1024
UPLOAD_TIMEOUT_S = 120.0  # how long a save keeps trying while the coordinator cannot be reached
FETCH_TIMEOUT_S = 60.0


class CheckpointUnavailable(SetupError):
    """The attempt's checkpoint cannot be restored: it fails with this message."""


@dataclass
class _Registered:
    lease: Lease
    workspace: Workspace
    stop_asked: bool = False
    stop_reason: str = ""


class CheckpointAgent:
    def __init__(self, client: AgentClient | None) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._by_token: dict[str, _Registered] = {}
        self._by_ident: dict[Ident, str] = {}
        self._dir: str | None = None
        self.socket_path: str | None = None
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    # -- life ------------------------------------------------------------------------------

    def start(self, data_dir: Path | None = None) -> CheckpointAgent:
        """Listen on DATA_DIR/checkpoint.sock, or in a private directory under /tmp when that path
        is too long for a Unix socket."""
        preferred = os.path.join(os.path.abspath(data_dir), "checkpoint.sock") if data_dir is not None else None
        if preferred is not None and len(preferred.encode()) < 100:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(preferred)  # left by an agent that was killed
            self.socket_path = preferred
        else:
            self._dir = tempfile.mkdtemp(prefix="pf-agent-")
            os.chmod(self._dir, 0o700)
            self.socket_path = os.path.join(self._dir, "agent.sock")
        agent = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                agent._serve(self.rfile, self.wfile)

        server = socketserver.ThreadingUnixStreamServer(self.socket_path, Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="pf-checkpoints", daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        elif self.socket_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)

    # -- attempts ----------------------------------------------------------------------------

    def prepare(self, lease: Lease, workspace: Workspace) -> dict[str, str]:
        """Make the attempt's checkpoint directory, restore its checkpoint into it, and return
        the environment the task gets. Raises CheckpointUnavailable."""
        directory = workspace.path / CHECKPOINT_DIR
        if lease.command is not None or lease.checkpoint:  # a function's is made when it first saves
            directory.mkdir(mode=0o700, exist_ok=True)
        if lease.checkpoint:
            self._restore(lease, directory)
        token = secrets.token_hex(16)
        with self._lock:
            self._by_token[token] = _Registered(lease, workspace)
            self._by_ident[lease.ident] = token
        env = {"POLYFABRIC_CHECKPOINT_DIR": str(directory),
               "POLYFABRIC_STOP_FILE": str(workspace.path / STOP_FILE)}
        if self.socket_path is not None and self.client is not None:
            env["POLYFABRIC_AGENT_SOCKET"] = self.socket_path
            env["POLYFABRIC_CHECKPOINT_TOKEN"] = token
        return env

    def release(self, ident: Ident) -> str | None:
        """The attempt ended: forget it. Returns why it had been asked to checkpoint and stop, if
        it had (then it ended because of that, whatever it returned: see TaskRunner)."""
        with self._lock:
            token = self._by_ident.pop(ident, None)
            entry = self._by_token.pop(token, None) if token is not None else None
        return entry.stop_reason if entry is not None and entry.stop_asked else None

    def ask_stop(self, ident: Ident, reason: str, pgid: int | None) -> bool:
        """The coordinator asks the attempt to checkpoint and stop: the stop file appears (what
        `ctx.should_stop()` looks at) and a command's process group gets SIGTERM, once."""
        with self._lock:
            token = self._by_ident.get(ident)
            entry = self._by_token.get(token) if token is not None else None
            if entry is None or entry.stop_asked:
                return False
            entry.stop_asked, entry.stop_reason = True, reason
        log.info("asking %s attempt %d to checkpoint and stop: %s", ident[0], ident[1], reason)
        with contextlib.suppress(OSError):
            (entry.workspace.path / STOP_FILE).write_text(reason + "\n")
        if entry.lease.command is not None and pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        return True

    # -- restore -----------------------------------------------------------------------------

    def _restore(self, lease: Lease, directory: Path) -> None:
        if self.client is None:
            raise CheckpointUnavailable("this agent cannot fetch checkpoints")
        data, meta = self.fetch(lease.task_id, lease.attempt)
        fmt = meta["format"]
        if fmt == "tar":
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                    archive.extractall(directory, filter="data")
            except (tarfile.TarError, OSError) as exc:
                raise CheckpointUnavailable(f"cannot unpack checkpoint {meta['seq']}: {exc}") from None
        else:
            (directory / (STATE_JSON if fmt == "json" else STATE_BYTES)).write_bytes(data)
        log.info("%s attempt %d: restored checkpoint %d (%d bytes)", lease.task_id, lease.attempt, meta["seq"],
                 len(data))

    def fetch(self, task_id: str, attempt: int) -> tuple[bytes, dict[str, Any]]:
        """The task's latest checkpoint (bytes, metadata), checked against its sha256."""
        assert self.client is not None
        buffer = bytearray()
        seq: int | None = None
        deadline = time.monotonic() + FETCH_TIMEOUT_S
        failures = 0
        while True:
            try:
                part = self.client.post(FETCH_PATH, {"task_id": task_id, "attempt": attempt, "seq": seq,
                                                     "offset": len(buffer)})
            except ApiError as exc:
                if exc.is_retryable and time.monotonic() < deadline:
                    failures += 1
                    time.sleep(min(0.25 * 2 ** failures, 2.0))
                    continue
                raise CheckpointUnavailable(f"cannot fetch the task's checkpoint: {exc.status} {exc.message}") from None
            except CoordinatorUnreachable as exc:
                if time.monotonic() < deadline:
                    failures += 1
                    time.sleep(min(0.25 * 2 ** failures, 2.0))
                    continue
                raise CheckpointUnavailable(f"cannot fetch the task's checkpoint: {exc.message}") from None
            seq = part["seq"]
            buffer += base64.b64decode(part["data"])
            if part["eof"] or len(buffer) >= part["size"]:
                break
        if hashlib.sha256(buffer).hexdigest() != part["sha256"] or len(buffer) != part["size"]:
            raise CheckpointUnavailable(f"checkpoint {seq} arrived damaged (size or sha256 differ)")
        return bytes(buffer), part

    # -- save: the local socket ----------------------------------------------------------------

    def _serve(self, rfile: Any, wfile: Any) -> None:
        try:
            header = orjson.loads(rfile.readline(4096))
            reply = self._save(header, rfile)
        except orjson.JSONDecodeError as exc:
            reply = {"ok": False, "error": f"malformed request: {exc}"}
        except Exception as exc:  # one bad request must not end the server
            log.exception("checkpoint request failed")
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):
            wfile.write(orjson.dumps(reply) + b"\n")
            wfile.flush()

    def _save(self, header: dict[str, Any], rfile: Any) -> dict[str, Any]:
        if not isinstance(header, dict) or header.get("op") != "checkpoint":
            return {"ok": False, "error": "unknown request (expected op 'checkpoint')"}
        with self._lock:
            entry = self._by_token.get(str(header.get("token")))
        if entry is None:
            return {"ok": False, "error": "unknown token: this attempt is over (or the token is wrong)"}
        fmt, size = header.get("format"), header.get("size")
        if fmt not in ("json", "bytes", "tar"):
            return {"ok": False, "error": f"format must be json, bytes or tar, not {fmt!r}"}
        if not isinstance(size, int) or size < 0 or size > MAX_BYTES:
            return {"ok": False, "error": f"size must be 0..{MAX_BYTES} bytes, not {size!r}"}
        data = rfile.read(size)
        if len(data) != size:
            return {"ok": False, "error": f"the checkpoint ended after {len(data)} of {size} bytes"}
        try:
            out = self.upload(entry.lease, fmt, data)
        except CheckpointUnavailable as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, **out["checkpoint"], "stop": bool(out.get("stop"))}

    def upload(self, lease: Lease, fmt: str, data: bytes) -> dict[str, Any]:
        """Send a checkpoint of the attempt in parts; the coordinator's answer to the last one."""
        assert self.client is not None
        upload_id = secrets.token_hex(8)
        digest = hashlib.sha256(data).hexdigest()
        deadline = time.monotonic() + UPLOAD_TIMEOUT_S
        offset = 0
        failures = 0
        while True:
            chunk = data[offset:offset + PART_BYTES]
            final = offset + len(chunk) >= len(data)
            body = {"task_id": lease.task_id, "attempt": lease.attempt, "upload_id": upload_id, "format": fmt,
                    "offset": offset, "data": base64.b64encode(chunk).decode(), "final": final}
            if final:
                body.update(size=len(data), sha256=digest)
            try:
                answer = self.client.post(PATH, body)
            except ApiError as exc:
                if exc.is_retryable and time.monotonic() < deadline:
                    failures += 1
                    time.sleep(min(0.25 * 2 ** failures, 2.0))
                    continue
                raise CheckpointUnavailable(f"the coordinator refused the checkpoint: {exc.message}") from None
            except CoordinatorUnreachable as exc:
                if time.monotonic() < deadline:
                    failures += 1
                    time.sleep(min(0.25 * 2 ** failures, 2.0))
                    continue
                raise CheckpointUnavailable(f"the coordinator could not be reached: {exc.message}") from None
            if final:
                return answer if isinstance(answer, dict) else {}
            offset += len(chunk)

