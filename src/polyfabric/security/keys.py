"""Ed25519 keys: making them, turning them into bytes and back, and keeping them in files.

A node is its key (see `polyfabric.domain.ids`), so the private key file is guarded like an SSH
key: written atomically with mode 0600, and refused on load when group or others can reach it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from polyfabric.domain.errors import ValidationError

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "b64d",
    "b64e",
    "generate_private_key",
    "load_private_key",
    "private_key_from_pem",
    "private_key_to_pem",
    "public_key_from_raw",
    "public_key_raw",
    "save_private_key",
]

PUBLIC_KEY_SIZE = 32
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key from the operating system's randomness."""
    return Ed25519PrivateKey.generate()


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    """The unencrypted PKCS#8 PEM form (what `openssl genpkey -algorithm ed25519` writes)."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def private_key_from_pem(data: bytes) -> Ed25519PrivateKey:
    """Parse an unencrypted PEM private key; ValidationError unless it is an Ed25519 key."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValidationError(f"not a usable unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValidationError(f"expected an Ed25519 private key, got {type(key).__name__}")
    return key


def public_key_raw(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key (of a private key, or of a public key itself)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    """The public key object for 32 raw bytes; ValidationError for any other length."""
    if not isinstance(raw, bytes | bytearray) or len(raw) != PUBLIC_KEY_SIZE:
        size = len(raw) if isinstance(raw, bytes | bytearray) else type(raw).__name__
        raise ValidationError(f"an Ed25519 public key has {PUBLIC_KEY_SIZE} bytes, got {size}")
    return Ed25519PublicKey.from_public_bytes(bytes(raw))


def b64e(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5), the form keys travel in inside JSON."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    """Inverse of `b64e`; also accepts padded input. ValidationError on anything else."""
    if not isinstance(text, str):
        raise ValidationError(f"expected base64url text, got {type(text).__name__}")
    stripped = text.rstrip("=")
    if not _B64URL_RE.fullmatch(stripped) or len(stripped) % 4 == 1:
        raise ValidationError(f"{text[:20]!r} is not valid base64url")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise ValidationError(f"{text[:20]!r} is not valid base64url") from None


def save_private_key(path: Path, key: Ed25519PrivateKey, *, overwrite: bool = True) -> None:
    """Write `key` as PEM to `path` atomically, mode 0600.

    The key goes to a temporary file in the same directory, created 0600 from the start (never
    briefly readable by others), fsynced, then moved into place: a crash leaves the old file or
    the new one, never half a key. With `overwrite=False` an existing file is left alone and
    FileExistsError raised instead (two processes racing to create a key both end up with the
    winner's key).
    """
    path = Path(path)
    data = private_key_to_pem(key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)  # the umask may have removed the owner's bits
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails with FileExistsError, atomically, if the key is there
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key, refusing a file that group or others may access.

    Raises FileNotFoundError when there is no file, ValidationError when its mode is too open
    or its content is not an Ed25519 key.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if os.name == "posix" and mode & 0o077:
            raise ValidationError(
                f"private key {path} has mode {mode:04o}: group and others must have no access to it "
                f"(fix it with: chmod 600 {path})"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    try:
        return private_key_from_pem(b"".join(chunks))
    except ValidationError as exc:
        raise ValidationError(f"private key {path}: {exc.message}") from None


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; best effort (not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
