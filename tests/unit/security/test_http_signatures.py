"""RFC 9421 request signatures: the round trip, and a specific refusal for every failure mode."""

from __future__ import annotations

import base64
import datetime
import hashlib
import re

import pytest
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver
from http_message_signatures.algorithms import ED25519
from hypothesis import given, settings
from hypothesis import strategies as st

from polyfabric.domain.errors import NotAuthenticated, ValidationError
from polyfabric.security.http_signatures import (
    canonical_url,
    content_digest,
    key_id_from_headers,
    sign_request,
    verify_request,
)
from polyfabric.security.keys import generate_private_key, public_key_raw

NOW = 1_750_000_000.0
URL = "https://coord.example:8443/v1/nodes/n-aaaaaaaaaaaaaaaaaaaa/heartbeat?full=1"
BODY = b'{"telemetry": {"cpu_percent": 12.5}}'
KEY = generate_private_key()
RAW = public_key_raw(KEY)
KEY_ID = "n-aaaaaaaaaaaaaaaaaaaa"


def signed(*, method="POST", url=URL, body=BODY, now=NOW, key=KEY, key_id=KEY_ID, headers=None):
    base = dict(headers or {"Content-Type": "application/json"})
    return {
        **base,
        **sign_request(
            method=method, url=url, headers=base, body=body, private_key=key, key_id=key_id, now=now
        ),
    }


def verify(headers, *, method="POST", url=URL, body=BODY, now=NOW, keys=None, max_skew=60.0):
    keys = {KEY_ID: RAW} if keys is None else keys
    return verify_request(
        method=method, url=url, headers=headers, body=body, resolve_key=keys.get, now=now, max_skew=max_skew
    )


def refused(headers, pattern, **kwargs):
    with pytest.raises(NotAuthenticated, match=pattern) as info:
        verify(headers, **kwargs)
    return info.value


# --- the round trip ------------------------------------------------------------------------


def test_sign_returns_the_three_headers():
    added = sign_request(
        method="POST", url=URL, headers={}, body=BODY, private_key=KEY, key_id=KEY_ID, now=NOW
    )
    assert set(added) == {"Content-Digest", "Signature-Input", "Signature"}
    digest = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    assert added["Content-Digest"] == f"sha-256=:{digest}:"
    assert added["Signature-Input"] == (
        f'pf=("@method" "@target-uri" "content-digest");created={int(NOW)};keyid="{KEY_ID}";alg="ed25519"'
    )
    assert re.fullmatch(r"pf=:[A-Za-z0-9+/]{86}==:", added["Signature"])


def test_round_trip_returns_the_key_id():
    assert verify(signed()) == KEY_ID


def test_round_trip_with_header_pairs_and_any_case():
    headers = [(name.lower(), value) for name, value in signed().items()]
    assert verify(headers) == KEY_ID
    assert verify({name.upper(): value for name, value in signed().items()}) == KEY_ID


def test_round_trip_with_an_empty_body_and_a_get():
    headers = signed(method="get", body=b"", url="http://127.0.0.1:8000/v1/nodes")
    assert verify(headers, method="GET", body=b"", url="http://127.0.0.1:8000/v1/nodes") == KEY_ID


def test_created_is_the_whole_second_of_now():
    headers = signed(now=NOW + 0.999)
    assert f"created={int(NOW)};" in headers["Signature-Input"]


@pytest.mark.parametrize(
    ("signed_url", "seen_url"),
    [
        ("HTTPS://Coord.Example:443/v1/x?a=1", "https://coord.example/v1/x?a=1"),
        ("http://coord.example:80", "http://coord.example/"),
        ("https://user:pw@coord.example/v1/x#frag", "https://coord.example/v1/x"),
        ("https://coord.example/v1/x?", "https://coord.example/v1/x"),
        ("http://[::1]:8000/v1/x", "http://[::1]:8000/v1/x"),
    ],
)
def test_equivalent_urls_verify(signed_url, seen_url):
    assert verify(signed(url=signed_url), url=seen_url) == KEY_ID


@settings(max_examples=25, deadline=None)
@given(
    body=st.binary(max_size=2000),
    path=st.lists(st.text("abcXYZ019-._~", min_size=1, max_size=8), max_size=4),
)
def test_round_trip_for_any_body_and_path(body, path):
    url = "https://coord.example/" + "/".join(path)
    assert verify(signed(url=url, body=body), url=url, body=body) == KEY_ID


def test_sign_refuses_a_conflicting_content_digest_and_a_bad_url():
    with pytest.raises(ValidationError, match="Content-Digest"):
        sign_request(
            method="POST",
            url=URL,
            headers={"content-digest": content_digest(b"other")},
            body=BODY,
            private_key=KEY,
            key_id=KEY_ID,
            now=NOW,
        )
    with pytest.raises(ValidationError, match="absolute"):
        sign_request(
            method="POST", url="/v1/x", headers={}, body=b"", private_key=KEY, key_id=KEY_ID, now=NOW
        )


