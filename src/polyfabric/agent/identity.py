"""The node's identity: its Ed25519 key, kept in the agent's data directory.

The node id is derived from the public key, so the key file *is* the node: an agent restarted
with the same data directory comes back as the same node, and copying the directory (or losing
it) copies (or loses) the node. The key never leaves the machine; requests carry signatures.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from polyfabric.domain.ids import node_id_from_public_key
from polyfabric.security import http_signatures
from polyfabric.security.keys import (
    Ed25519PrivateKey,
    b64e,
    generate_private_key,
    load_private_key,
    public_key_raw,
    save_private_key,
)

__all__ = ["KEY_FILE", "NodeIdentity", "load_or_create"]

KEY_FILE = "node.key"


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A node's private key, its raw public key and the node id derived from it."""

    private_key: Ed25519PrivateKey = field(repr=False)
    public_key_raw: bytes
    node_id: str

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey) -> NodeIdentity:
        raw = public_key_raw(private_key)
        return cls(private_key=private_key, public_key_raw=raw, node_id=node_id_from_public_key(raw))

    @classmethod
    def load_or_create(cls, data_dir: Path) -> NodeIdentity:
        return load_or_create(data_dir)

    @property
    def public_key_b64(self) -> str:
        """The public key as base64url without padding, the form it travels in JSON."""
        return b64e(self.public_key_raw)

    def sign_headers(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | list[tuple[str, str]],
        body: bytes,
        now: float,
    ) -> dict[str, str]:
        """The signature headers for a request from this node (key id = node id)."""
        return http_signatures.sign_request(
            method=method,
            url=url,
            headers=headers,
            body=body,
            private_key=self.private_key,
            key_id=self.node_id,
            now=now,
        )


def load_or_create(data_dir: Path) -> NodeIdentity:
    """The identity stored in `data_dir/node.key`, creating the directory (0700) and key if needed.

    A key file that exists but is unreadable, too open (not 0600) or corrupt raises rather than
    being replaced: replacing it would silently turn this machine into a different node.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.name == "posix":
            os.chmod(data_dir, 0o700)  # mkdir's mode is filtered by the umask
    path = data_dir / KEY_FILE
    try:
        return NodeIdentity.from_private_key(load_private_key(path))
    except FileNotFoundError:
        pass
    key = generate_private_key()
    try:
        save_private_key(path, key, overwrite=False)
    except FileExistsError:
        # Another process created the key between our two steps: its key is the node's key.
        return NodeIdentity.from_private_key(load_private_key(path))
    return NodeIdentity.from_private_key(key)
