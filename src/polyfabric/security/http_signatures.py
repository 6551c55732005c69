"""RFC 9421 HTTP message signatures (Ed25519) with an RFC 9530 Content-Digest over the body.

Every agent request is signed with the node's key, so the coordinator knows which node speaks
without shared secrets. The signature covers the method, the full target URI and the
Content-Digest (so the body); its `created` time bounds replays to the allowed clock skew.

The API is framework-neutral: a method, a URL string, headers as a mapping or a list of pairs and
the body as bytes go in; headers to add (signing) or the verified key id (verification) come out.
The `http_message_signatures` library builds and checks the signature base; this module adds the
policy around it (one signature labelled "pf", required components, skew against an injected
clock, specific error messages).

Verification has a fast path for the exact field shapes `sign_request` produces (every agent
request): the signature base of RFC 9421 section 2.5 is then three fixed lines plus the
signature parameters, built directly instead of through the library's structured-field parser,
which costs about half of a heartbeat's CPU. Anything else (other parameter order, several
signatures, other components) takes the library path, so both accept exactly the same requests;
tests check that they agree.

URLs are compared after a safe normalization only (`canonical_url`): scheme and host lowercased,
default port dropped, empty path made "/", userinfo, fragment and an empty "?" dropped. Path and
query are compared exactly as spelled. A server behind a proxy must rebuild the URL the client
used (its public base URL plus the raw path and query), not the one the proxy forwarded to.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import http_sf
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
)
from http_message_signatures.algorithms import ED25519

from polyfabric.domain.errors import NotAuthenticated, ValidationError

__all__ = [
    "ALGORITHM",
    "COVERED_COMPONENTS",
    "SIGNATURE_LABEL",
    "Headers",
    "canonical_url",
    "content_digest",
    "key_id_from_headers",
    "sign_request",
    "verify_request",
]

Headers = Mapping[str, str] | Iterable[tuple[str, str]]

SIGNATURE_LABEL = "pf"
ALGORITHM = "ed25519"
COVERED_COMPONENTS = ("@method", "@target-uri", "content-digest")

_DEFAULT_PORTS = {"http": "80", "https": "443"}
# The label of the first member of a Signature-Input dictionary (RFC 8941 key).
_LABEL_RE = re.compile(r"[ \t]*([a-z*][a-z0-9_\-.*]*)=")
# scheme "://" authority path ["?" query] ["#" fragment]; characters are checked by the library.
_URL_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?", re.DOTALL)
# The Signature-Input and Signature fields exactly as `sign_request` writes them (the fast path).
_FAST_INPUT_RE = re.compile(
    r'pf=(\("@method" "@target-uri" "content-digest"\);created=(\d{1,15});keyid="([A-Za-z0-9_.:\-]{1,200})"'
    r';alg="ed25519")'
)
_FAST_SIGNATURE_RE = re.compile(r"pf=:([A-Za-z0-9+/]{86}==):")


# --------------------------------------------------------------------------------------------
# public API


def content_digest(body: bytes) -> str:
    """`sha-256=:<base64>:`, the RFC 9530 Content-Digest field value for `body`."""
    return ContentDigest.create(bytes(body))


def canonical_url(url: str) -> str:
    """`url` with only the normalizations that cannot change which resource it names.

    Lowercases scheme and host, drops a default port (80/443), userinfo, a fragment and an
    empty query, and turns an empty path into "/". ValidationError if it is not absolute.
    """
    match = _URL_RE.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        raise ValidationError(f"{str(url)[:200]!r} is not an absolute http(s) URL")
    scheme, authority, path, query = match.groups()
    scheme = scheme.lower()
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, rest = hostport.partition("]")
        host += "]"
        port = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port = hostport.partition(":")
    if not host:
        raise ValidationError(f"{url[:200]!r} has no host")
    if port.isdigit():
        port = port.lstrip("0") or "0"
        if _DEFAULT_PORTS.get(scheme) == port:
            port = ""
    netloc = host.lower() + (f":{port}" if port else "")
    return f"{scheme}://{netloc}{path or '/'}{'?' + query if query else ''}"


def sign_request(
    *,
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    private_key: Ed25519PrivateKey,
    key_id: str,
    now: float,
) -> dict[str, str]:
    """The headers to add to a request so that `verify_request` accepts it.

    Returns `Content-Digest`, `Signature-Input` and `Signature` (label "pf", covering "@method",
    "@target-uri" and "content-digest", with created=int(now), keyid and alg="ed25519").
    `headers` are the request's other headers: only checked not to carry a conflicting
    Content-Digest. ValidationError for a malformed URL or method.
    """
    body = bytes(body)
    digest = content_digest(body)
    existing = _field(_pairs(headers), "content-digest")
    if existing is not None and existing != digest:
        raise ValidationError("the request already has a Content-Digest header that does not match its body")
    request = _Request(
        method=_method(method, ValidationError),
        url=canonical_url(url),
        headers=_HeaderLines([("Content-Digest", digest)]),
    )
    signer = HTTPMessageSigner(signature_algorithm=ED25519)  # prepare() needs no key resolver
    try:
        prepared = signer.prepare(
            request,
            key_id=key_id,
            created=datetime.datetime.fromtimestamp(int(now), tz=datetime.UTC),
            label=SIGNATURE_LABEL,
            covered_component_ids=COVERED_COMPONENTS,
            use_existing_digest=True,
        )
    except HTTPMessageSignaturesException as exc:
        raise ValidationError(f"cannot sign {method} {url[:200]}: {exc}") from None
    signature = private_key.sign(prepared.signature_base)
    # `HTTPMessageSigner.apply` would rebuild and compare the signature base a second time; the
    # message cannot have changed in between, so serialize the two fields directly (RFC 8941).
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{prepared.label}={prepared.signature_params}",
        "Signature": str(http_sf.ser({prepared.label: signature})),
    }


def verify_request(
    *,
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    resolve_key: Callable[[str], bytes | None],
    now: float,
    max_skew: float = 60.0,
) -> str:
    """Check a request signed by `sign_request`; return the key id that signed it.

    `resolve_key(key_id)` returns the raw 32-byte public key, or None for an unknown key. Raises
    NotAuthenticated naming the problem: missing or malformed signature headers, a missing
    parameter or covered component, `created` outside now ± max_skew, a missing or mismatched
    Content-Digest, an unknown key id, or a signature that does not verify.
    """
    pairs = _pairs(headers)
    signature_input = _field(pairs, "signature-input")
    signature_field = _field(pairs, "signature")
    if signature_input is None and signature_field is None:
        raise NotAuthenticated("the request is not signed: Signature and Signature-Input headers are missing")
    if signature_input is None:
        raise NotAuthenticated("the request has a Signature header but no Signature-Input header")
    if signature_field is None:
        raise NotAuthenticated("the request has a Signature-Input header but no Signature header")
    label = _LABEL_RE.match(signature_input)
    if label is None or label.group(1) != SIGNATURE_LABEL:
        raise NotAuthenticated(f"the Signature-Input header has no signature labelled {SIGNATURE_LABEL!r}")
    body = bytes(body)
    digest = _field(pairs, "content-digest")
    _check_digest(digest, body)
    fast = _FAST_INPUT_RE.fullmatch(signature_input)
    signature = _FAST_SIGNATURE_RE.fullmatch(signature_field) if fast else None
    if fast is not None and signature is not None:
        return _verify_fast(fast, signature.group(1), method=method, url=url, digest=digest or "",
                            resolve_key=resolve_key, now=now, max_skew=max_skew)
    try:
        request = _Request(
            method=_method(method, NotAuthenticated), url=canonical_url(url), headers=_HeaderLines(pairs)
        )
    except ValidationError as exc:
        raise NotAuthenticated(f"cannot verify the signature of this request: {exc.message}") from None

    # The library parses the signature fields once; the policy checks run inside it, through the
    # hooks of `_Verifier`, before it resolves the key and checks the signature.
    verifier = _Verifier(resolve_key, now=now, max_skew=max_skew)
    try:
        results = verifier.verify(request, max_age=None)
    except HTTPMessageSignaturesException as exc:
        if isinstance(exc.__cause__, NotAuthenticated):
            raise exc.__cause__ from None
        detail = str(exc).strip() or "it does not match this method, URL and body, or another key made it"
        whose = f" for key id {verifier.key_id!r}" if verifier.key_id else ""
        raise NotAuthenticated(f"bad signature{whose}: {detail}") from None
    # Belt and braces: what the library verified must be the one "pf" signature we checked.
    if len(results) != 1 or results[0].parameters.get("keyid") != verifier.key_id:
        raise NotAuthenticated("the request does not carry exactly one valid signature")
    return verifier.key_id


def _verify_fast(fields: re.Match[str], signature_b64: str, *, method: str, url: str, digest: str,
                 resolve_key: Callable[[str], bytes | None], now: float, max_skew: float) -> str:
    """The library's checks, for the one field shape `sign_request` writes, without its parser."""
    params, created, key_id = fields.group(1), int(fields.group(2)), fields.group(3)
    _check_times({"created": created}, now=now, max_skew=max_skew)
    try:
        target = canonical_url(url)
    except ValidationError as exc:
        raise NotAuthenticated(f"cannot verify the signature of this request: {exc.message}") from None
    base = (f'"@method": {_method(method, NotAuthenticated)}\n"@target-uri": {target}\n'
            f'"content-digest": {digest}\n"@signature-params": {params}')
    public_key = _public_key(resolve_key, key_id)
    try:
        public_key.verify(base64.b64decode(signature_b64, validate=True), base.encode("utf-8"))
    except (InvalidSignature, ValueError):
        raise NotAuthenticated(
            f"bad signature for key id {key_id!r}: it does not match this method, URL and body, "
            "or another key made it"
        ) from None
    return key_id