def test_canonical_url():
    assert canonical_url("HTTP://Example.COM:080/A/b?Q=1#x") == "http://example.com/A/b?Q=1"
    assert canonical_url("https://example.com:8443") == "https://example.com:8443/"
    assert canonical_url("https://example.com/a%2Fb") == "https://example.com/a%2Fb"  # never decoded
    with pytest.raises(ValidationError):
        canonical_url("example.com/x")


# --- every failure mode names its problem ----------------------------------------------------


def test_unsigned_request():
    refused({"Content-Type": "application/json"}, "not signed")


def test_missing_signature_or_signature_input():
    headers = signed()
    refused({k: v for k, v in headers.items() if k != "Signature"}, "no Signature header")
    refused({k: v for k, v in headers.items() if k != "Signature-Input"}, "no Signature-Input header")


def test_unknown_key_id():
    refused(signed(), "unknown key id 'n-aaaaaaaaaaaaaaaaaaaa'", keys={})


def test_signed_by_another_key():
    other = public_key_raw(generate_private_key())
    refused(signed(), "bad signature for key id", keys={KEY_ID: other})


def test_a_registered_key_that_is_not_ed25519():
    refused(signed(), "not a valid Ed25519 public key", keys={KEY_ID: b"short"})


def test_tampered_body():
    refused(signed(), "Content-Digest does not match the request body", body=BODY + b" ")


def test_tampered_body_with_a_recomputed_digest():
    headers = signed()
    headers["Content-Digest"] = content_digest(b"{}")
    refused(headers, "bad signature", body=b"{}")


def test_missing_or_malformed_content_digest():
    headers = signed()
    del headers["Content-Digest"]
    refused(headers, "no Content-Digest header")
    refused({**signed(), "Content-Digest": "sha-256=garbage"}, "Content-Digest header is malformed")
    refused({**signed(), "Content-Digest": "sha-256=:abc"}, "Content-Digest header is malformed")
    sha512 = base64.b64encode(hashlib.sha512(BODY).digest()).decode()
    refused({**signed(), "Content-Digest": f"sha-512=:{sha512}:"}, "no sha-256 digest")


@pytest.mark.parametrize(
    "seen_url",
    [
        "https://coord.example:8443/v1/nodes/n-bbbbbbbbbbbbbbbbbbbb/heartbeat?full=1",  # path
        "https://coord.example:8443/v1/nodes/n-aaaaaaaaaaaaaaaaaaaa/heartbeat?full=0",  # query
        "https://coord.example:8443/v1/nodes/n-aaaaaaaaaaaaaaaaaaaa/heartbeat",  # query dropped
        "https://other.example:8443/v1/nodes/n-aaaaaaaaaaaaaaaaaaaa/heartbeat?full=1",  # host
        "https://coord.example:9443/v1/nodes/n-aaaaaaaaaaaaaaaaaaaa/heartbeat?full=1",  # port
        "http://coord.example:8443/v1/nodes/n-aaaaaaaaaaaaaaaaaaaa/heartbeat?full=1",  # scheme
        "https://coord.example:8443/v1/nodes/n-aaaaaaaaaaaaaaaaaaaa/heartbeat/?full=1",  # slash
        "https://coord.example:8443/v1/nodes/n-aaaaaaaaaaaaaaaaaaaa/Heartbeat?full=1",  # case
    ],
)
def test_tampered_url(seen_url):
    refused(signed(), "bad signature", url=seen_url)


def test_tampered_method():
    refused(signed(), "bad signature", method="PUT")


@pytest.mark.parametrize("delta", [61, -61, 3600, -86400])
def test_replay_or_clock_outside_the_skew(delta):
    error = refused(signed(), "outside the allowed clock skew of ±60s", now=NOW + delta)
    assert str(int(NOW)) in error.message


@pytest.mark.parametrize("delta", [59, -59, 0])
def test_clock_inside_the_skew(delta):
    assert verify(signed(), now=NOW + delta) == KEY_ID


def test_max_skew_is_configurable():
    refused(signed(), "±5s", now=NOW + 6, max_skew=5)
    assert verify(signed(), now=NOW + 6, max_skew=10) == KEY_ID


def _library_signed(covered, *, body=None):
    """A request signed by the library directly, with other components than ours."""

    class Request:
        def __init__(self):
            self.method, self.url = "POST", canonical_url(URL)
            self.headers = {"Content-Digest": content_digest(BODY)}

    request = Request()
    signer = HTTPMessageSigner(
        signature_algorithm=ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={KEY_ID: KEY}),
    )
    signer.sign(
        request,
        key_id=KEY_ID,
        created=datetime.datetime.fromtimestamp(NOW, tz=datetime.UTC),
        label="pf",
        covered_component_ids=covered,
        body=body,
        use_existing_digest=True,
    )
    return request.headers


