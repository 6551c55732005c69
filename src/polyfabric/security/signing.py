"""Raw Ed25519 signatures over bytes, for what is not an HTTP request.

Used for proofs of key possession and signed documents (a join proof, a result manifest).
Verification answers a yes or no and never raises, so a forged input cannot crash a caller.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["sign_bytes", "verify_bytes"]


def sign_bytes(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The 64-byte Ed25519 signature of `data`."""
    return private_key.sign(data)


def verify_bytes(public_key_raw: bytes, data: bytes, signature: bytes) -> bool:
    """True when `signature` is `data` signed by the key whose raw 32 bytes are `public_key_raw`.

    False (never an exception) for a wrong signature, a malformed key or signature, or wrong types.
    """
    try:
        public = Ed25519PublicKey.from_public_bytes(bytes(public_key_raw))
        public.verify(bytes(signature), bytes(data))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