@functools.lru_cache(maxsize=65536)
def _load_public_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def _public_key(resolve_key: Callable[[str], bytes | None], key_id: str) -> Ed25519PublicKey:
    raw = resolve_key(key_id)
    if raw is None:
        raise NotAuthenticated(f"unknown key id {key_id!r}")
    try:
        return _load_public_key(bytes(raw))
    except (ValueError, TypeError):
        raise NotAuthenticated(f"the key registered for {key_id!r} is not a valid Ed25519 public key") from None


def key_id_from_headers(headers: Headers) -> str | None:
    """The keyid of the "pf" signature, unverified; None when absent or malformed.

    Lets a server pick the key before verifying (at registration the key arrives in the body).
    """
    value = _field(_pairs(headers), "signature-input")
    if value is None:
        return None
    params = _signature_params(value)
    key_id = params.get("keyid") if params is not None else None
    return key_id if isinstance(key_id, str) and key_id else None


# --------------------------------------------------------------------------------------------
# policy checks


def _signature_params(value: str) -> dict[str, Any] | None:
    """The parameters of the "pf" member of a Signature-Input value; None if there is none."""
    try:
        parsed = http_sf.parse(value.encode("ascii"), tltype="dictionary")
    except (ValueError, TypeError, UnicodeError):
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get(SIGNATURE_LABEL), tuple):
        return None
    member, params = parsed[SIGNATURE_LABEL]
    return dict(params) if isinstance(member, list) else None


