"""The agent's side of artifacts (agent/runner/artifacts.py): what is found, what is refused and
why, that no link is followed (not even one swapped in after the scan), and the upload parts."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from polyfabric.agent.runner import artifacts as mod
from polyfabric.agent.runner.artifacts import ArtifactAgent, Found, open_beneath, scan
from polyfabric.client import ApiError
from polyfabric.domain.artifacts import MAX_FILE_BYTES, PART_BYTES


def test_scan_finds_regular_files_and_refuses_links_and_special_files(tmp_path: Path):
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub" / "deep" / "b.bin").write_bytes(b"bb")
    (tmp_path / "passwd").symlink_to("/etc/passwd")
    (tmp_path / "etc").symlink_to("/etc")
    (tmp_path / "inside").symlink_to(tmp_path / "a.txt")
    os.mkfifo(tmp_path / "pipe")
    with open(tmp_path / "huge", "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    found, skipped = scan(tmp_path)
    assert found == [Found("a.txt", 1), Found("sub/deep/b.bin", 2)]
    reasons = {s.path: s.reason for s in skipped}
    assert set(reasons) == {"passwd", "etc", "inside", "pipe", "huge"}
    assert "symbolic link to /etc/passwd" in reasons["passwd"] and "not followed" in reasons["etc"]
    assert "symbolic link" in reasons["inside"]  # even a link inside the directory
    assert reasons["pipe"] == "not a regular file"
    assert "over the limit" in reasons["huge"]


def test_scan_applies_the_per_attempt_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(mod, "MAX_ATTEMPT_BYTES", 5)
    monkeypatch.setattr(mod, "MAX_FILES", 2)
    for name, size in (("a", 2), ("b", 2), ("c", 2), ("d", 0), ("e", 0)):
        (tmp_path / name).write_bytes(b"x" * size)
    found, skipped = scan(tmp_path)
    assert [f.path for f in found] == ["a", "b"]
    assert {s.path: s.reason.split(" of ")[0] for s in skipped} == {
        "c": "over the limit", "d": "over the limit", "e": "over the limit"}


def test_open_beneath_refuses_a_directory_swapped_for_a_link_after_the_scan(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_text("ok")
    fd = open_beneath(tmp_path, "sub/f")
    os.close(fd)
    (tmp_path / "sub" / "f").unlink()
    (tmp_path / "sub").rmdir()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "f").write_text("secret")
    (tmp_path / "sub").symlink_to(outside)
    with pytest.raises(OSError):
        open_beneath(tmp_path, "sub/f")
    with pytest.raises(ValueError):
        open_beneath(tmp_path, "../x")


class FakeClient:
    def __init__(self, fail: ApiError | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = fail

    def post(self, path: str, body: dict[str, Any]) -> Any:
        assert path == "/v1/agent/artifact"
        self.bodies.append(body)
        if self.fail is not None:
            raise self.fail
        return {"artifact": {}} if body.get("final") else {"received": 1}


def test_collect_sends_parts_then_size_and_sha256_and_reports_refusals(tmp_path: Path):
    data = os.urandom(PART_BYTES * 2 + 10)
    (tmp_path / "big").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "link").symlink_to("/etc/passwd")
    client = FakeClient()
    summary = ArtifactAgent(client).collect("t-1", 2, tmp_path)  # type: ignore[arg-type]
    assert (summary["stored"], summary["refused"], summary["bytes"]) == (2, 1, len(data))
    refused = [b for b in client.bodies if b.get("refused")]
    assert [b["path"] for b in refused] == ["link"] and "symbolic link" in refused[0]["refused"]
    big = [b for b in client.bodies if b["path"] == "big"]
    assert [b["offset"] for b in big] == [0, PART_BYTES, 2 * PART_BYTES] and [b["final"] for b in big] == [
        False, False, True]
    assert b"".join(base64.b64decode(b["data"]) for b in big) == data
    assert big[-1]["size"] == len(data) and big[-1]["sha256"] == hashlib.sha256(data).hexdigest()
    assert len({b["upload_id"] for b in big}) == 1
    [empty] = [b for b in client.bodies if b["path"] == "empty"]
    assert empty["final"] and empty["size"] == 0 and empty["sha256"] == hashlib.sha256(b"").hexdigest()


def test_collect_stops_at_a_fencing_refusal(tmp_path: Path):
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text(name)
    client = FakeClient(ApiError(409, "conflict", "artifact refused: attempt 1 of task t-1 is not current"))
    summary = ArtifactAgent(client).collect("t-1", 1, tmp_path)  # type: ignore[arg-type]
    assert len(client.bodies) == 1 and summary["stored"] == 0
    assert "not current" in summary["problems"][0]
