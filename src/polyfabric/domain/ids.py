"""Identifiers: how objects are named, parsed and formatted.

A node's id is derived from its Ed25519 public key, so a node *is* its key: nobody can claim
an id without holding the private key, and a restarted agent with the same key is the same node.
Other ids are minted at the edges (an `IdSource` port) and only validated here.
"""

from __future__ import annotations

import base64
import hashlib
import re

from polyfabric.domain.errors import ValidationError

__all__ = [
    "DOMAIN_NAME_RE",
    "NODE_ID_RE",
    "node_id_from_public_key",
    "validate_domain_name",
    "validate_node_id",
    "validate_node_name",
]

NODE_ID_RE = re.compile(r"^n-[a-z2-7]{20}$")
DOMAIN_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NODE_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")


def node_id_from_public_key(public_key: bytes) -> str:
    """`n-` + 20 base32 characters (100 bits) of SHA-256 over the raw 32-byte public key."""
    if len(public_key) != 32:
        raise ValidationError(f"an Ed25519 public key has 32 bytes, got {len(public_key)}")
    digest = hashlib.sha256(public_key).digest()
    return "n-" + base64.b32encode(digest).decode("ascii").lower()[:20]


def validate_node_id(value: str) -> str:
    if not NODE_ID_RE.match(value):
        raise ValidationError(f"{value!r} is not a node id (expected n- and 20 base32 characters)")
    return value


def validate_domain_name(value: str) -> str:
    if not DOMAIN_NAME_RE.match(value):
        raise ValidationError(
            f"{value!r} is not a valid domain name: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def validate_node_name(value: str) -> str:
    if not NODE_NAME_RE.match(value):
        raise ValidationError(
            f"{value!r} is not a valid node name: use 1-64 letters, digits, '.', '_' and '-'"
        )
    return value
