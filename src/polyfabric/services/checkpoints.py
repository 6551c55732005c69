"""Checkpoints: a task's saved progress, kept by the coordinator and tied to the task, not the node.

An agent uploads a checkpoint of a running attempt in parts (`POST /v1/agent/checkpoint`, each at
most PART_BYTES, base64 in JSON so the agent protocol stays signed JSON under the body limit) and
fetches the latest one before it starts a new attempt of the task (`POST /v1/agent/checkpoint/fetch`).

    part 0 .. part n (offset, data)  ->  DIR/.uploads/<task>-<attempt>-<upload>.part
    final part (size, sha256)        ->  checked  ->  fenced  ->  DIR/<task>/<seq>.ckpt + metadata row

Fencing, like results: every part must come from the node holding the task's current attempt
(the runtime's memory); the final one is checked again inside the transaction that records it
(the task row, locked, must still name that attempt and node), so a checkpoint of an attempt that
was moved meanwhile is refused (409) and audited (`task.checkpoint_refused`), never recorded. An
accepted one is audited (`task.checkpointed`) and becomes the task's resume point: the runtime
keeps it in the task's payload and sends it with every later lease of the task.

Storage: the bytes are files under the checkpoint directory (default DATA_DIR/checkpoints,
`polyfabric server --checkpoint-dir`), written to a temporary name, fsynced and renamed before the
metadata commits; the last KEEP checkpoints of a task are kept, older ones deleted. Several
coordinators must share the directory (it is read by whichever leads).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from polyfabric.domain.errors import Conflict, NotFound, ValidationError
from polyfabric.services.context import ServiceContext
from polyfabric.services.durable_files import decode_part, fsync_dir, sha256_file, write_part
from polyfabric.services.fencing import AttemptFence
from polyfabric.services.ports import AuditEntry
from polyfabric.services.runtime import JobRuntime

__all__ = ["FORMATS", "KEEP", "MAX_BYTES", "PART_BYTES", "CheckpointService"]

log = logging.getLogger("polyfabric.checkpoints")

FORMATS = ("json", "bytes", "tar")
PART_BYTES = 512 * 1024  # raw bytes per part: 683 KiB of base64, under the API's 1 MiB body limit
MAX_BYTES = 256 * 1024 * 1024  # one checkpoint at most (default of --checkpoint-max-bytes)
KEEP = 2  # checkpoints kept per task (the latest is the resume point; one more while it is fetched)
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class CheckpointService:
    def __init__(self, ctx: ServiceContext, runtime: JobRuntime, directory: Path | None, *,
                 max_bytes: int = MAX_BYTES) -> None:
        self._ctx = ctx
        self._runtime = runtime
        self.directory = Path(directory) if directory is not None else None
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # one final step at a time per coordinator (seq numbers)
        self._fence = AttemptFence(ctx, runtime, "checkpoint")

    def _root(self) -> Path:
        if self.directory is None:
            raise Conflict("this coordinator stores no checkpoints (it was started without a checkpoint directory)")
        return self.directory

    # -- upload -------------------------------------------------------------------------------

    def upload(self, node_id: str, part: dict[str, Any]) -> dict[str, Any]:
        """One part of a checkpoint upload; the final part answers the stored checkpoint."""
        task_id, attempt, upload = str(part["task_id"]), int(part["attempt"]), str(part["upload_id"])
        fmt, offset = str(part["format"]), int(part["offset"])
        if fmt not in FORMATS:
            raise ValidationError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if not _SAFE.match(task_id) or not _SAFE.match(upload):
            raise ValidationError("task_id and upload_id may hold only letters, digits, '-' and '_'")
        self._fence.check(node_id, task_id, attempt)
        data = decode_part(part.get("data"), PART_BYTES)
        if offset + len(data) > self.max_bytes:
            raise ValidationError(f"the checkpoint is over the coordinator's limit of {self.max_bytes} bytes")
        spool = self._root() / ".uploads"
        spool.mkdir(parents=True, exist_ok=True)
        path = spool / f"{task_id}-{attempt}-{upload}.part"
        received = write_part(path, offset, data)
        if not part.get("final"):
            return {"received": received}
        return self._finish(node_id, task_id, attempt, fmt, path, part)

    def _finish(self, node_id: str, task_id: str, attempt: int, fmt: str, path: Path,
                part: dict[str, Any]) -> dict[str, Any]:
        size = path.stat().st_size
        if part.get("size") is not None and int(part["size"]) != size:
            path.unlink(missing_ok=True)
            raise ValidationError(f"the checkpoint has {size} bytes here, the agent sent {part['size']}")
        digest = sha256_file(path)
        if part.get("sha256") and part["sha256"] != digest:
            path.unlink(missing_ok=True)
            raise ValidationError("the checkpoint's sha256 does not match what the agent sent: it was damaged")
        now = self._ctx.clock.now()
        with self._lock:
            with self._ctx.store.unit_of_work() as uow:
                self._ctx.leadership.fence(uow)
                repo = uow.checkpoints  # type: ignore[attr-defined]
                stale = not repo.is_current(task_id, attempt, node_id)
                if not stale:
                    seq = repo.next_seq(task_id)
                    relative = f"{task_id}/{seq}.ckpt"
                    target = self._root() / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(path, "rb") as handle:
                        os.fsync(handle.fileno())
                    os.replace(path, target)
                    fsync_dir(target.parent)
                    meta = {"id": self._ctx.ids.new_id("c"), "task_id": task_id, "attempt": attempt, "seq": seq,
                            "node_id": node_id, "format": fmt, "size": size, "sha256": digest, "path": relative,
                            "created_at": now}
                    repo.add(meta)
                    old = repo.older_than(task_id, seq - KEEP + 1)
                    repo.delete([r["id"] for r in old])
                    uow.audit.append([AuditEntry(
                        actor=f"node:{node_id}", action="task.checkpointed", subject=f"task:{task_id}",
                        cause=f"checkpoint {seq} of attempt {attempt}",
                        details={"attempt": attempt, "seq": seq, "size": size, "sha256": digest, "format": fmt})], now)
                    uow.commit()
            if stale:
                path.unlink(missing_ok=True)
                self._fence.refuse(node_id, task_id, attempt, "the task's current attempt changed while it was stored")
        for row in old:
            with contextlib.suppress(OSError):
                (self._root() / row["path"]).unlink()
        out = {"seq": seq, "size": size, "sha256": digest, "format": fmt, "at": now}
        moved = self._runtime.note_checkpoint(task_id, attempt, node_id, out)
        return {"checkpoint": out, "stop": moved}


    # -- fetch --------------------------------------------------------------------------------

    def fetch(self, node_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """A part of the task's latest checkpoint (or of checkpoint `seq`), for its current attempt."""
        task_id, attempt = str(request["task_id"]), int(request["attempt"])
        self._fence.check(node_id, task_id, attempt)
        seq = request.get("seq")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            repo = uow.checkpoints  # type: ignore[attr-defined]
            meta = repo.latest(task_id) if seq is None else repo.get(task_id, int(seq))
        if meta is None:
            raise NotFound(f"task {task_id} has no checkpoint" + (f" {seq}" if seq is not None else ""))
        offset = int(request.get("offset") or 0)
        limit = min(int(request.get("limit") or PART_BYTES), PART_BYTES)
        try:
            with open(self._root() / meta["path"], "rb") as handle:
                handle.seek(offset)
                data = handle.read(limit)
        except FileNotFoundError:
            raise NotFound(f"the bytes of checkpoint {meta['seq']} of task {task_id} are missing from this "
                           f"coordinator's checkpoint directory (several coordinators must share it)") from None
        return {"seq": meta["seq"], "size": meta["size"], "sha256": meta["sha256"], "format": meta["format"],
                "offset": offset, "data": base64.b64encode(data).decode(), "eof": offset + len(data) >= meta["size"]}
