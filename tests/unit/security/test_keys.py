"""Ed25519 key helpers, key files and raw signatures."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyfabric.domain.errors import ValidationError
from polyfabric.security.keys import (
    b64d,
    b64e,
    generate_private_key,
    load_private_key,
    private_key_from_pem,
    private_key_to_pem,
    public_key_from_raw,
    public_key_raw,
    save_private_key,
)
from polyfabric.security.signing import sign_bytes, verify_bytes


def test_pem_round_trip_keeps_the_key():
    key = generate_private_key()
    pem = private_key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_key_raw(private_key_from_pem(pem)) == public_key_raw(key)


def test_raw_public_key_has_32_bytes_and_round_trips():
    key = generate_private_key()
    raw = public_key_raw(key)
    assert len(raw) == 32
    assert public_key_raw(key.public_key()) == raw
    assert public_key_raw(public_key_from_raw(raw)) == raw


@pytest.mark.parametrize("raw", [b"", b"x" * 31, b"x" * 33])
def test_public_key_from_raw_rejects_wrong_length(raw):
    with pytest.raises(ValidationError, match="32 bytes"):
        public_key_from_raw(raw)


def test_pem_that_is_not_ed25519_is_refused():
    with pytest.raises(ValidationError):
        private_key_from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValidationError):
        private_key_from_pem(b"not a key")


@given(st.binary(max_size=100))
def test_b64_round_trip_without_padding(data):
    text = b64e(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64d(text) == data


def test_b64d_accepts_padding_and_rejects_junk():
    assert b64d("YQ==") == b"a"
    for junk in ("a", "ab+c", "ab/c", "a b", "é", "@@@@"):
        with pytest.raises(ValidationError):
            b64d(junk)


def test_save_writes_mode_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "node.key"
        key = generate_private_key()
        save_private_key(path, key)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_raw(load_private_key(path)) == public_key_raw(key)
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temporary file left


def test_save_replaces_atomically_or_refuses_to_overwrite(tmp_path):
    path = tmp_path / "node.key"
    first, second = generate_private_key(), generate_private_key()
    save_private_key(path, first)
    with pytest.raises(FileExistsError):
        save_private_key(path, second, overwrite=False)
    assert public_key_raw(load_private_key(path)) == public_key_raw(first)
    save_private_key(path, second)
    assert public_key_raw(load_private_key(path)) == public_key_raw(second)
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_load_refuses_a_key_that_group_or_others_can_reach(tmp_path, mode):
    path = tmp_path / "node.key"
    save_private_key(path, generate_private_key())
    os.chmod(path, mode)
    with pytest.raises(ValidationError, match=r"chmod 600") as info:
        load_private_key(path)
    assert f"{mode:04o}" in info.value.message
    assert str(path) in info.value.message


def test_load_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_private_key(tmp_path / "absent.key")
    path = tmp_path / "bad.key"
    path.write_bytes(b"garbage")
    path.chmod(0o600)
    with pytest.raises(ValidationError, match=r"bad\.key"):
        load_private_key(path)


def test_sign_and_verify_bytes():
    key = generate_private_key()
    raw = public_key_raw(key)
    signature = sign_bytes(key, b"hello")
    assert len(signature) == 64
    assert verify_bytes(raw, b"hello", signature)
    assert not verify_bytes(raw, b"hellO", signature)
    assert not verify_bytes(public_key_raw(generate_private_key()), b"hello", signature)


@pytest.mark.parametrize(
    ("raw", "signature"),
    [(b"short", b"x" * 64), (b"x" * 32, b"short"), (None, b"x" * 64), (b"\xff" * 32, b"\x00" * 64)],
)
def test_verify_bytes_never_raises(raw, signature):
    assert verify_bytes(raw, b"data", signature) is False