def _check_params(params: Mapping[str, Any], components: Iterable[str]) -> str:
    """The key id, after checking the signature's parameters and covered components."""
    key_id = params.get("keyid")
    if not isinstance(key_id, str) or not key_id:
        raise NotAuthenticated("the signature has no keyid parameter")
    alg = params.get("alg", ALGORITHM)
    if alg != ALGORITHM:
        raise NotAuthenticated(f"signature algorithm {alg!r} is not accepted (only {ALGORITHM!r} is)")
    covered = set(components)
    missing = [name for name in COVERED_COMPONENTS if name not in covered]
    if missing:
        raise NotAuthenticated(
            f"the signature does not cover {', '.join(missing)} "
            f"(it must cover {', '.join(COVERED_COMPONENTS)})"
        )
    return key_id


def _check_times(params: Mapping[str, Any], *, now: float, max_skew: float) -> None:
    created = params.get("created")
    if type(created) is not int:
        raise NotAuthenticated("the signature has no created timestamp")
    if abs(created - now) > max_skew:
        raise NotAuthenticated(
            f"signature created at {created} is outside the allowed clock skew of ±{max_skew:g}s "
            f"(server time {int(now)}): a replayed request, or a clock that needs synchronizing"
        )
    expires = params.get("expires")
    if expires is not None and (type(expires) is not int or expires < now):
        raise NotAuthenticated("the signature has expired")


