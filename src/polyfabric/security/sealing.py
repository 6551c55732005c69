"""Sealing secrets to one node, and keeping them encrypted at rest on the coordinator.

**Sealed to a node.** A node's identity is its Ed25519 key; the same key, converted to X25519
(the birational map of RFC 7748 section 4.1, as libsodium's `crypto_sign_ed25519_pk_to_curve25519`),
is the node's encryption key, so nothing new is registered and only the holder of `node.key` can
open what is sealed to it. `seal` uses a fresh ephemeral X25519 key per envelope (ECIES):
key = HKDF-SHA256(X25519(ephemeral, node), salt = ephemeral public || node public,
info = "polyfabric-seal-v1" || context), then AES-256-GCM with a random nonce and the context as
associated data. The context binds the envelope to one attempt (`node id|task id|attempt`): an
envelope replayed for another attempt or node does not open.

**At rest.** Each secret value is encrypted with its own random data key (AES-256-GCM); the data
key is wrapped (AES-256-GCM) by the key-encryption key in the coordinator's key file
(`DATA_DIR/secrets.key`, 0600, a small JSON keyring). Rotation adds a key to the ring, re-wraps every
data key under it, then drops the old one: values are never re-encrypted and never leave memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets as _random
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from polyfabric.domain.errors import ValidationError
from polyfabric.security.keys import b64d, b64e

__all__ = [
    "Keyring",
    "SealError",
    "aead_decrypt",
    "aead_encrypt",
    "ed25519_to_x25519_private",
    "ed25519_to_x25519_public",
    "open_sealed",
    "seal",
]

_P = 2**255 - 19
_INFO = b"polyfabric-seal-v1"


class SealError(Exception):
    """An envelope that does not open (wrong node, wrong attempt, tampered, malformed)."""


# -- Ed25519 -> X25519 ----------------------------------------------------------------------------


def ed25519_to_x25519_public(ed_public_raw: bytes) -> bytes:
    """The Montgomery u-coordinate of an Ed25519 public key: u = (1 + y) / (1 - y) mod p."""
    if len(ed_public_raw) != 32:
        raise ValidationError(f"an Ed25519 public key has 32 bytes, got {len(ed_public_raw)}")
    y = int.from_bytes(ed_public_raw, "little") & ((1 << 255) - 1)
    if y >= _P or y == 1:
        raise ValidationError("not a usable Ed25519 public key")
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little")


def ed25519_to_x25519_private(key: Ed25519PrivateKey) -> X25519PrivateKey:
    """SHA-512 of the Ed25519 seed, first half (X25519 clamps it): the scalar Ed25519 signs with."""
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    return X25519PrivateKey.from_private_bytes(hashlib.sha512(seed).digest()[:32])


def _derive(shared: bytes, epk: bytes, rpk: bytes, context: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + rpk, info=_INFO + b"|" + context).derive(shared)


def seal(ed_public_raw: bytes, plaintext: bytes, context: str) -> dict[str, str]:
    """Encrypt `plaintext` so that only the holder of the node key can read it, for `context` only."""
    rpk = ed25519_to_x25519_public(ed_public_raw)
    ephemeral = X25519PrivateKey.generate()
    epk = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(rpk))
    key = _derive(shared, epk, rpk, context.encode())
    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, plaintext, context.encode())
    return {"v": "1", "epk": b64e(epk), "nonce": b64e(nonce), "ct": b64e(ct)}


def open_sealed(private_key: Ed25519PrivateKey, envelope: Any, context: str) -> bytes:
    """The plaintext of an envelope sealed to this key for `context`; SealError otherwise."""
    try:
        if not isinstance(envelope, dict) or envelope.get("v") != "1":
            raise SealError("not a sealed envelope of version 1")
        epk, nonce, ct = b64d(envelope["epk"]), b64d(envelope["nonce"]), b64d(envelope["ct"])
        me = ed25519_to_x25519_private(private_key)
        rpk = me.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        shared = me.exchange(X25519PublicKey.from_public_bytes(epk))
        key = _derive(shared, epk, rpk, context.encode())
        return AESGCM(key).decrypt(nonce, ct, context.encode())
    except SealError:
        raise
    except (InvalidTag, ValueError, KeyError, TypeError, ValidationError) as exc:
        raise SealError(f"the envelope does not open for this node and attempt ({type(exc).__name__})") from None


# -- AES-GCM at rest ----------------------------------------------------------------------------


def aead_encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """nonce (12 bytes) || AES-256-GCM ciphertext with tag."""
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:12], blob[12:], aad)
    except (InvalidTag, ValueError) as exc:
        raise SealError(f"cannot decrypt ({type(exc).__name__}): wrong key or tampered data") from None


class Keyring:
    """The coordinator's key-encryption keys, in one JSON file (0600): {"current": ID, "keys": {ID: b64}}.

    The file is created on first use. A key id is the first 16 hex digits of SHA-256 of the key."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._cached: tuple[tuple[int, int, int], dict[str, Any]] | None = None

    def _read(self) -> dict[str, Any]:
        """The keyring; re-read only when the file changed (a stat per call, not a read)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {"current": None, "keys": {}}
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._cached is not None and self._cached[0] == stamp and not (st.st_mode & 0o077):
            return {"current": self._cached[1]["current"], "keys": dict(self._cached[1]["keys"])}
        data = self._load()
        self._cached = (stamp, data)
        return {"current": data["current"], "keys": dict(data["keys"])}

    def _load(self) -> dict[str, Any]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return {"current": None, "keys": {}}
        with os.fdopen(fd, "rb") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            if os.name == "posix" and mode & 0o077:
                raise ValidationError(f"secrets key file {self.path} has mode {mode:04o}: "
                                      f"group and others must have no access (chmod 600 {self.path})")
            try:
                data = json.loads(handle.read())
                return {"current": data["current"], "keys": dict(data["keys"])}
            except (ValueError, KeyError, TypeError) as exc:
                raise ValidationError(f"secrets key file {self.path} is malformed: {exc}") from None

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{_random.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                os.fchmod(handle.fileno(), 0o600)
                json.dump(data, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    @staticmethod
    def key_id(key: bytes) -> str:
        return hashlib.sha256(key).hexdigest()[:16]

    def current(self) -> tuple[str, bytes]:
        """(key id, key), creating the keyring with a fresh key if there is none."""
        data = self._read()
        if data["current"] is None:
            key = AESGCM.generate_key(bit_length=256)
            kid = self.key_id(key)
            data = {"current": kid, "keys": {kid: b64e(key)}}
            self._write(data)
        return data["current"], b64d(data["keys"][data["current"]])

    def get(self, kid: str) -> bytes:
        data = self._read()
        if kid not in data["keys"]:
            raise ValidationError(
                f"this coordinator's secrets key file {self.path} has no key {kid} (with several coordinators, "
                "every one needs the same secrets.key)")
        return b64d(data["keys"][kid])

    def add_new(self) -> tuple[str, bytes]:
        """Add a fresh key (not yet current): written before anything is wrapped with it."""
        data = self._read()
        key = AESGCM.generate_key(bit_length=256)
        kid = self.key_id(key)
        data["keys"][kid] = b64e(key)
        self._write(data)
        return kid, key

    def make_only(self, kid: str) -> None:
        """Keep only key `kid`, as the current key (after every data key was re-wrapped with it)."""
        data = self._read()
        self._write({"current": kid, "keys": {kid: data["keys"][kid]}})
