"""Sealing to a node's key, and the coordinator's keyring: only the right node and attempt open an
envelope; rotation keeps every value readable."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from polyfabric.domain.errors import ValidationError
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.security.sealing import (
    Keyring,
    SealError,
    aead_decrypt,
    aead_encrypt,
    ed25519_to_x25519_private,
    ed25519_to_x25519_public,
    open_sealed,
    seal,
)


def test_the_x25519_key_derived_from_the_private_key_matches_the_one_derived_from_the_public_key():
    for _ in range(20):
        key = generate_private_key()
        mine = ed25519_to_x25519_private(key).public_key().public_bytes(serialization.Encoding.Raw,
                                                                        serialization.PublicFormat.Raw)
        assert mine == ed25519_to_x25519_public(public_key_raw(key))


def test_only_the_node_and_attempt_it_was_sealed_for_can_open_it():
    node, other = generate_private_key(), generate_private_key()
    envelope = seal(public_key_raw(node), b"s3cr3t-value", "n-a|t-1|2")
    assert b"s3cr3t" not in repr(envelope).encode()
    assert open_sealed(node, envelope, "n-a|t-1|2") == b"s3cr3t-value"
    for key, context in ((other, "n-a|t-1|2"), (node, "n-a|t-1|3"), (node, "n-b|t-1|2")):
        with pytest.raises(SealError):
            open_sealed(key, envelope, context)
    tampered = dict(envelope, ct=envelope["ct"][:-4] + ("AAAA" if envelope["ct"][-4:] != "AAAA" else "BBBB"))
    with pytest.raises(SealError):
        open_sealed(node, tampered, "n-a|t-1|2")
    with pytest.raises(SealError):
        open_sealed(node, {"v": "0"}, "n-a|t-1|2")


def test_aead_binds_its_associated_data():
    key = os.urandom(32)
    blob = aead_encrypt(key, b"value", b"lab-a|db-password")
    assert aead_decrypt(key, blob, b"lab-a|db-password") == b"value"
    with pytest.raises(SealError):
        aead_decrypt(key, blob, b"lab-b|db-password")


def test_keyring_is_private_and_rotation_keeps_old_keys_until_dropped(tmp_path):
    ring = Keyring(tmp_path / "secrets.key")
    kid, key = ring.current()
    assert stat.S_IMODE(os.stat(tmp_path / "secrets.key").st_mode) == 0o600
    assert ring.current() == (kid, key)
    new_kid, new_key = ring.add_new()
    assert ring.get(kid) == key and ring.get(new_kid) == new_key
    ring.make_only(new_kid)
    assert ring.current() == (new_kid, new_key)
    with pytest.raises(ValidationError, match="has no key"):
        ring.get(kid)
    os.chmod(tmp_path / "secrets.key", 0o644)
    with pytest.raises(ValidationError, match="mode"):
        ring.current()
