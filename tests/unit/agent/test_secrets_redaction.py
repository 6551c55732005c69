"""The agent's secrets: redaction of captured output (also across chunk boundaries), files in the
workspace only, sealed envelopes opened only for the right attempt."""

from __future__ import annotations

import json
import os
import stat

from polyfabric.agent.secrets import REDACTED, Redactor, SecretOpener
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.security.sealing import seal


def _collect():
    out: list[tuple[str, int, str]] = []
    return out, lambda stream, offset, text: out.append((stream, offset, text))


def test_a_secret_split_across_chunks_is_still_redacted():
    out, emit = _collect()
    redactor = Redactor(emit, ["hunter2-password"])
    for piece in ["log: hun", "ter2-pass", "word done\n", "again hunter2-password\n", "hunt"]:
        redactor("stdout", 0, piece)
    redactor.flush()
    text = "".join(t for _, _, t in out)
    assert "hunter2" not in text and text.count(REDACTED) == 2
    assert text.endswith("hunt")  # a harmless prefix is sent once it cannot be a secret any more


def test_offsets_stay_increasing_per_stream():
    out, emit = _collect()
    redactor = Redactor(emit, ["abcdef"])
    redactor("stdout", 0, "xxabc")
    redactor("stderr", 0, "plain")
    redactor("stdout", 5, "defxx")
    redactor.flush()
    stdout = [(o, t) for s, o, t in out if s == "stdout"]
    assert [o for o, _ in stdout] == sorted(o for o, _ in stdout)
    assert [o for o, _ in stdout] == [0, 2]  # "xx" at 0, the rest from byte 2 (where the secret began)
    assert "".join(t for _, t in stdout) == f"xx{REDACTED}xx"


def test_short_values_are_not_redacted():
    out, emit = _collect()
    redactor = Redactor(emit, ["ab"])
    redactor("stdout", 0, "abc")
    redactor.flush()
    assert out == [("stdout", 0, "abc")]


def test_opening_a_lease_block_and_installing_files(tmp_path):
    key = generate_private_key()
    plain = {"env": {"API_KEY": "c2VjcmV0LWFwaS1rZXk="}, "files": {"cert.pem": "LS0tY2VydC0tLQo="}}
    block = {"names": ["api", "cert"], "sealed": seal(public_key_raw(key), json.dumps(plain).encode(), "n-1|t-1|1")}
    opener = SecretOpener("n-1", key)
    material, problem = opener.open("t-1", 1, block)
    assert problem is None and material is not None
    env = material.install(tmp_path)
    assert env["API_KEY"] == "secret-api-key"
    path = tmp_path / "secrets" / "cert.pem"
    assert path.read_bytes() == b"---cert---\n" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert material.redact("key=secret-api-key cert=---cert---") == f"key={REDACTED} cert={REDACTED}"
    assert opener.open("t-1", 2, block)[0] is None  # another attempt: does not open
    assert "secrets unavailable" in opener.open("t-1", 1, {"error": "secrets unavailable: gone"})[1]
