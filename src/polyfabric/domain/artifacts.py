"""Task artifacts: the rules both sides apply to an artifact's path and size (pure, no I/O).

A task leaves files as artifacts by writing them under $POLYFABRIC_ARTIFACTS; each is named by
its path relative to that directory. The agent checks every path before it uploads and the
coordinator checks it again before it writes (it never trusts an agent's path): relative, in
POSIX form, no empty, `.` or `..` component, no backslash or control character, bounded length.
"""

from __future__ import annotations

__all__ = ["MAX_ATTEMPT_BYTES", "MAX_FILE_BYTES", "MAX_FILES", "MAX_PATH_CHARS", "PART_BYTES", "check_path"]

MAX_FILE_BYTES = 64 * 1024 * 1024  # one artifact at most: a larger file is refused (reason recorded)
MAX_ATTEMPT_BYTES = 256 * 1024 * 1024  # all artifacts of one attempt together
MAX_FILES = 1000  # files per attempt; past it the rest are refused
MAX_PATH_CHARS = 400
PART_BYTES = 512 * 1024  # raw bytes per upload part: 683 KiB of base64, under the API's 1 MiB body limit


def check_path(path: object) -> str:
    """The artifact path, normalised; raises ValueError naming what is wrong with it."""
    if not isinstance(path, str) or not path:
        raise ValueError("an artifact path must be a non-empty string")
    if len(path) > MAX_PATH_CHARS:
        raise ValueError(f"an artifact path has at most {MAX_PATH_CHARS} characters, this one {len(path)}")
    if path.startswith("/"):
        raise ValueError(f"artifact path {path!r} is absolute; it must be relative to the artifacts directory")
    if "\\" in path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ValueError(f"artifact path {path!r} holds a backslash or a control character")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"artifact path {path!r} is not valid UTF-8") from None
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ValueError(f"artifact path {path!r} has an empty, '.' or '..' component")
    return "/".join(parts)
