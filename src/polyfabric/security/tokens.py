"""Bearer tokens: join tokens (`pfj_`) that let a node register, API tokens (`pfa_`) for people.

A token is a kind prefix plus 32 random bytes in base64url. Only its SHA-256 is stored; the
first 12 characters are safe to show so a person can tell tokens apart. The prefix lets secret
scanners and humans recognize a leaked token, and lets the server reject junk before hashing.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from polyfabric.domain.errors import ValidationError

__all__ = ["TOKEN_PREFIXES", "looks_like_token", "new_token", "token_hash", "token_kind", "token_prefix"]

TOKEN_PREFIXES = {"join": "pfj_", "api": "pfa_"}
_RANDOM_BYTES = 32
# 32 bytes are 43 base64url characters without padding.
_TOKEN_RE = re.compile(r"pf[ja]_[A-Za-z0-9_-]{43}")
_DISPLAY_CHARS = 12


def new_token(kind: str) -> str:
    """A fresh token of `kind` ("join" or "api")."""
    try:
        prefix = TOKEN_PREFIXES[kind]
    except KeyError:
        raise ValidationError(
            f"unknown token kind {kind!r} (expected one of {', '.join(sorted(TOKEN_PREFIXES))})"
        ) from None
    return prefix + secrets.token_urlsafe(_RANDOM_BYTES)


def token_hash(token: str) -> str:
    """The hex SHA-256 of the token: what the store keeps and looks tokens up by."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_prefix(token: str) -> str:
    """The first 12 characters (kind prefix and 8 random ones): enough to tell tokens apart."""
    return token[:_DISPLAY_CHARS]


def looks_like_token(token: str) -> bool:
    """True when `token` has the shape of a polyfabric token (it may still be unknown)."""
    return isinstance(token, str) and _TOKEN_RE.fullmatch(token) is not None


def token_kind(token: str) -> str | None:
    """The kind ("join" or "api") of a well-formed token, None otherwise."""
    if not looks_like_token(token):
        return None
    return next(kind for kind, prefix in TOKEN_PREFIXES.items() if token.startswith(prefix))
