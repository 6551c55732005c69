"""The audit chain: a tamper-evident, append-only record of everything the fabric decided.

Why it exists
    Nodes of a polycentric fabric belong to different organizations. When one of them asks "who
    cordoned my node, and why?", the answer must be something they can check, not something they
    have to trust. Every state-changing act (a node registered, a transition, a token created) is
    appended as an `AuditRecord`, and each record carries the SHA-256 of its own canonical
    contents and the hash of the record before it. The coordinator periodically signs the head
    of the chain (`SignedHead`: seq, hash, time) with its Ed25519 key.

What it proves
    * Altering any record (any field) breaks that record's hash: `verify_chain` names its seq.
    * Removing or reordering records breaks the seq numbering or the prev_hash links.
    * Re-hashing an altered record to hide the change breaks the next record's prev_hash, so an
      attacker has to rewrite every later record, and then every signed head past the change no
      longer matches (and cannot be re-signed without the coordinator's private key).
    * Cutting records off the end is caught when a signed head covers them.

What it does not prove
    * Someone who rewrites the whole store *including the signed heads* and holds the
      coordinator's signing key (or who simply deletes all heads and re-hashes everything) produces
      a chain that verifies on its own. That is caught only by someone who holds an earlier export
      (its heads must still match) or who checks the heads against the coordinator's public key
      obtained out of band. Keep exports; compare them.
    * Records appended after the newest signed head can be removed without a trace.
    * The chain says what the coordinator recorded, not that it recorded everything, nor that what
      it recorded is true. Timestamps come from the coordinator's clock and are not checked.

Encoding (version 1)
    A record's hash is `sha256(canonical_bytes(fields)).hexdigest()` over the fields seq, at,
    actor, action, subject, domain, cause, details and prev_hash: JSON with sorted keys, no
    whitespace, `ensure_ascii=False`, UTF-8, `at` always a float, floats written by `repr` (so they
    parse back to the same value and re-encode to the same bytes); NaN and infinities are refused.
    The first record has seq 1 and prev_hash `GENESIS` (64 zeros).

    A head's signature covers `head_message(seq, hash, at)`: the ASCII line
    `polyfabric-audit-head/1` and a newline, followed by the canonical JSON of {at, hash, seq}.
    In memory `SignedHead.signature` is raw `bytes`; in exports it is standard base64 with padding.

    An export (`export_lines`) is JSON Lines in this order: one header line
    {"format": "polyfabric-audit/1", "public_key": <the key, base64>, "keys": {...}?}, then every head
    ({"type": "head", ...}, by seq), then every record ({"type": "record", ...}, by seq). Heads come
    first so that `parse_export` can hand them over before streaming the records. Offline
    verification is `parse_export` followed by `verify_chain`, with a signature verifier the caller
    builds from the header's public key (this module is pure and does no cryptography itself).
    The header itself is not signed: whoever can rewrite an export can also put a key of their own
    in it and sign new heads with that. Offline verification proves more than internal consistency
    only when the key it uses is pinned, i.e. compared with the coordinator's key as known from
    elsewhere (its configuration, an earlier export, a published fingerprint).

Pure: no I/O, clock, randomness or environment; the time (`at`) comes in as an argument.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from polyfabric.domain.errors import ValidationError

__all__ = [
    "EXPORT_FORMAT",
    "GENESIS",
    "HEAD_MESSAGE_PREFIX",
    "AuditRecord",
    "ChainReport",
    "SignedHead",
    "canonical_bytes",
    "content_hash",
    "export_lines",
    "head_from_dict",
    "head_message",
    "head_to_dict",
    "link",
    "parse_export",
    "record_from_dict",
    "record_to_dict",
    "sign_head",
    "verify_chain",
]

GENESIS = "0" * 64
"""The prev_hash of the first record."""

EXPORT_FORMAT = "polyfabric-audit/1"
"""The `format` of an export's header line."""

HEAD_MESSAGE_PREFIX = b"polyfabric-audit-head/1\n"
"""Domain separation: a head signature can never be mistaken for any other signed message."""

# The fields the hash covers, in the order records are written.
_HASHED_FIELDS = ("seq", "at", "actor", "action", "subject", "domain", "cause", "details", "prev_hash")
_RECORD_FIELDS = (*_HASHED_FIELDS, "hash")
_HEAD_FIELDS = ("seq", "hash", "at", "key_id", "signature")

