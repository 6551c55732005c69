"""A coordinator signer with a fresh Ed25519 key, for service tests that build `Services` in process
(the audit chain's signed heads, manifests): what `coordinator.bootstrap.CoordinatorSigner` is,
without a key file."""

from __future__ import annotations

from polyfabric.security.keys import b64e, generate_private_key, public_key_raw
from polyfabric.security.signing import sign_bytes

__all__ = ["TestSigner"]


class TestSigner:
    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, key_id: str = "c-test") -> None:
        self._key = generate_private_key()
        self.key_id = key_id
        self.public_key_b64 = b64e(public_key_raw(self._key))

    def sign(self, data: bytes) -> bytes:
        return sign_bytes(self._key, data)
