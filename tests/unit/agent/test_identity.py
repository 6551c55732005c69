"""The node identity: one key file in the data directory, one node id."""

from __future__ import annotations

import os
import stat

import pytest

from polyfabric.agent.identity import KEY_FILE, NodeIdentity, load_or_create
from polyfabric.domain.errors import ValidationError
from polyfabric.domain.ids import node_id_from_public_key, validate_node_id
from polyfabric.security.http_signatures import verify_request
from polyfabric.security.keys import b64d, generate_private_key, save_private_key


def test_creates_the_directory_and_a_0600_key(tmp_path):
    data_dir = tmp_path / "a" / "data"
    identity = load_or_create(data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / KEY_FILE).stat().st_mode) == 0o600
    assert validate_node_id(identity.node_id) == node_id_from_public_key(identity.public_key_raw)
    assert b64d(identity.public_key_b64) == identity.public_key_raw


def test_same_id_after_reload(tmp_path):
    first = load_or_create(tmp_path)
    again = NodeIdentity.load_or_create(tmp_path)
    assert again.node_id == first.node_id
    assert again.public_key_raw == first.public_key_raw
    assert load_or_create(tmp_path / "other").node_id != first.node_id


def test_an_existing_key_is_adopted(tmp_path):
    key = generate_private_key()
    save_private_key(tmp_path / KEY_FILE, key)
    assert load_or_create(tmp_path).node_id == NodeIdentity.from_private_key(key).node_id


def test_a_key_readable_by_others_is_refused_not_replaced(tmp_path):
    first = load_or_create(tmp_path)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(ValidationError, match="chmod 600"):
        load_or_create(tmp_path)
    os.chmod(tmp_path / KEY_FILE, 0o600)
    assert load_or_create(tmp_path).node_id == first.node_id


def test_a_corrupt_key_is_refused_not_replaced(tmp_path):
    path = tmp_path / KEY_FILE
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(ValidationError, match=KEY_FILE):
        load_or_create(tmp_path)
    assert path.read_bytes() == b"not a key"


def test_sign_headers_verify_as_the_node(tmp_path):
    identity = load_or_create(tmp_path)
    url, body = "https://coord.example/v1/nodes/heartbeat", b"{}"
    headers = identity.sign_headers("POST", url, {"Content-Type": "application/json"}, body, 1_750_000_000.0)
    key_id = verify_request(
        method="POST",
        url=url,
        headers=headers,
        body=body,
        resolve_key={identity.node_id: identity.public_key_raw}.get,
        now=1_750_000_010.0,
    )
    assert key_id == identity.node_id


def test_repr_hides_the_private_key(tmp_path):
    assert "private_key" not in repr(load_or_create(tmp_path))