SignatureVerifier = Callable[[bytes, bytes], bool]
"""`verify(message, signature) -> bool`: True only when `signature` is valid over `message`."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One link of the chain. Build new ones with `link`; never construct them by hand.

    `details` is a JSON object (dict) and must be treated as read-only: the hash covers it.
    """

    seq: int
    at: float
    actor: str
    action: str
    subject: str
    domain: str | None
    cause: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class SignedHead:
    """The coordinator's signature over the chain's head: "up to `seq`, the chain ends in `hash`".

    `at` is when the head was signed. `signature` is raw bytes (base64 only in exports), made
    over `head_message(seq, hash, at)` with the key named by `key_id`.
    """

    seq: int
    hash: str
    at: float
    key_id: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The verdict of `verify_chain`.

    ok             True when every record and every head checked out.
    records_checked  how many records were read (including the bad one, if any).
    first_bad_seq  the seq at which the chain first goes wrong (None when ok).
    problem        one sentence naming the record or head and what is wrong (None when ok).
    heads_checked  how many signed heads were compared against the chain.
    signatures_checked  how many of those had their signature verified (0 when no verifier was
                   given: then the heads prove nothing against someone who can write them).
    last_seq, last_hash  the last record that verified (start values when none did): pass them as
                   `start_seq=last_seq + 1, start_prev_hash=last_hash` to continue incrementally.
    """

    ok: bool
    records_checked: int
    first_bad_seq: int | None
    problem: str | None
    heads_checked: int
    signatures_checked: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS

    @property
    def summary(self) -> str:
        """A one-line verdict for people."""
        if not self.ok:
            return f"FAILED: {self.problem}"
        signed = f"{self.heads_checked} signed heads ({self.signatures_checked} signatures verified)"
        return f"OK: {self.records_checked} records, {signed}"


# ---------------------------------------------------------------------------------------------
# Canonical encoding and hashing


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# Characters that `str.splitlines` (and some editors) treat as line breaks but JSON leaves raw.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _export_line(value: Any) -> str:
    """One export line: canonical JSON, then escaped so it can be split on any line break."""
    text = _dumps(value)
    if any(char in text for char in _LINE_BREAKS):  # they can only occur inside JSON strings
        for char, escape in _LINE_BREAKS.items():
            text = text.replace(char, escape)
    return text + "\n"


def _encode(value: Any, what: str) -> bytes:
    try:
        return _dumps(value).encode("utf-8")
    except (TypeError, ValueError) as exc:  # not JSON-able, NaN/inf, cycles, lone surrogates
        raise ValidationError(f"{what} cannot be encoded canonically: {exc}") from None


def _check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValidationError(f"{name} must be at least {minimum}, got {value}")
    return value


def _check_time(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{name} must be a number (unix seconds), got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise ValidationError(f"{name} must be a finite number, got {value!r}")
    return result


def _check_str(value: Any, name: str, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        kind = "a string or null" if optional else "a string"
        raise ValidationError(f"{name} must be {kind}, got {type(value).__name__}")
    return value


def _hashed_fields(fields: Mapping[str, Any] | AuditRecord) -> dict[str, Any]:
    if isinstance(fields, AuditRecord):
        return {name: getattr(fields, name) for name in _HASHED_FIELDS}
    unknown = sorted(set(fields) - set(_RECORD_FIELDS))
    if unknown:
        raise ValidationError(f"unknown audit record field(s): {', '.join(unknown)}")
    missing = [name for name in _HASHED_FIELDS if name not in fields]
    if missing:
        raise ValidationError(f"audit record is missing field(s): {', '.join(missing)}")
    return {name: fields[name] for name in _HASHED_FIELDS}


def canonical_bytes(fields: Mapping[str, Any] | AuditRecord) -> bytes:
    """The bytes a record's hash covers: canonical JSON of every field except `hash`.

    `fields` is an `AuditRecord` or a mapping with the record's fields (`hash` may be present and
    is left out; any other unknown key is refused). `at` is encoded as a float, so 5 and 5.0 give
    the same bytes. Raises ValidationError when a value cannot be encoded.
    """
    data = _hashed_fields(fields)
    if isinstance(data["at"], int | float) and not isinstance(data["at"], bool):
        data["at"] = float(data["at"])
    return _encode(data, f"audit record {data.get('seq')!r}")


def content_hash(fields: Mapping[str, Any] | AuditRecord) -> str:
    """The hex SHA-256 of `canonical_bytes(fields)`: what a record's `hash` must be."""
    return hashlib.sha256(canonical_bytes(fields)).hexdigest()