def _check_digest(value: str | None, body: bytes) -> None:
    if value is None:
        raise NotAuthenticated("the request has no Content-Digest header")
    if value == _sha256_field(body):  # the common case, without parsing
        return
    try:
        parsed = http_sf.parse(value.encode("ascii"), tltype="dictionary")
    except (ValueError, TypeError, UnicodeError):
        raise NotAuthenticated("the Content-Digest header is malformed") from None
    member = parsed.get("sha-256") if isinstance(parsed, dict) else None
    if member is None:
        raise NotAuthenticated("the Content-Digest header has no sha-256 digest")
    if not isinstance(member[0], bytes):
        raise NotAuthenticated("the Content-Digest header is malformed: sha-256 is not a :base64: value")
    if not hmac.compare_digest(member[0], hashlib.sha256(body).digest()):
        raise NotAuthenticated("Content-Digest does not match the request body (altered or truncated body)")


def _sha256_field(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def _method(method: str, error: type[Exception]) -> str:
    if not isinstance(method, str) or not method.isascii() or not method.isalpha():
        raise error(f"{str(method)[:20]!r} is not an HTTP method")
    return method.upper()


# --------------------------------------------------------------------------------------------
# adapters for http_message_signatures


def _pairs(headers: Headers) -> list[tuple[str, str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(name), str(value)) for name, value in items]


def _field(pairs: list[tuple[str, str]], name: str) -> str | None:
    """The combined value of a header, case-insensitively; None when absent."""
    values = [value.strip(" \t") for key, value in pairs if key.lower() == name]
    return ", ".join(values) if values else None


class _HeaderLines:
    """Header field lines in order, with the small mapping interface the library uses."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = list(pairs)

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._pairs))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(key.lower() == name.lower() for key, _ in self._pairs)

    def __getitem__(self, name: str) -> str:
        value = _field(self._pairs, name.lower())
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        del self[name]
        self._pairs.append((name, value))

    def __delitem__(self, name: str) -> None:
        self._pairs = [(key, value) for key, value in self._pairs if key.lower() != name.lower()]


@dataclass
class _Request:
    """The request-like object `http_message_signatures` signs and verifies."""

    method: str
    url: str
    headers: _HeaderLines


class _Verifier(HTTPMessageVerifier):
    """The library's verifier with polyfabric's policy in its hooks, and our clock instead of its own.

    `validate_created_and_expires` is the library's first step for each signature, and receives
    the parsed Signature-Input member: the place for the policy (parameters, covered components,
    skew against the injected `now`). The key resolver then asks `resolve_key`; a NotAuthenticated
    raised there travels out as the `__cause__` of the library's InvalidSignature.
    """

    def __init__(self, resolve_key: Callable[[str], bytes | None], *, now: float, max_skew: float) -> None:
        super().__init__(signature_algorithm=ED25519, key_resolver=_KeyResolver(resolve_key))
        self.now = now
        self.max_skew = max_skew
        self.key_id = ""

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        components = [item.value for item in sig_input if isinstance(item.value, str) and not item.params]
        self.key_id = _check_params(sig_input.params, components)
        _check_times(sig_input.params, now=self.now, max_skew=self.max_skew)


class _KeyResolver(HTTPSignatureKeyResolver):
    """Raw public keys from the caller's `resolve_key`, as cryptography key objects."""

    def __init__(self, resolve_key: Callable[[str], bytes | None]) -> None:
        self._resolve_key = resolve_key

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey:
        return _public_key(self._resolve_key, key_id)

    def resolve_private_key(self, key_id: str) -> Any:
        raise NotImplementedError("verification only")
