"""Artifacts on the agent: the files an attempt leaves under $POLYFABRIC_ARTIFACTS, uploaded to
the coordinator when the attempt ends (succeeded or failed), before it is reported finished.

Every attempt gets WORKSPACE/artifacts (0700) in its environment as POLYFABRIC_ARTIFACTS (command
and function tasks alike; `polyfabric.task_context().artifacts_dir` in Python). What is uploaded:

* regular files only, found without following any symbolic link (a link, even to a file inside
  the directory, is refused, not followed: a task must not make the agent read what it points at);
  each is opened component by component relative to the directory with O_NOFOLLOW, so a directory
  swapped for a link after the scan (by a process the task left behind) is not followed either;
* paths checked by domain/artifacts.py (relative, no `..`), the same rules the coordinator applies;
* at most MAX_FILE_BYTES per file, MAX_ATTEMPT_BYTES and MAX_FILES per attempt.

A file that is not uploaded is still reported, with `refused: why`: the coordinator records the
reason, `polyfabric job artifacts` shows it, and the attempt reports as usual. Parts of PART_BYTES
go in signed JSON (`POST /v1/agent/artifact`, docs/protocol.md "Artifacts"), the final one with
the size and sha256 of what was read. A 409 (the attempt is no longer current) ends the upload of
all its files; a 400 refuses one file; unreachable coordinators are retried until UPLOAD_TIMEOUT_S.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyfabric.client import AgentClient, ApiError, CoordinatorUnreachable
from polyfabric.domain.artifacts import MAX_ATTEMPT_BYTES, MAX_FILE_BYTES, MAX_FILES, PART_BYTES, check_path

__all__ = ["ARTIFACTS_DIR", "ArtifactAgent", "Found", "Skipped", "open_beneath", "scan"]

log = logging.getLogger("polyfabric.agent.artifacts")

ARTIFACTS_DIR = "artifacts"
PATH = "/v1/agent/artifact"
UPLOAD_TIMEOUT_S = 120.0  # how long the uploads of one attempt keep trying an unreachable coordinator


@dataclass(frozen=True)
class Found:
    path: str  # relative, POSIX
    size: int  # as scanned; what is sent is what is read


@dataclass(frozen=True)
class Skipped:
    path: str
    size: int
    reason: str


def scan(root: Path) -> tuple[list[Found], list[Skipped]]:
    """The files under `root` to upload, and those refused with why; never follows a link."""
    found: list[Found] = []
    skipped: list[Skipped] = []
    total = 0
    entries: list[tuple[str, os.stat_result]] = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(directory)
        for name in sorted(dirnames + filenames):
            full = base / name
            try:
                info = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                continue  # walked into (a link to a directory is not a directory to lstat)
            entries.append((full.relative_to(root).as_posix(), info))
        dirnames.sort()
    for rel, info in sorted(entries):
        try:
            rel = check_path(rel)
        except ValueError as exc:
            skipped.append(Skipped(_printable(rel), 0, str(exc)))
            continue
        if stat.S_ISLNK(info.st_mode):
            target = ""
            with contextlib.suppress(OSError):
                target = f" to {os.readlink(root / rel)}"
            skipped.append(Skipped(rel, 0, f"a symbolic link{target}: links are not followed"))
        elif not stat.S_ISREG(info.st_mode):
            skipped.append(Skipped(rel, 0, "not a regular file"))
        elif info.st_size > MAX_FILE_BYTES:
            skipped.append(Skipped(rel, info.st_size, f"{info.st_size} bytes: over the limit of {MAX_FILE_BYTES} "
                                                      f"bytes per artifact"))
        elif total + info.st_size > MAX_ATTEMPT_BYTES:
            skipped.append(Skipped(rel, info.st_size, f"over the limit of {MAX_ATTEMPT_BYTES} bytes of artifacts "
                                                      f"per attempt"))
        elif len(found) >= MAX_FILES:
            skipped.append(Skipped(rel, info.st_size, f"over the limit of {MAX_FILES} artifacts per attempt"))
        else:
            total += info.st_size
            found.append(Found(rel, info.st_size))
    return found, skipped


def open_beneath(root: Path, rel: str) -> int:
    """A read-only descriptor of the regular file `rel` under `root`, opened one component at a
    time with O_NOFOLLOW (a link anywhere on the way is refused: OSError)."""
    parts = check_path(rel).split("/")
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, flags_dir)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, flags_dir, dir_fd=fd)
            os.close(fd)
            fd = nxt
        out = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(out).st_mode):
        os.close(out)
        raise OSError(f"{rel} is not a regular file")
    return out


class _Fenced(Exception):
    """The coordinator refused: the attempt is no longer current. Nothing more is sent."""


class _Refused(Exception):
    """The coordinator refused this file (a 400); the others go on."""


class ArtifactAgent:
    def __init__(self, client: AgentClient | None, *, timeout_s: float = UPLOAD_TIMEOUT_S) -> None:
        self.client = client
        self.timeout_s = timeout_s

    def collect(self, task_id: str, attempt: int, root: Path) -> dict[str, Any]:
        """Upload the attempt's artifacts; what happened: {"stored", "refused", "bytes", "problems"}."""
        summary: dict[str, Any] = {"stored": 0, "refused": 0, "bytes": 0, "problems": []}
        if self.client is None or not root.is_dir():
            return summary
        found, skipped = scan(root)
        if not found and not skipped:
            return summary
        deadline = time.monotonic() + self.timeout_s
        try:
            for item in skipped:
                self._refuse(task_id, attempt, item.path, item.size, item.reason, deadline)
                summary["refused"] += 1
                summary["problems"].append(f"{item.path}: {item.reason}")
            for entry in found:
                try:
                    size = self._send(task_id, attempt, root, entry, deadline)
                except _Refused as exc:
                    summary["refused"] += 1
                    summary["problems"].append(f"{entry.path}: {exc}")
                    continue
                summary["stored"] += 1
                summary["bytes"] += size
        except _Fenced as exc:
            summary["problems"].append(str(exc))
            log.warning("%s attempt %d: artifacts not uploaded: %s", task_id, attempt, exc)
        except CoordinatorUnreachable as exc:
            summary["problems"].append(f"the coordinator could not be reached: {exc.message}")
            log.warning("%s attempt %d: artifacts not uploaded: %s", task_id, attempt, exc.message)
        log.info("%s attempt %d: %d artifact(s) uploaded (%d bytes), %d refused", task_id, attempt,
                 summary["stored"], summary["bytes"], summary["refused"])
        return summary

    def _refuse(self, task_id: str, attempt: int, path: str, size: int, reason: str, deadline: float) -> None:
        body = {"task_id": task_id, "attempt": attempt, "upload_id": secrets.token_hex(8), "path": path,
                "size": size, "refused": reason, "final": True}
        with contextlib.suppress(_Refused):
            self._post(body, deadline)

    def _send(self, task_id: str, attempt: int, root: Path, entry: Found, deadline: float) -> int:
        try:
            fd = open_beneath(root, entry.path)
        except OSError as exc:
            reason = f"cannot be read without following a link: {exc.strerror or exc}"
            self._refuse(task_id, attempt, entry.path, entry.size, reason, deadline)
            raise _Refused(reason) from None
        upload_id = secrets.token_hex(8)
        digest = hashlib.sha256()
        offset = 0
        with os.fdopen(fd, "rb") as handle:
            chunk = handle.read(PART_BYTES)
            while True:
                nxt = handle.read(PART_BYTES) if len(chunk) == PART_BYTES else b""
                digest.update(chunk)
                if offset + len(chunk) > MAX_FILE_BYTES:  # it grew after the scan
                    reason = f"over the limit of {MAX_FILE_BYTES} bytes per artifact (it grew while read)"
                    self._refuse(task_id, attempt, entry.path, offset + len(chunk), reason, deadline)
                    raise _Refused(reason)
                final = not nxt
                body: dict[str, Any] = {"task_id": task_id, "attempt": attempt, "upload_id": upload_id,
                                        "path": entry.path, "offset": offset,
                                        "data": base64.b64encode(chunk).decode(), "final": final}
                if final:
                    body.update(size=offset + len(chunk), sha256=digest.hexdigest())
                self._post(body, deadline)
                offset += len(chunk)
                if final:
                    return offset
                chunk = nxt

    def _post(self, body: dict[str, Any], deadline: float) -> Any:
        assert self.client is not None
        failures = 0
        while True:
            try:
                return self.client.post(PATH, body)
            except ApiError as exc:
                if exc.status == 409 and "not current" in exc.message:
                    raise _Fenced(exc.message) from None
                if exc.is_retryable and time.monotonic() < deadline:
                    failures += 1
                    time.sleep(min(0.25 * 2 ** failures, 2.0))
                    continue
                raise _Refused(f"the coordinator refused it: {exc.message}") from None
            except CoordinatorUnreachable:
                if time.monotonic() < deadline:
                    failures += 1
                    time.sleep(min(0.25 * 2 ** failures, 2.0))
                    continue
                raise


def _printable(path: str) -> str:
    return path.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")[:400]