def link(
    prev: AuditRecord | None,
    *,
    at: float,
    actor: str,
    action: str,
    subject: str,
    domain: str | None,
    cause: str,
    details: Mapping[str, Any],
) -> AuditRecord:
    """The record that follows `prev` (or the first record, when `prev` is None).

    `details` is copied through JSON, so the record holds exactly what an export would read back
    (tuples become lists) and later changes to the caller's dict do not touch the record.
    Raises ValidationError for ill-typed fields or details that are not JSON-able.
    """
    if prev is None:
        seq, prev_hash = 1, GENESIS
    else:
        seq, prev_hash = prev.seq + 1, prev.hash
    if not isinstance(details, Mapping):
        raise ValidationError(f"details must be a JSON object (dict), got {type(details).__name__}")
    fields: dict[str, Any] = {
        "seq": seq,
        "at": _check_time(at, "at"),
        "actor": _check_str(actor, "actor"),
        "action": _check_str(action, "action"),
        "subject": _check_str(subject, "subject"),
        "domain": _check_str(domain, "domain", optional=True),
        "cause": _check_str(cause, "cause"),
        "details": json.loads(_encode(dict(details), "details")),
        "prev_hash": prev_hash,
    }
    return AuditRecord(**fields, hash=content_hash(fields))


# ---------------------------------------------------------------------------------------------
# Signed heads


def head_message(seq: int, hash: str, at: float) -> bytes:
    """The bytes a head signature covers: `HEAD_MESSAGE_PREFIX` + canonical JSON {at, hash, seq}."""
    body = {
        "at": _check_time(at, "head at"),
        "hash": _check_str(hash, "head hash"),
        "seq": _check_int(seq, "head seq"),
    }
    return HEAD_MESSAGE_PREFIX + _encode(body, "signed head")


def sign_head(record: AuditRecord, *, at: float, key_id: str, sign: Callable[[bytes], bytes]) -> SignedHead:
    """Sign `record` as the chain's head at time `at`; `sign(message) -> signature` holds the key."""
    at = _check_time(at, "head at")
    signature = sign(head_message(record.seq, record.hash, at))
    return SignedHead(seq=record.seq, hash=record.hash, at=at, key_id=key_id, signature=bytes(signature))


# ---------------------------------------------------------------------------------------------
# Verification


def _check_head(head: SignedHead, verify_signature: SignatureVerifier | None) -> tuple[str | None, bool]:
    """(problem or None, whether the signature was verified) for one head, signature only."""
    if verify_signature is None:
        return None, False
    try:
        message = head_message(head.seq, head.hash, head.at)
        valid = verify_signature(message, head.signature)
    except Exception as exc:  # fail closed: a verifier that cannot decide has not said yes
        return f"signed head at seq {head.seq}: signature invalid ({type(exc).__name__}: {exc})", True
    if valid is not True:
        return f"signed head at seq {head.seq}: signature invalid", True
    return None, True


