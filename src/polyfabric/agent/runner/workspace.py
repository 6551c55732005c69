"""Per-attempt workspaces: `DATA_DIR/work/<task_id>-<attempt>/`, private to the agent's user.

Each attempt gets a fresh directory (0700) with `tmp/` (its TMPDIR) and the path of its result
file; it is the task's working directory unless the lease names a `workdir`. The directory is
removed only once the attempt's final report is acknowledged (the result file must survive a
lost report), and any process the attempt left behind in its process group is killed first.

After a crash of the agent, workspaces of the previous run are left over and their commands may
still be running (each in its own session): `sweep` kills every process whose environment names
a workspace under the root and removes the directories, when the runner starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
from dataclasses import dataclass
from pathlib import Path

import psutil

from polyfabric.agent.runner.groups import group_members

__all__ = ["RESULT_FILE", "Workspace", "remove_tree", "sweep"]

log = logging.getLogger("polyfabric.agent.runner")

RESULT_FILE = "result.json"


@dataclass(frozen=True, slots=True)
class Workspace:
    path: Path

    @property
    def tmp(self) -> Path:
        return self.path / "tmp"

    @property
    def result_file(self) -> Path:
        return self.path / RESULT_FILE

    @classmethod
    def create(cls, root: Path, task_id: str, attempt: int) -> Workspace:
        """A fresh, empty workspace (one left over from an earlier run of the same attempt is replaced)."""
        path = root / f"{task_id}-{attempt}"
        try:
            os.mkdir(path, 0o700)  # the common case, in one call: the root exists, the workspace not
        except FileExistsError:
            remove_tree(path)
            os.mkdir(path, 0o700)
        except FileNotFoundError:
            path.mkdir(mode=0o700, parents=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
        os.mkdir(path / "tmp", 0o700)
        return cls(path)

    def remove(self, pgid: int | None = None) -> None:
        """Kill what is left of the attempt's process group, then delete the directory.

        A pgid is a pid, and pids are reused: by now the number may name someone else's group.
        So only members whose environment names this workspace are killed (a leftover that
        cleared its environment escapes; so does one that left the group with setsid).
        """
        if pgid is not None:
            marker = f"POLYFABRIC_WORKSPACE={self.path}".encode()
            for pid in group_members(pgid):
                try:
                    with open(f"/proc/{pid}/environ", "rb") as handle:
                        environ = handle.read().split(b"\0")
                except OSError:
                    continue
                if marker in environ:
                    log.info("killing process %d left running by the task in %s", pid, self.path)
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
        remove_tree(self.path)


def remove_tree(path: Path) -> None:
    """rmtree that also removes what a task made read-only; never raises (logs instead)."""

    def on_error(func, failed, _exc_info):  # type: ignore[no-untyped-def]
        try:
            parent = os.path.dirname(failed)
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, stat.S_IRWXU)
            func(failed)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", failed, exc)

    # Most workspaces (function tasks, tidy commands) hold nothing but the empty tmp/: two
    # rmdir calls instead of a tree walk. Anything else is left to rmtree.
    with contextlib.suppress(OSError):
        os.rmdir(path / "tmp")
    with contextlib.suppress(OSError):
        os.rmdir(path / "checkpoint")  # a command task's $POLYFABRIC_CHECKPOINT_DIR, when it stayed empty
    try:
        os.rmdir(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    try:
        shutil.rmtree(path, onerror=on_error)
    except OSError as exc:
        log.warning("cannot remove workspace %s: %s", path, exc)


def sweep(root: Path) -> int:
    """Kill processes still running in workspaces under `root` and remove them all; the number removed."""
    if not root.is_dir():
        return 0
    prefix = str(root) + os.sep
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            workspace = proc.environ().get("POLYFABRIC_WORKSPACE", "")
        except (psutil.Error, OSError):
            continue
        if workspace.startswith(prefix):
            try:
                log.warning("killing process %d left running in %s by an earlier agent", proc.pid, workspace)
                proc.kill()
            except psutil.Error:
                pass
    removed = 0
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            remove_tree(entry)
            removed += 1
    return removed
