"""The running task's side of checkpoints: `ctx = polyfabric.task_context()` inside a task.

    ctx = polyfabric.task_context()
    state = ctx.restore() or {"i": 0}          # the last saved state, or None on a fresh start
    while state["i"] < 100:
        step(state)
        ctx.checkpoint(state)                   # returns once the coordinator stored it durably
        if ctx.should_stop():                   # a drain asks the task to checkpoint and stop
            return None                         # (the checkpoint above is where it resumes)

A state is anything JSON can hold, or bytes. A command task does the same with files: it writes
them into $POLYFABRIC_CHECKPOINT_DIR and runs `polyfabric checkpoint` (`TaskContext.save_dir`);
on its next attempt the directory is restored before the command starts.

It talks to the agent over the agent's local Unix socket named in the task's environment
(agent/runner/checkpoints.py, docs/protocol.md "Checkpoints"). Standard library only: it runs in
warm workers and in any Python a command task starts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CheckpointError", "NotInTask", "TaskContext", "task_context"]

STATE_JSON = "_polyfabric_state.json"  # as agent/runner/checkpoints.py writes them on restore
STATE_BYTES = "_polyfabric_state.bin"
_TIMEOUT_S = 150.0


class CheckpointError(Exception):
    """A checkpoint could not be saved (refused: the attempt is no longer current; or the
    coordinator could not be reached)."""


class NotInTask(RuntimeError):
    """task_context() outside a polyfabric task."""


@dataclass(frozen=True)
class TaskContext:
    task_id: str
    job_id: str
    attempt: int
    workspace: Path | None
    checkpoint_dir: Path | None
    stop_file: Path | None
    socket_path: str | None
    token: str | None
    artifacts_dir: Path | None = None  # $POLYFABRIC_ARTIFACTS: files left here are collected as artifacts

    # -- state ------------------------------------------------------------------------------

    def restore(self) -> Any:
        """The last state saved with `checkpoint()` (by this attempt or an earlier one), or None."""
        if self.checkpoint_dir is None:
            return None
        json_file, bytes_file = self.checkpoint_dir / STATE_JSON, self.checkpoint_dir / STATE_BYTES
        if json_file.exists():
            return json.loads(json_file.read_bytes())
        if bytes_file.exists():
            return bytes_file.read_bytes()
        return None

    def checkpoint(self, state: Any) -> dict[str, Any]:
        """Save `state` (JSON-serializable, or bytes) as the task's checkpoint; returns
        {"seq", "size", "sha256"} once the coordinator holds it. Raises CheckpointError."""
        if isinstance(state, bytes | bytearray | memoryview):
            fmt, data = "bytes", bytes(state)
        else:
            try:
                fmt, data = "json", json.dumps(state, allow_nan=False, separators=(",", ":")).encode()
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"the checkpoint state is not JSON-serializable (or bytes): {exc}") from None
        out = self._send(fmt, data)
        if self.checkpoint_dir is not None:  # restore() in this attempt sees it too
            self.checkpoint_dir.mkdir(mode=0o700, exist_ok=True)
            keep, drop = (STATE_JSON, STATE_BYTES) if fmt == "json" else (STATE_BYTES, STATE_JSON)
            tmp = self.checkpoint_dir / (keep + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self.checkpoint_dir / keep)
            (self.checkpoint_dir / drop).unlink(missing_ok=True)
        return out

    def save_dir(self, directory: Path | str | None = None) -> dict[str, Any]:
        """Save the files of $POLYFABRIC_CHECKPOINT_DIR (or `directory`) as the task's checkpoint,
        atomically: the next attempt starts with exactly this content. What `polyfabric checkpoint` does."""
        source = Path(directory) if directory is not None else self.checkpoint_dir
        if source is None or not source.is_dir():
            raise CheckpointError(f"no checkpoint directory to save ({source or '$POLYFABRIC_CHECKPOINT_DIR unset'})")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for path in sorted(source.rglob("*")):
                if path.name.endswith(".tmp") and path.parent == source:
                    continue
                archive.add(path, arcname=str(path.relative_to(source)), recursive=False)
        return self._send("tar", buffer.getvalue())

    def should_stop(self) -> bool:
        """True once the task is asked to checkpoint and stop (its node is drained past its
        deadline): save a checkpoint and return (or exit) soon; the task resumes elsewhere."""
        return self.stop_file is not None and self.stop_file.exists()

    # -- the agent's socket ---------------------------------------------------------------------

    def _send(self, fmt: str, data: bytes) -> dict[str, Any]:
        if not self.socket_path or not self.token:
            raise CheckpointError("checkpoints are not available here (no POLYFABRIC_AGENT_SOCKET: "
                                  "not inside a task run by a polyfabric agent that supports them)")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(_TIMEOUT_S)
                conn.connect(self.socket_path)
                header = {"op": "checkpoint", "token": self.token, "format": fmt, "size": len(data)}
                conn.sendall(json.dumps(header).encode() + b"\n")
                # The agent may refuse after the header and close: then its answer says why.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    conn.sendall(data)
                with conn.makefile("rb") as reader:
                    line = reader.readline()
        except OSError as exc:
            raise CheckpointError(f"cannot reach the agent at {self.socket_path}: {exc}") from None
        if not line:
            raise CheckpointError("the agent closed the connection without an answer")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise CheckpointError(str(reply.get("error") or "the checkpoint was not saved"))
        return {k: reply[k] for k in ("seq", "size", "sha256") if k in reply}


def task_context() -> TaskContext:
    """The context of the task this code runs in (read from the environment the agent gives it)."""
    env = os.environ
    task_id = env.get("POLYFABRIC_TASK_ID")
    if not task_id:
        raise NotInTask("not inside a polyfabric task (POLYFABRIC_TASK_ID is not set)")

    def path(name: str) -> Path | None:
        value = env.get(name)
        return Path(value) if value else None

    return TaskContext(task_id=task_id, job_id=env.get("POLYFABRIC_JOB_ID", ""),
                       attempt=int(env.get("POLYFABRIC_ATTEMPT") or 0), workspace=path("POLYFABRIC_WORKSPACE"),
                       checkpoint_dir=path("POLYFABRIC_CHECKPOINT_DIR"), stop_file=path("POLYFABRIC_STOP_FILE"),
                       socket_path=env.get("POLYFABRIC_AGENT_SOCKET") or None,
                       token=env.get("POLYFABRIC_CHECKPOINT_TOKEN") or None,
                       artifacts_dir=path("POLYFABRIC_ARTIFACTS"))