def verify_chain(
    records: Iterable[AuditRecord],
    *,
    heads: Iterable[SignedHead] = (),
    verify_signature: SignatureVerifier | None = None,
    start_prev_hash: str = GENESIS,
    start_seq: int | None = None,
) -> ChainReport:
    """Check a chain (in seq order) and the signed heads over it; stop at the first problem.

    Streaming: `records` is read once, one record at a time, so any iterable works, however long;
    only the heads are held in memory. Each record must hash to its contents, carry the next seq,
    and point at the previous record's hash. Each head must have a valid signature (when
    `verify_signature(message, signature)` is given; an exception from it counts as invalid) and
    name the hash of the record at its seq; a head past the last record means records were cut
    off the end.

    To verify a segment, pass the hash of the record before it as `start_prev_hash` (and its seq
    + 1 as `start_seq`; by default 1 from genesis, else the first record's seq). Heads before the
    segment are skipped, and so are all heads when an empty segment has no known start.

    Errors in the records' source (e.g. a ValidationError from `parse_export`) propagate.
    """
    pending: dict[int, list[SignedHead]] = {}
    for head in heads:
        pending.setdefault(head.seq, []).append(head)

    heads_checked = 0
    signatures_checked = 0
    records_checked = 0
    expected_seq = start_seq
    if expected_seq is None and start_prev_hash == GENESIS:
        expected_seq = 1
    prev_hash = start_prev_hash
    last_seq = (expected_seq - 1) if expected_seq is not None else 0

    def report(first_bad: int | None, problem: str | None) -> ChainReport:
        return ChainReport(
            ok=problem is None,
            records_checked=records_checked,
            first_bad_seq=first_bad,
            problem=problem,
            heads_checked=heads_checked,
            signatures_checked=signatures_checked,
            last_seq=last_seq,
            last_hash=prev_hash,
        )

    for record in records:
        records_checked += 1
        if expected_seq is None:  # a segment whose first seq was not given: trust the first one
            if isinstance(record.seq, bool) or not isinstance(record.seq, int):
                return report(None, f"record #{records_checked}: seq is not an integer")
            expected_seq = record.seq
            last_seq = expected_seq - 1
            for seq in [s for s in pending if s < expected_seq]:
                del pending[seq]
        where = f"record {expected_seq}"
        try:
            actual_hash = content_hash(record)
        except ValidationError as exc:
            return report(expected_seq, f"{where}: cannot be encoded ({exc.message})")
        if actual_hash != record.hash:
            return report(expected_seq, f"{where}: hash does not match its contents (altered)")
        if record.seq != expected_seq:
            return report(
                expected_seq,
                f"{where}: expected seq {expected_seq}, found {record.seq} "
                "(a record was removed or reordered)",
            )
        if record.prev_hash != prev_hash:
            if records_checked > 1:
                before = f"record {expected_seq - 1}'s hash"
            elif start_prev_hash == GENESIS:
                before = "the genesis hash (64 zeros)"
            else:
                before = f"the start hash given for record {expected_seq - 1}"
            return report(expected_seq, f"{where}: prev_hash does not match {before}")
        prev_hash = record.hash
        last_seq = expected_seq
        for head in pending.pop(expected_seq, ()):
            heads_checked += 1
            problem, verified = _check_head(head, verify_signature)
            signatures_checked += verified
            if problem is not None:
                return report(expected_seq, problem)
            if head.hash != record.hash:
                return report(
                    expected_seq,
                    f"signed head at seq {head.seq}: hash differs from record {expected_seq} "
                    "(records up to it were rewritten)",
                )
        expected_seq += 1

    if expected_seq is None:  # an empty segment with no known start: no head can be placed
        return report(None, None)
    for seq in sorted(s for s in pending if s >= expected_seq):
        for head in pending[seq]:
            heads_checked += 1
            problem, verified = _check_head(head, verify_signature)
            signatures_checked += verified
            if problem is not None:
                return report(expected_seq, problem)
            end = f"which ends at seq {last_seq}" if last_seq > 0 else "which is empty"
            return report(
                expected_seq,
                f"signed head at seq {seq} is past the end of the chain, {end} "
                "(records were removed from the end)",
            )
    return report(None, None)


# ---------------------------------------------------------------------------------------------
# Dicts and the export format


def record_to_dict(record: AuditRecord) -> dict[str, Any]:
    """A record as a JSON-able dict with every field, `hash` included."""
    return {name: getattr(record, name) for name in _RECORD_FIELDS}


