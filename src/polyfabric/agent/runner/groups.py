"""Process groups: how the agent stops a task together with everything it started.

Every command task and every warm worker runs in its own session (`start_new_session=True`), so
its process group id is its pid and one `killpg` reaches its children and grandchildren too.
"Alive" ignores zombies: an orphaned grandchild is reparented to PID 1, and in a container PID 1
may never reap it; a zombie holds no resources and cannot be killed, so it does not count.
"""

from __future__ import annotations

import os
import signal
import time

__all__ = ["group_alive", "group_members", "signal_group", "terminate_group"]


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the group; False when no process is left in it."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # a pid reused by someone else's process: not ours to touch
        return False


def group_members(pgid: int) -> list[int]:
    """The pids of the live (non-zombie) processes in group `pgid` (Linux: from /proc)."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may contain spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) >= 3 and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def group_alive(pgid: int) -> bool:
    """True while some non-zombie process is in the group."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if not os.path.isdir("/proc"):
        return True  # no way to tell zombies apart: assume alive
    return bool(group_members(pgid))


def terminate_group(pgid: int, grace_s: float, *, poll_s: float = 0.01) -> None:
    """SIGTERM the whole group, SIGKILL whatever is still alive after `grace_s`; wait (briefly) until gone."""
    if not signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + max(0.0, grace_s)
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            signal_group(pgid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 2.0
            while group_alive(pgid) and time.monotonic() < kill_deadline:
                time.sleep(poll_s)
            return
        time.sleep(poll_s)
