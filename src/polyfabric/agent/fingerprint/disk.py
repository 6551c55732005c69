"""Disk capacity: the size and free space of the file system that holds the data directory.

Tasks run in the data directory, so that file system, not the root one, is what a node offers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

__all__ = ["DiskSpace", "disk_space"]


class DiskSpace(NamedTuple):
    total_bytes: int
    free_bytes: int


def disk_space(data_dir: Path) -> DiskSpace:
    """Total and free bytes (free: available to unprivileged users) where `data_dir` lives.

    The directory need not exist yet: its nearest existing ancestor is measured.
    """
    path = Path(data_dir).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return DiskSpace(total_bytes=int(usage.total), free_bytes=int(usage.free))
