"""Files the coordinator keeps for tasks (checkpoints, artifacts): uploads received in parts, their
digest, and a durable rename (the directory entry is fsynced too, or a crash could lose a file the
store already names)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
from pathlib import Path

from polyfabric.domain.errors import Conflict, ValidationError

__all__ = ["decode_part", "fsync_dir", "sha256_file", "write_part"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def decode_part(data_b64: str | None, limit: int) -> bytes:
    """The bytes of one uploaded part (base64 in the JSON body), at most `limit` of them."""
    try:
        data = base64.b64decode(data_b64 or "", validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("data is not base64") from None
    if len(data) > limit:
        raise ValidationError(f"a part holds at most {limit} bytes, this one {len(data)}")
    return data


def write_part(partial: Path, offset: int, data: bytes) -> int:
    """Write a part at `offset` of the spooled upload; parts come in order and may repeat (the agent
    sends at least once). Returns how many bytes the upload holds now."""
    size = partial.stat().st_size if partial.exists() else 0
    if offset > size:
        raise Conflict(f"part at offset {offset} arrived before the bytes before it (have {size})")
    if offset + len(data) > size:  # else a repeat of a part already written
        with open(partial, "r+b" if size else "wb") as handle:
            handle.seek(offset)
            handle.write(data)
    return max(size, offset + len(data))
