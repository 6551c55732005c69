"""Bearer tokens: shape, hashing and display prefix."""

from __future__ import annotations

import hashlib

import pytest

from polyfabric.domain.errors import ValidationError
from polyfabric.security.tokens import looks_like_token, new_token, token_hash, token_kind, token_prefix


@pytest.mark.parametrize(("kind", "prefix"), [("join", "pfj_"), ("api", "pfa_")])
def test_new_token_has_its_kind_prefix_and_32_random_bytes(kind, prefix):
    token = new_token(kind)
    assert token.startswith(prefix)
    assert len(token) == 4 + 43
    assert looks_like_token(token)
    assert token_kind(token) == kind


def test_tokens_are_unique():
    assert len({new_token("api") for _ in range(200)}) == 200


def test_unknown_kind_is_refused():
    with pytest.raises(ValidationError, match="unknown token kind"):
        new_token("admin")


def test_hash_and_prefix():
    token = new_token("join")
    assert token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
    assert len(token_hash(token)) == 64
    assert token_prefix(token) == token[:12]
    assert token_prefix(token).startswith("pfj_")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pfj_",
        "pfx_" + "a" * 43,
        "pfj_" + "a" * 42,
        "pfj_" + "a" * 44,
        "pfj_" + "a" * 42 + "+",
        "pfj_" + "a" * 43 + "\n",
        " pfj_" + "a" * 43,
        None,
        12,
    ],
)
def test_looks_like_token_rejects_other_shapes(text):
    assert not looks_like_token(text)
    assert token_kind(text) is None
