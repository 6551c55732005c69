"""Artifacts: files a task leaves under $POLYFABRIC_ARTIFACTS, collected by the coordinator.

When an attempt ends (succeeded or failed) its agent uploads each file before it reports the
attempt finished, in parts like a checkpoint (`POST /v1/agent/artifact`, each at most PART_BYTES,
base64 in signed JSON under the 1 MiB body limit):

    part 0 .. part n (path, offset, data)  ->  DIR/.uploads/<task>-<attempt>-<upload>.part
    final part (size, sha256)              ->  checked  ->  fenced  ->  DIR/<task>/<attempt>/<path> + row

A file the agent will not send (over MAX_FILE_BYTES, over the attempt's MAX_ATTEMPT_BYTES, a
symlink or special file) is reported with `refused: reason` instead of data and recorded as a row
with that `problem` and no bytes, so `polyfabric job artifacts` says why it is missing. The
coordinator checks paths (domain/artifacts.py) and limits again itself.

Fencing, as for checkpoints: every part must come from the node holding the task's current
attempt (the runtime's memory), and the final one is checked again in the transaction that
records it (the task row, locked, must still name that attempt and node and be in flight), so a
stale attempt's upload is refused (409) and audited (`task.artifact_refused`), never stored.

Storage: DIR is the artifact directory, default DATA_DIR/artifacts (the checkpoint directory's
sibling when `--checkpoint-dir` is given, so coordinators that share one share both). Bytes are
written to a temporary name, fsynced and renamed before the metadata row commits. Rows go with
their task rows (cascade) when GC collects a job; `gc_collector` removes the files then. A task
the workflow keeps (`keep:`) keeps its row and so its artifacts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polyfabric.domain.access import Principal, authorize
from polyfabric.domain.artifacts import MAX_ATTEMPT_BYTES, MAX_FILE_BYTES, MAX_FILES, PART_BYTES, check_path
from polyfabric.domain.errors import Conflict, NotFound, ValidationError
from polyfabric.services.context import ServiceContext
from polyfabric.services.durable_files import decode_part, fsync_dir, sha256_file, write_part
from polyfabric.services.fencing import AttemptFence
from polyfabric.services.ports import AuditEntry
from polyfabric.services.runtime import JobRuntime

__all__ = ["ArtifactService", "gc_collector"]

log = logging.getLogger("polyfabric.artifacts")

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class ArtifactService:
    def __init__(self, ctx: ServiceContext, runtime: JobRuntime, directory: Path | None) -> None:
        self._ctx = ctx
        self._runtime = runtime
        self.directory = Path(directory) if directory is not None else None
        self._lock = threading.Lock()
        self._fence = AttemptFence(ctx, runtime, "artifact")

    def _root(self) -> Path:
        if self.directory is None:
            raise Conflict("this coordinator stores no artifacts (it has no artifact directory)")
        return self.directory

    # -- upload (the agent) ---------------------------------------------------------------------

    def upload(self, node_id: str, part: dict[str, Any]) -> dict[str, Any]:
        """One part of an artifact upload; the final part answers the stored artifact."""
        task_id, attempt, upload = str(part["task_id"]), int(part["attempt"]), str(part["upload_id"])
        if not _SAFE.match(task_id) or not _SAFE.match(upload):
            raise ValidationError("task_id and upload_id may hold only letters, digits, '-' and '_'")
        try:
            path = check_path(part["path"])
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        self._fence.check(node_id, task_id, attempt)
        if part.get("refused"):
            return self._record_refusal(node_id, task_id, attempt, path, int(part.get("size") or 0),
                                        str(part["refused"])[:1000])
        offset = int(part.get("offset") or 0)
        data = decode_part(part.get("data"), PART_BYTES)
        spool = self._root() / ".uploads"
        spool.mkdir(parents=True, exist_ok=True)
        partial = spool / f"{task_id}-{attempt}-{upload}.part"
        if offset + len(data) > MAX_FILE_BYTES:
            partial.unlink(missing_ok=True)
            why = f"over the limit of {MAX_FILE_BYTES} bytes per artifact"
            self._record_refusal(node_id, task_id, attempt, path, offset + len(data), why)
            raise ValidationError(f"artifact {path} refused: {why}")
        received = write_part(partial, offset, data)
        if not part.get("final"):
            return {"received": received}
        return self._finish(node_id, task_id, attempt, path, partial, part)

    def _finish(self, node_id: str, task_id: str, attempt: int, path: str, partial: Path,
                part: dict[str, Any]) -> dict[str, Any]:
        size = partial.stat().st_size if partial.exists() else 0
        if part.get("size") is not None and int(part["size"]) != size:
            partial.unlink(missing_ok=True)
            raise ValidationError(f"artifact {path} has {size} bytes here, the agent sent {part['size']}")
        digest = sha256_file(partial) if partial.exists() else hashlib.sha256(b"").hexdigest()
        if part.get("sha256") and part["sha256"] != digest:
            partial.unlink(missing_ok=True)
            raise ValidationError(f"the sha256 of artifact {path} does not match what the agent sent: it was damaged")
        if not partial.exists():
            partial.touch()
        now = self._ctx.clock.now()
        over = None
        with self._lock, self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)
            stale = not uow.checkpoints.is_current(task_id, attempt, node_id)  # locks the task row
            if not stale:
                stored, files = uow.artifacts.attempt_bytes(task_id, attempt, excluding=path)
                if stored + size > MAX_ATTEMPT_BYTES:
                    over = f"over the limit of {MAX_ATTEMPT_BYTES} bytes of artifacts per attempt"
                elif files >= MAX_FILES:
                    over = f"over the limit of {MAX_FILES} artifacts per attempt"
            if not stale and over is None:
                task = uow.jobs.get_task(task_id)
                target = self._root() / task_id / str(attempt) / path
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(partial, "rb") as handle:
                        os.fsync(handle.fileno())
                    os.replace(partial, target)
                except OSError as exc:
                    partial.unlink(missing_ok=True)
                    raise ValidationError(f"artifact {path} cannot be stored: {exc.strerror or exc}") from None
                fsync_dir(target.parent)
                meta = {"id": self._ctx.ids.new_id("a"), "task_id": task_id, "job_id": task["job_id"],
                        "attempt": attempt, "path": path, "size": size, "sha256": digest, "node_id": node_id,
                        "problem": None, "created_at": now}
                uow.artifacts.put(meta)
                uow.audit.append([AuditEntry(
                    actor=f"node:{node_id}", action="task.artifact", subject=f"task:{task_id}",
                    cause=f"artifact {path} of attempt {attempt}",
                    details={"attempt": attempt, "path": path, "size": size, "sha256": digest})], now)
                uow.commit()
        if stale:
            partial.unlink(missing_ok=True)
            self._fence.refuse(node_id, task_id, attempt, "the task's current attempt changed while it was stored")
        if over is not None:
            partial.unlink(missing_ok=True)
            self._record_refusal(node_id, task_id, attempt, path, size, over)
            raise ValidationError(f"artifact {path} refused: {over}")
        return {"artifact": {"path": path, "size": size, "sha256": digest, "at": now}}

    def _record_refusal(self, node_id: str, task_id: str, attempt: int, path: str, size: int,
                        why: str) -> dict[str, Any]:
        """A file that is not stored, and why: a row without bytes (what `job artifacts` shows)."""
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)
            task = uow.jobs.get_task(task_id)
            if task is None:
                raise NotFound(f"no task {task_id!r}")
            uow.artifacts.put({"id": self._ctx.ids.new_id("a"), "task_id": task_id, "job_id": task["job_id"],
                               "attempt": attempt, "path": path, "size": max(0, size), "sha256": None,
                               "node_id": node_id, "problem": why, "created_at": now})
            uow.audit.append([AuditEntry(
                actor=f"node:{node_id}", action="task.artifact_skipped", subject=f"task:{task_id}",
                cause=f"artifact {path} of attempt {attempt} not stored: {why}",
                details={"attempt": attempt, "path": path, "size": size, "problem": why})], now)
            uow.commit()
        return {"refused": {"path": path, "size": size, "problem": why}}


    # -- reading (people and tools) -------------------------------------------------------------

    def of_job(self, principal: Principal, job_id: str) -> dict[str, Any]:
        """Every artifact of the job, per task and attempt (refused ones with their `problem`)."""
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            job = uow.jobs.get_job(job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            authorize(principal, "job.read", job["domain"])
            keys = uow.retention.task_keys(job_id)
            rows = uow.artifacts.of_job(job_id)
        out = [{"task_id": r["task_id"], "key": keys.get(r["task_id"]), "attempt": r["attempt"], "path": r["path"],
                "size": r["size"], "sha256": r["sha256"], "problem": r["problem"], "node_id": r["node_id"],
                "created_at": r["created_at"]} for r in rows]
        return {"job_id": job_id, "artifacts": out}

    def counts(self, job_id: str) -> dict[str, int]:
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            return uow.artifacts.counts(job_id)

    def locate(self, principal: Principal, task_id: str, path: str, attempt: int | None = None
               ) -> tuple[dict[str, Any], Path]:
        """The artifact's row and file (of `attempt`, or the latest attempt that left `path`)."""
        try:
            path = check_path(path)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            task = uow.jobs.get_task(task_id)
            if task is None:
                raise NotFound(f"no task {task_id!r}")
            job = uow.jobs.get_job(task["job_id"])
            authorize(principal, "job.read", job["domain"] if job is not None else None)
            meta = uow.artifacts.get(task_id, path, attempt)
        if meta is None:
            which = f" of attempt {attempt}" if attempt is not None else ""
            raise NotFound(f"task {task_id} has no artifact {path!r}{which}")
        if meta["problem"]:
            raise NotFound(f"artifact {path!r} of task {task_id} was not stored: {meta['problem']}")
        file = self._root() / task_id / str(meta["attempt"]) / meta["path"]
        if not file.is_file():
            raise NotFound(f"the bytes of artifact {path!r} of task {task_id} are missing from this coordinator's "
                           f"artifact directory (several coordinators must share it)")
        return meta, file


def gc_collector(directory: Callable[[], Path | None]) -> Callable[[Any, str, list[str], bool],
                                                                  Callable[[], None] | None]:
    """For GcService.collectors: the artifact files of the tasks that go (their rows go by
    cascade with the task rows; kept tasks are not in `task_ids`)."""

    def collect(uow: Any, _job_id: str, task_ids: list[str], _whole: bool) -> Callable[[], None] | None:
        root = directory()
        if root is None or not task_ids:
            return None
        uow.artifacts.delete_of_tasks(task_ids)  # explicit: not every SQLite connection enforces cascades
        folders = [root / task_id for task_id in task_ids if _SAFE.match(task_id)]

        def remove() -> None:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)

        return remove

    return collect