def test_the_library_and_this_module_agree():
    assert verify(_library_signed(("@method", "@target-uri", "content-digest"), body=BODY)) == KEY_ID


@pytest.mark.parametrize(
    ("covered", "missing"),
    [
        (("@method", "content-digest"), "@target-uri"),
        (("@target-uri", "content-digest"), "@method"),
        (("@method", "@target-uri"), "content-digest"),
        (("@method", "@authority", "@path"), "@target-uri, content-digest"),
    ],
)
def test_missing_covered_components(covered, missing):
    refused(_library_signed(covered), f"does not cover {missing} ")


def test_missing_keyid_alg_or_created():
    headers = signed()
    refused(
        {**headers, "Signature-Input": headers["Signature-Input"].replace(f';keyid="{KEY_ID}"', "")},
        "no keyid parameter",
    )
    refused(
        {
            **headers,
            "Signature-Input": headers["Signature-Input"].replace('alg="ed25519"', 'alg="hmac-sha256"'),
        },
        "algorithm 'hmac-sha256' is not accepted",
    )
    refused(
        {**headers, "Signature-Input": headers["Signature-Input"].replace(f";created={int(NOW)}", "")},
        "no created timestamp",
    )


def test_params_are_covered_by_the_signature():
    headers = signed()
    moved = headers["Signature-Input"].replace(f"created={int(NOW)}", f"created={int(NOW) + 1}")
    refused({**headers, "Signature-Input": moved}, "bad signature")


def test_other_labels_and_malformed_fields():
    headers = signed()
    refused(
        {**headers, "Signature-Input": headers["Signature-Input"].replace("pf=", "sig1=", 1)}, "labelled 'pf'"
    )
    refused({**headers, "Signature-Input": "pf=(garbage"}, "bad signature.*Signature-Input")
    refused({**headers, "Signature": "pf=:bm90IGEgc2lnbmF0dXJl:"}, "bad signature")
    refused({**headers, "Signature": headers["Signature"].replace("pf=", "other=")}, "different labels")
    two = headers["Signature-Input"] + ", " + headers["Signature-Input"].replace("pf=", "pf2=", 1)
    refused({**headers, "Signature-Input": two}, "bad signature")


# --- key_id_from_headers -------------------------------------------------------------------------


def test_key_id_from_headers():
    assert key_id_from_headers(signed()) == KEY_ID
    assert key_id_from_headers([(k.lower(), v) for k, v in signed(key_id="n-x").items()]) == "n-x"
    assert key_id_from_headers({}) is None
    assert key_id_from_headers({"Signature-Input": "pf=(garbage"}) is None
    assert key_id_from_headers({"Signature-Input": 'other=("@method");keyid="k"'}) is None


# --------------------------------------------------------------------------------------------
# the fast path (the field shapes sign_request writes) and the library path agree


OTHER_KEY_ID = "n-bbbbbbbbbbbbbbbbbbbb"
BOTH_KEYS = {KEY_ID: RAW, OTHER_KEY_ID: public_key_raw(generate_private_key())}


def _verdict(headers, **kwargs):
    try:
        return verify(headers, keys=BOTH_KEYS, **kwargs)
    except NotAuthenticated:
        return "refused"


_TAMPERS = st.sampled_from(["none", "method", "url", "body", "created", "keyid", "signature", "skew"])


@settings(max_examples=80, deadline=None)
@given(tamper=_TAMPERS, flip=st.integers(min_value=0, max_value=63))
def test_fast_path_and_library_path_agree(tamper, flip):
    import polyfabric.security.http_signatures as hs

    headers = signed()
    kwargs = {}
    if tamper == "method":
        kwargs["method"] = "PUT"
    elif tamper == "url":
        kwargs["url"] = URL + "x"
    elif tamper == "body":
        kwargs["body"] = BODY + b" "
    elif tamper == "skew":
        kwargs["now"] = NOW + 3600
    elif tamper == "created":
        older = f"created={int(NOW) - 1}"
        headers["Signature-Input"] = headers["Signature-Input"].replace(f"created={int(NOW)}", older)
    elif tamper == "keyid":
        headers["Signature-Input"] = headers["Signature-Input"].replace(KEY_ID, OTHER_KEY_ID)
    elif tamper == "signature":
        raw = bytearray(base64.b64decode(headers["Signature"][4:-1]))
        raw[flip] ^= 1
        headers["Signature"] = "pf=:" + base64.b64encode(bytes(raw)).decode() + ":"
    assert hs._FAST_INPUT_RE.fullmatch(headers["Signature-Input"]) is not None  # the fast path runs
    fast = _verdict(headers, **kwargs)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(hs, "_FAST_INPUT_RE", re.compile(r"(?!)"))  # never matches: the library path
        slow = _verdict(headers, **kwargs)
    assert fast == slow
    assert (fast == KEY_ID) == (tamper == "none")
