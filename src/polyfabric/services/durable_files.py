"""Files the coordinator keeps for tasks (checkpoints, artifacts): their digest, and making a rename
durable (the directory entry is fsynced too, or a crash could lose a file the store already names)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

__all__ = ["fsync_dir", "sha256_file"]


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
