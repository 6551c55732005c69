"""Secrets on the node: open the sealed envelope of a lease, hand the values to the task, redact them.

A lease that needs secrets carries them sealed to this node's key for this attempt only
(security/sealing.py). They are opened in memory when the attempt starts; env secrets go into the
task's environment, file secrets into `WORKSPACE/secrets/` (0700; files 0600), which is deleted
with the workspace once the attempt's final report is acknowledged. Nothing else is written: the
values are never logged, never kept in the agent's state, and every value (and its trimmed form)
is replaced by `[REDACTED]` in the task's captured stdout/stderr and in its error message, also
when a value is split across two output chunks. Values shorter than 4 characters are not redacted
(they would blank out ordinary output); docs/secrets.md says so.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyfabric.security.keys import Ed25519PrivateKey
from polyfabric.security.sealing import SealError, open_sealed

__all__ = ["REDACTED", "Redactor", "SecretMaterial", "SecretOpener"]

REDACTED = "[REDACTED]"
MIN_REDACT = 4
SECRETS_DIR = "secrets"


class Redactor:
    """Wraps a log emitter `emit(stream, offset, text)`; holds back a chunk's tail while it could be
    the start of a secret, so a value split across chunks is still caught. Call `flush()` at the end."""

    def __init__(self, emit: Callable[[str, int, str], None], values: list[str]) -> None:
        self._emit = emit
        self._values = sorted({v for v in values if len(v) >= MIN_REDACT}, key=len, reverse=True)
        self._longest = max((len(v) for v in self._values), default=0)
        self._pending: dict[str, tuple[int, str]] = {}
        self._lock = threading.Lock()

    def redact(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def _cut(self, text: str) -> int:
        """Where the earliest tail of `text` that could be the start of a value begins (len: none)."""
        start = max(0, len(text) - self._longest + 1)
        for i in range(start, len(text)):
            tail = text[i:]
            if any(v.startswith(tail) for v in self._values):
                return i
        return len(text)

    def __call__(self, stream: str, offset: int, text: str) -> None:
        if not self._values:
            self._emit(stream, offset, text)
            return
        with self._lock:
            held_offset, held = self._pending.pop(stream, (offset, ""))
            buf = held + text
            cut = self._cut(buf)
            out, rest = buf[:cut], buf[cut:]
            if rest:
                self._pending[stream] = (held_offset + len(out.encode("utf-8", "surrogatepass")), rest)
        if out:
            self._emit(stream, held_offset, self.redact(out))

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for stream, (offset, text) in pending.items():
            self._emit(stream, offset, self.redact(text))


@dataclass
class SecretMaterial:
    """The opened secrets of one attempt (in memory only)."""

    env: dict[str, str]
    files: dict[str, bytes]
    names: list[str]
    values: list[str] = field(default_factory=list)
    redactor: Redactor | None = None

    def redacting(self, emit: Callable[[str, int, str], None]) -> Redactor:
        self.redactor = Redactor(emit, self.values)
        return self.redactor

    def redact(self, text: str | None) -> str | None:
        if text is None:
            return None
        return (self.redactor or Redactor(lambda *_: None, self.values)).redact(text)

    def install(self, workspace_path: Path) -> dict[str, str]:
        """Write the file secrets into the workspace; the env the task gets on top of its own."""
        env = dict(self.env)
        if self.files:
            directory = Path(workspace_path) / SECRETS_DIR
            os.mkdir(directory, 0o700)
            for name, data in self.files.items():
                fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
            env["POLYFABRIC_SECRETS_DIR"] = str(directory)
        return env


class SecretOpener:
    """Opens the sealed secrets of a lease with the node's private key."""

    def __init__(self, node_id: str, private_key: Ed25519PrivateKey) -> None:
        self._node_id = node_id
        self._key = private_key

    def open(self, task_id: str, attempt: int, block: Any) -> tuple[SecretMaterial | None, str | None]:
        """(material, None), or (None, why the attempt cannot have its secrets)."""
        if not isinstance(block, dict):
            return None, "the lease's secrets are malformed"
        if block.get("error"):
            return None, str(block["error"])[:2000]
        try:
            plain = json.loads(open_sealed(self._key, block.get("sealed"), f"{self._node_id}|{task_id}|{attempt}"))
            env = {k: base64.b64decode(v).decode("utf-8") for k, v in (plain.get("env") or {}).items()}
            files = {k: base64.b64decode(v) for k, v in (plain.get("files") or {}).items()}
        except SealError as exc:
            return None, f"cannot open the task's secrets: {exc}"
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            return None, f"the task's secrets are malformed ({type(exc).__name__}); env secrets must be UTF-8 text"
        values: list[str] = list(env.values())
        for data in files.values():
            try:
                values.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                continue
        values += [v.strip() for v in values if v.strip() != v]
        return SecretMaterial(env=env, files=files, names=list(block.get("names") or []), values=values), None


def manifest_signer(node_id: str, private_key: Ed25519PrivateKey) -> Callable[..., dict[str, Any]]:
    """signer(lease, outcome, started_at, finished_at) -> the attempt's manifest signed by this node
    (security/manifests.py); the runner sends it with the `finished` event."""
    from polyfabric.security.manifests import inputs_digest, make_manifest, result_digest

    def sign(lease: Any, outcome: Any, started_at: float | None, finished_at: float) -> dict[str, Any]:
        names = (lease.secrets or {}).get("names") or []
        return make_manifest(
            private_key, job_id=lease.job_id, task_id=lease.task_id, key=lease.key, attempt=lease.attempt,
            node_id=node_id, status=outcome.status, exit_code=outcome.exit_code,
            inputs_sha256=inputs_digest(lease.command, lease.function, lease.args, lease.env, lease.workdir, names),
            result_sha256=result_digest(outcome.result), started_at=started_at, finished_at=finished_at)

    return sign