def record_from_dict(data: Mapping[str, Any]) -> AuditRecord:
    """The record a dict describes; ValidationError for missing, unknown or ill-typed fields.

    Only the shape is checked here; whether the hashes hold is `verify_chain`'s job.
    """
    if not isinstance(data, Mapping):
        raise ValidationError(f"an audit record must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_RECORD_FIELDS))
    if unknown:
        raise ValidationError(f"unknown audit record field(s): {', '.join(unknown)}")
    missing = [name for name in _RECORD_FIELDS if name not in data]
    if missing:
        raise ValidationError(f"audit record is missing field(s): {', '.join(missing)}")
    details = data["details"]
    if not isinstance(details, dict):
        raise ValidationError(f"details must be a JSON object, got {type(details).__name__}")
    return AuditRecord(
        seq=_check_int(data["seq"], "seq"),
        at=_check_time(data["at"], "at"),
        actor=_check_str(data["actor"], "actor"),
        action=_check_str(data["action"], "action"),
        subject=_check_str(data["subject"], "subject"),
        domain=_check_str(data["domain"], "domain", optional=True),
        cause=_check_str(data["cause"], "cause"),
        details=details,
        prev_hash=_check_str(data["prev_hash"], "prev_hash"),
        hash=_check_str(data["hash"], "hash"),
    )


def head_to_dict(head: SignedHead) -> dict[str, Any]:
    """A head as a JSON-able dict; the signature as standard base64."""
    return {
        "seq": head.seq,
        "hash": head.hash,
        "at": head.at,
        "key_id": head.key_id,
        "signature": base64.b64encode(head.signature).decode("ascii"),
    }


def head_from_dict(data: Mapping[str, Any]) -> SignedHead:
    """The head a dict describes (signature in base64); ValidationError when malformed."""
    if not isinstance(data, Mapping):
        raise ValidationError(f"a signed head must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_HEAD_FIELDS))
    if unknown:
        raise ValidationError(f"unknown signed head field(s): {', '.join(unknown)}")
    missing = [name for name in _HEAD_FIELDS if name not in data]
    if missing:
        raise ValidationError(f"signed head is missing field(s): {', '.join(missing)}")
    signature = _check_str(data["signature"], "signature")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("signature is not valid base64") from None
    return SignedHead(
        seq=_check_int(data["seq"], "seq"),
        hash=_check_str(data["hash"], "hash"),
        at=_check_time(data["at"], "at"),
        key_id=_check_str(data["key_id"], "key_id"),
        signature=raw,
    )


def export_lines(
    records: Iterable[AuditRecord],
    heads: Iterable[SignedHead],
    coordinator_public_key_b64: str,
    *,
    keys: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """The export as JSON Lines, each ending in a newline: header, heads (by seq), records.

    `coordinator_public_key_b64` is the exporting coordinator's key; `keys` ({key_id: public key
    in base64}, optional) lists every coordinator key that may have signed heads, and goes into
    the header as "keys". Both are informational: a verifier that matters pins the keys it trusts.

    Lines are UTF-8 text; besides what JSON escapes, U+0085, U+2028 and U+2029 are escaped, so
    the export survives any line splitting (`str.splitlines`, editors). Only the line's encoding
    changes: the parsed values, and so the hashes, are the same.

    Records are streamed in the order given (which should be seq order); heads are sorted.
    `f.writelines(export_lines(...))` writes a complete export.
    """
    header: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "public_key": _check_str(coordinator_public_key_b64, "public_key"),
    }
    if keys:
        header["keys"] = {
            _check_str(key_id, "key id"): _check_str(value, f"public key {key_id!r}")
            for key_id, value in keys.items()
        }
    yield _export_line(header)
    for head in sorted(heads, key=lambda h: h.seq):
        yield _export_line({"type": "head", **head_to_dict(head)})
    for record in records:
        try:
            yield _export_line({"type": "record", **record_to_dict(record)})
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"record {record.seq} cannot be exported: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse_line(number: int, line: str) -> dict[str, Any]:
    try:
        value = json.loads(line, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise ValidationError(f"line {number}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValidationError(f"line {number}: expected a JSON object, got {type(value).__name__}")
    return value


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not isinstance(line, str):
            raise ValidationError(f"line {number}: expected text, got {type(line).__name__}")
        if line.strip():
            yield number, _parse_line(number, line)


def _item(number: int, data: dict[str, Any]) -> AuditRecord | SignedHead:
    kind = data.pop("type", None)
    try:
        if kind == "record":
            return record_from_dict(data)
        if kind == "head":
            return head_from_dict(data)
    except ValidationError as exc:
        raise ValidationError(f"line {number}: {kind}: {exc.message}") from None
    raise ValidationError(f"line {number}: unknown line type {kind!r} (expected 'record' or 'head')")


def parse_export(
    lines: Iterable[str],
) -> tuple[dict[str, Any], Iterator[AuditRecord], list[SignedHead]]:
    """Read an export: (header, records as a lazy iterator, heads).

    The header is returned as read (it has "format" and "public_key", maybe "keys"): it is not
    covered by any hash or signature, so build the signature verifier from keys you trust (compare
    the header's keys with ones obtained out of band). The heads are read at once; the records
    are parsed as the iterator is consumed, so a file of any size can be verified in one pass.
    Any malformed line raises ValidationError naming its line number (for record lines, when the
    iterator reaches them). Blank lines are ignored; lines may keep their trailing newline.
    """
    numbered = _numbered(lines)
    first = next(numbered, None)
    if first is None:
        raise ValidationError("line 1: the export is empty (expected a header line)")
    number, header = first
    if "type" in header or header.get("format") != EXPORT_FORMAT:
        raise ValidationError(
            f"line {number}: not a polyfabric audit export header "
            f"(expected format {EXPORT_FORMAT!r}, got {header.get('format')!r})"
        )
    if not isinstance(header.get("public_key"), str):
        raise ValidationError(f"line {number}: the header has no public_key string")

    heads: list[SignedHead] = []
    first_record: tuple[int, AuditRecord] | None = None
    for number, data in numbered:
        item = _item(number, data)
        if isinstance(item, AuditRecord):
            first_record = (number, item)
            break
        heads.append(item)

    def records() -> Iterator[AuditRecord]:
        if first_record is None:
            return
        yield first_record[1]
        for number, data in numbered:
            item = _item(number, data)
            if isinstance(item, SignedHead):
                raise ValidationError(
                    f"line {number}: a signed head after the records "
                    f"({EXPORT_FORMAT} puts every head before the first record)"
                )
            yield item

    return header, records(), heads
