"""The audit hash chain: building, tamper detection, signed heads and the export format."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import itertools
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from polyfabric.domain.audit import (
    EXPORT_FORMAT,
    GENESIS,
    HEAD_MESSAGE_PREFIX,
    AuditRecord,
    ChainReport,
    SignedHead,
    canonical_bytes,
    content_hash,
    export_lines,
    head_from_dict,
    head_message,
    head_to_dict,
    link,
    parse_export,
    record_from_dict,
    record_to_dict,
    sign_head,
    verify_chain,
)
from polyfabric.domain.errors import ValidationError

SLOW = settings(deadline=None, max_examples=75, suppress_health_check=[HealthCheck.too_slow])

# --- a stand-in for the coordinator's key: HMAC-SHA256 (the domain never does real crypto) ------

_KEY = b"coordinator-test-key"


def fake_sign(message: bytes, key: bytes = _KEY) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def fake_verify(message: bytes, signature: bytes) -> bool:
    return hmac.compare_digest(fake_sign(message), signature)


# --- strategies ------------------------------------------------------------------------------------

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | finite_floats | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
details_st = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)

entries = st.fixed_dictionaries(
    {
        "at": st.floats(min_value=0, max_value=4e9, allow_nan=False),
        "actor": st.sampled_from(["token:admin", "node:n-abcdefghijklmnopqrst", "system:health"])
        | st.text(max_size=12),
        "action": st.sampled_from(["node.registered", "node.transition", "token.created"]),
        "subject": st.text(max_size=16),
        "domain": st.none() | st.text(max_size=10),
        "cause": st.text(max_size=20),
        "details": details_st,
    }
)


def build_chain(items: list[dict[str, Any]]) -> list[AuditRecord]:
    chain: list[AuditRecord] = []
    for item in items:
        chain.append(link(chain[-1] if chain else None, **item))
    return chain


def chains(min_size: int = 1, max_size: int = 20) -> st.SearchStrategy[list[AuditRecord]]:
    return st.lists(entries, min_size=min_size, max_size=max_size).map(build_chain)


def simple_chain(n: int, start: float = 1_700_000_000.0) -> list[AuditRecord]:
    return build_chain(
        [
            {
                "at": start + i,
                "actor": "token:admin",
                "action": "node.transition",
                "subject": f"node:n-{i}",
                "domain": "lab",
                "cause": f"step {i}",
                "details": {"i": i},
            }
            for i in range(n)
        ]
    )


def head_for(record: AuditRecord, at: float = 1_800_000_000.0, key: bytes = _KEY) -> SignedHead:
    return sign_head(record, at=at, key_id="k1", sign=lambda m: fake_sign(m, key))


# Per field: values a tamperer might put there.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "seq": st.integers(min_value=1, max_value=10**6),
    "at": finite_floats,
    "actor": st.text(max_size=12),
    "action": st.text(max_size=12),
    "subject": st.text(max_size=12),
    "domain": st.none() | st.text(max_size=10),
    "cause": st.text(max_size=12),
    "details": details_st,
    "prev_hash": hex64,
    "hash": hex64,
}


# --- building -------------------------------------------------------------------------------------


@SLOW
@given(chains())
def test_any_chain_built_by_link_verifies(chain: list[AuditRecord]) -> None:
    assert [r.seq for r in chain] == list(range(1, len(chain) + 1))
    assert chain[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(chain):
        assert after.prev_hash == before.hash
    report = verify_chain(chain)
    assert report == ChainReport(
        ok=True,
        records_checked=len(chain),
        first_bad_seq=None,
        problem=None,
        heads_checked=0,
        signatures_checked=0,
        last_seq=len(chain),
        last_hash=chain[-1].hash,
    )
    assert report.summary.startswith("OK:")


@SLOW
@given(chains(max_size=5))
def test_record_dict_round_trip(chain: list[AuditRecord]) -> None:
    for record in chain:
        data = json.loads(json.dumps(record_to_dict(record)))
        assert record_from_dict(data) == record
        assert content_hash(record_from_dict(data)) == record.hash


def test_hash_is_sha256_of_canonical_bytes() -> None:
    record = simple_chain(1)[0]
    assert record.hash == hashlib.sha256(canonical_bytes(record)).hexdigest()
    assert len(record.hash) == 64
    assert canonical_bytes(record) == canonical_bytes(record_to_dict(record))


def test_canonical_bytes_form() -> None:
    fields = {
        "seq": 1,
        "at": 5,
        "actor": "token:admin",
        "action": "node.registered",
        "subject": "node:n-abc",
        "domain": None,
        "cause": "grüße ✓",
        "details": {"b": 1, "a": [1.5, None]},
        "prev_hash": GENESIS,
        "hash": "ignored",
    }
    raw = canonical_bytes(fields)
    assert (
        raw
        == (
            '{"action":"node.registered","actor":"token:admin","at":5.0,"cause":"grüße ✓",'
            '"details":{"a":[1.5,null],"b":1},"domain":null,"prev_hash":"' + GENESIS + '","seq":1,'
            '"subject":"node:n-abc"}'
        ).encode()
    )
    assert b'hash":"ignored' not in raw
    assert canonical_bytes({**fields, "at": 5.0, "hash": "other"}) == raw  # int/float `at`, no hash


@pytest.mark.parametrize(
    "change, message",
    [
        ({"type": "record"}, "unknown audit record field"),
        ({"details": {"x": float("nan")}}, "cannot be encoded"),
        ({"details": {"x": {1, 2}}}, "cannot be encoded"),
    ],
)
def test_canonical_bytes_refuses(change: dict[str, Any], message: str) -> None:
    fields = record_to_dict(simple_chain(1)[0])
    with pytest.raises(ValidationError, match=message):
        canonical_bytes({**fields, **change})


def test_canonical_bytes_needs_every_field() -> None:
    fields = record_to_dict(simple_chain(1)[0])
    del fields["cause"]
    with pytest.raises(ValidationError, match=r"missing field.*cause"):
        canonical_bytes(fields)


@given(finite_floats)
def test_any_time_survives_an_export(at: float) -> None:
    record = link(None, at=at, actor="a", action="b", subject="c", domain=None, cause="", details={})
    line = next(itertools.islice(export_lines([record], [], "pk"), 1, None))
    parsed = record_from_dict({k: v for k, v in json.loads(line).items() if k != "type"})
    assert parsed == record
    assert content_hash(parsed) == record.hash


def test_link_copies_details_through_json() -> None:
    details: dict[str, Any] = {"ids": ("a", "b"), "n": {3: "three"}}
    record = link(None, at=1.0, actor="a", action="b", subject="c", domain=None, cause="", details=details)
    assert record.details == {"ids": ["a", "b"], "n": {"3": "three"}}
    details["ids"] = "changed"
    assert verify_chain([record]).ok


@pytest.mark.parametrize(
    "change, message",
    [
        ({"at": True}, "at must be a number"),
        ({"at": float("inf")}, "finite"),
        ({"actor": None}, "actor must be a string"),
        ({"domain": 3}, "domain must be a string or null"),
        ({"details": ["not", "a", "dict"]}, "details must be a JSON object"),
        ({"details": {"when": object()}}, "cannot be encoded"),
        ({"details": {"x": float("nan")}}, "cannot be encoded"),
        ({"details": {"x": 1, 2: "mixed key types"}}, "cannot be encoded"),
        ({"cause": "lone surrogate \ud800"}, "cannot be encoded"),
    ],
)
def test_link_refuses_bad_fields(change: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "at": 1.0,
        "actor": "a",
        "action": "b",
        "subject": "c",
        "domain": None,
        "cause": "",
        "details": {},
    }
    with pytest.raises(ValidationError, match=message):
        link(None, **{**fields, **change})


# --- tamper detection -------------------------------------------------------------------------------


@SLOW
@given(st.data())
def test_altering_any_field_of_any_record_is_detected_at_that_seq(data: st.DataObject) -> None:
    chain = data.draw(chains())
    index = data.draw(st.integers(0, len(chain) - 1), label="index")
    name = data.draw(st.sampled_from(sorted(FIELD_VALUES)), label="field")
    original = chain[index]
    value = data.draw(FIELD_VALUES[name], label="value")
    tampered = dataclasses.replace(original, **{name: value})
    if name == "hash":
        assume(value != original.hash)
    else:
        assume(content_hash(tampered) != original.hash)
    chain[index] = tampered

    report = verify_chain(chain)
    assert not report.ok
    assert report.first_bad_seq == index + 1
    assert report.problem == f"record {index + 1}: hash does not match its contents (altered)"
    assert report.last_seq == index
    assert report.last_hash == (chain[index - 1].hash if index else GENESIS)
    assert report.summary.startswith("FAILED: record")


@SLOW
@given(st.data())
def test_an_altered_and_rehashed_record_breaks_the_next_link(data: st.DataObject) -> None:
    chain = data.draw(chains(min_size=2))
    index = data.draw(st.integers(0, len(chain) - 2), label="index")
    cause = data.draw(st.text(max_size=10), label="cause")
    assume(cause != chain[index].cause)
    forged = dataclasses.replace(chain[index], cause=cause)
    chain[index] = dataclasses.replace(forged, hash=content_hash(forged))

    report = verify_chain(chain)
    assert report.first_bad_seq == index + 2
    assert report.problem == f"record {index + 2}: prev_hash does not match record {index + 1}'s hash"


def test_a_rehashed_last_record_is_caught_only_by_a_signed_head() -> None:
    chain = simple_chain(5)
    head = head_for(chain[-1])
    forged = dataclasses.replace(chain[-1], cause="nothing to see")
    chain[-1] = dataclasses.replace(forged, hash=content_hash(forged))
    assert verify_chain(chain).ok  # the limit: nothing after it to break
    report = verify_chain(chain, heads=[head], verify_signature=fake_verify)
    assert report.first_bad_seq == 5
    assert report.problem is not None
    assert report.problem.startswith("signed head at seq 5: hash differs from record 5")


def test_a_wrong_genesis_link_is_named() -> None:
    first = simple_chain(1)[0]
    forged = dataclasses.replace(first, prev_hash="f" * 64)
    forged = dataclasses.replace(forged, hash=content_hash(forged))
    report = verify_chain([forged])
    assert report.problem == "record 1: prev_hash does not match the genesis hash (64 zeros)"


@SLOW
@given(st.data())
def test_deleting_any_record_but_the_last_is_detected(data: st.DataObject) -> None:
    chain = data.draw(chains(min_size=2))
    index = data.draw(st.integers(0, len(chain) - 2), label="index")
    del chain[index]
    report = verify_chain(chain)
    assert not report.ok
    assert report.first_bad_seq == index + 1
    assert report.problem == (
        f"record {index + 1}: expected seq {index + 1}, found {index + 2} (a record was removed or reordered)"
    )


@SLOW
@given(st.data())
def test_swapping_two_records_is_detected(data: st.DataObject) -> None:
    chain = data.draw(chains(min_size=2))
    i, j = sorted(data.draw(st.lists(st.integers(0, len(chain) - 1), min_size=2, max_size=2, unique=True)))
    chain[i], chain[j] = chain[j], chain[i]
    report = verify_chain(chain)
    assert not report.ok
    assert report.first_bad_seq == i + 1
    assert report.problem == (
        f"record {i + 1}: expected seq {i + 1}, found {j + 1} (a record was removed or reordered)"
    )


@SLOW
@given(st.data())
def test_truncating_below_a_signed_head_is_detected(data: st.DataObject) -> None:
    chain = data.draw(chains(min_size=1))
    head_seq = data.draw(st.integers(1, len(chain)), label="head_seq")
    keep = data.draw(st.integers(0, head_seq - 1), label="keep")
    heads = [head_for(chain[head_seq - 1])]
    assert verify_chain(chain, heads=heads, verify_signature=fake_verify).ok

    report = verify_chain(chain[:keep], heads=heads, verify_signature=fake_verify)
    assert not report.ok
    assert report.first_bad_seq == keep + 1
    assert report.problem is not None
    assert report.problem.startswith(f"signed head at seq {head_seq} is past the end of the chain")
    assert report.problem.endswith("(records were removed from the end)")
    assert report.signatures_checked == 1


def test_truncation_without_a_head_is_not_detectable() -> None:
    chain = simple_chain(4)
    assert verify_chain(chain[:3]).ok  # documented limit: records after the newest head


@SLOW
@given(st.data())
def test_a_forged_head_signature_is_detected(data: st.DataObject) -> None:
    chain = data.draw(chains(min_size=1))
    seq = data.draw(st.integers(1, len(chain) + 3), label="head_seq")  # maybe past the end too
    genuine = head_for(chain[min(seq, len(chain)) - 1])
    signature = data.draw(st.binary(min_size=0, max_size=64), label="signature")
    assume(signature != genuine.signature)
    forged = dataclasses.replace(genuine, seq=seq, signature=signature)

    report = verify_chain(chain, heads=[genuine, forged], verify_signature=fake_verify)
    assert not report.ok
    assert report.problem == f"signed head at seq {seq}: signature invalid"
    assert report.first_bad_seq == min(seq, len(chain) + 1)


def test_a_head_signed_by_another_key_is_invalid() -> None:
    chain = simple_chain(3)
    heads = [head_for(chain[1], key=b"someone else")]
    report = verify_chain(chain, heads=heads, verify_signature=fake_verify)
    assert report.problem == "signed head at seq 2: signature invalid"
    assert report.first_bad_seq == 2


def test_a_head_whose_fields_were_edited_no_longer_verifies() -> None:
    chain = simple_chain(3)
    head = dataclasses.replace(head_for(chain[2]), at=1.0)
    assert verify_chain(chain, heads=[head], verify_signature=fake_verify).problem == (
        "signed head at seq 3: signature invalid"
    )


def test_a_verifier_that_raises_counts_as_invalid() -> None:
    chain = simple_chain(2)

    def broken(message: bytes, signature: bytes) -> bool:
        raise RuntimeError("bad key")

    report = verify_chain(chain, heads=[head_for(chain[0])], verify_signature=broken)
    assert report.problem == "signed head at seq 1: signature invalid (RuntimeError: bad key)"


def test_a_verifier_must_say_exactly_true() -> None:
    chain = simple_chain(1)
    report = verify_chain(chain, heads=[head_for(chain[0])], verify_signature=lambda m, s: "yes")  # type: ignore[arg-type, return-value]
    assert not report.ok


def test_heads_are_checked_and_counted() -> None:
    chain = simple_chain(10)
    heads = [head_for(chain[3]), head_for(chain[9]), head_for(chain[9], at=1_900_000_000.0)]
    report = verify_chain(chain, heads=reversed(heads), verify_signature=fake_verify)
    assert report.ok
    assert (report.heads_checked, report.signatures_checked) == (3, 3)
    assert "3 signed heads (3 signatures verified)" in report.summary

    unsigned = verify_chain(chain, heads=heads)  # no verifier: hashes compared, signatures not
    assert unsigned.ok
    assert (unsigned.heads_checked, unsigned.signatures_checked) == (3, 0)


def test_an_empty_chain() -> None:
    assert verify_chain([]).ok
    report = verify_chain([], heads=[head_for(simple_chain(2)[1])], verify_signature=fake_verify)
    assert report.first_bad_seq == 1
    assert report.problem == (
        "signed head at seq 2 is past the end of the chain, which is empty "
        "(records were removed from the end)"
    )


def test_a_record_that_cannot_be_encoded_is_reported() -> None:
    chain = simple_chain(2)
    chain[1] = dataclasses.replace(chain[1], details={"x": float("nan")})
    report = verify_chain(chain)
    assert report.first_bad_seq == 2
    assert report.problem is not None
    assert report.problem.startswith("record 2: cannot be encoded")


def test_head_message_is_domain_separated_and_deterministic() -> None:
    message = head_message(7, "ab" * 32, 12)
    assert message.startswith(HEAD_MESSAGE_PREFIX)
    assert message == HEAD_MESSAGE_PREFIX + b'{"at":12.0,"hash":"' + b"ab" * 32 + b'","seq":7}'
    assert message != head_message(8, "ab" * 32, 12)
    with pytest.raises(ValidationError):
        head_message(0, "ab" * 32, 12)


# --- segments and streaming --------------------------------------------------------------------------


def test_verifying_a_segment_and_continuing_incrementally() -> None:
    chain = simple_chain(30)
    heads = [head_for(chain[4]), head_for(chain[19]), head_for(chain[29])]
    first = verify_chain(chain[:15], heads=heads[:1], verify_signature=fake_verify)
    assert first.ok and first.last_seq == 15
    rest = verify_chain(
        chain[15:],
        heads=heads,  # the head before the segment is skipped
        verify_signature=fake_verify,
        start_prev_hash=first.last_hash,
        start_seq=first.last_seq + 1,
    )
    assert rest.ok
    assert (rest.records_checked, rest.heads_checked, rest.last_seq) == (15, 2, 30)

    inferred = verify_chain(chain[15:], heads=heads, start_prev_hash=chain[14].hash)
    assert inferred.ok and inferred.heads_checked == 2

    wrong = verify_chain(chain[15:], start_prev_hash=chain[13].hash)
    assert wrong.problem == "record 16: prev_hash does not match the start hash given for record 15"

    gap = verify_chain(chain[16:], start_prev_hash=chain[14].hash, start_seq=16)
    assert gap.first_bad_seq == 16

    cut = verify_chain([], heads=heads, start_prev_hash=chain[14].hash, start_seq=16)
    assert cut.problem is not None
    assert cut.problem.startswith("signed head at seq 20 is past the end of the chain, which ends at seq 15")
    assert verify_chain([], heads=heads, start_prev_hash=chain[14].hash).ok  # nowhere to place them


def _endless_chain() -> Iterator[AuditRecord]:
    record = None
    for i in itertools.count():
        record = link(
            record,
            at=float(i),
            actor="system:health",
            action="node.transition",
            subject=f"node:n-{i}",
            domain="lab",
            cause="x" * 200,
            details={"i": i, "padding": "y" * 200},
        )
        yield record


def test_verification_streams_and_stops_at_the_first_problem() -> None:
    def broken_endless() -> Iterator[AuditRecord]:
        for record in _endless_chain():
            yield dataclasses.replace(record, cause="edited") if record.seq == 500 else record

    report = verify_chain(broken_endless())  # would never return if it read everything first
    assert report.first_bad_seq == 500
    assert report.records_checked == 500


def test_verification_does_not_hold_the_records() -> None:
    count = 10_000
    tracemalloc.start()
    try:
        report = verify_chain(itertools.islice(_endless_chain(), count))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.records_checked == count
    # Holding 10,000 of these records takes about 8.5 MB; streaming them peaks near 20 KB.
    assert peak < 1_000_000, f"peak {peak} bytes: records are being held"


def test_parsing_streams_too() -> None:
    lines = export_lines(itertools.islice(_endless_chain(), 3_000), [], "pk")
    _, records, heads = parse_export(lines)
    tracemalloc.start()
    try:
        report = verify_chain(records, heads=heads)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.records_checked == 3_000
    assert peak < 1_000_000


# --- export and parse -------------------------------------------------------------------------------


@SLOW
@given(chains(max_size=12), st.data())
def test_export_parse_verify_round_trip(chain: list[AuditRecord], data: st.DataObject) -> None:
    head_seqs = data.draw(st.lists(st.integers(1, len(chain)), max_size=4), label="head_seqs")
    heads = [head_for(chain[s - 1], at=1_800_000_000.0 + s) for s in head_seqs]
    text = "".join(export_lines(iter(chain), heads, "cHVibGljLWtleQ=="))
    assert all(line.startswith("{") for line in text.splitlines())

    header, records, parsed_heads = parse_export(text.splitlines(keepends=True))
    assert header == {"format": EXPORT_FORMAT, "public_key": "cHVibGljLWtleQ=="}
    assert sorted(parsed_heads, key=lambda h: h.seq) == sorted(heads, key=lambda h: h.seq)
    listed = list(records)
    assert listed == chain

    _, records_again, heads_again = parse_export(text.splitlines())
    report = verify_chain(records_again, heads=heads_again, verify_signature=fake_verify)
    assert report.ok
    assert (report.records_checked, report.heads_checked) == (len(chain), len(heads))


def test_export_lines_survive_any_line_splitting() -> None:
    odd = "next\x85line\u2028sep\u2029para\nnl\rcr\x0bvt\x1cfs grüße"
    record = link(None, at=1.0, actor=odd, action="a", subject="s", domain=odd, cause=odd, details={odd: odd})
    text = "".join(export_lines([record], [], "pk"))
    assert len(text.splitlines()) == 2
    assert "grüße" in text  # non-ASCII stays readable
    _, records, _ = parse_export(text.splitlines())
    assert list(records) == [record]


def test_head_dict_round_trip() -> None:
    head = head_for(simple_chain(1)[0])
    data = head_to_dict(head)
    assert data["signature"] == base64.b64encode(head.signature).decode()
    assert head_from_dict(json.loads(json.dumps(data))) == head


def _export(n: int = 3) -> list[str]:
    chain = simple_chain(n)
    return list(export_lines(chain, [head_for(chain[-1])], "pk"))


def test_tampering_with_an_export_line_is_caught() -> None:
    lines = _export(4)
    kinds = [json.loads(line).get("type") for line in lines]
    assert kinds == [None, "head", "record", "record", "record", "record"]
    lines[4] = lines[4].replace('"cause":"step 2"', '"cause":"step two"')
    _, records, heads = parse_export(lines)
    report = verify_chain(records, heads=heads, verify_signature=fake_verify)
    assert report.problem == "record 3: hash does not match its contents (altered)"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda ls: [], r"^line 1: the export is empty"),
        (lambda ls: ["\n"], r"^line 1: the export is empty"),
        (lambda ls: ['{"format":"other/9","public_key":"pk"}\n', *ls[1:]], r"^line 1: not a polyfabric"),
        (lambda ls: ['{"format":"polyfabric-audit/1"}\n', *ls[1:]], r"^line 1: the header has no public_key"),
        (lambda ls: ["not json\n", *ls[1:]], r"^line 1: not valid JSON"),
        (lambda ls: [ls[0], "[1, 2]\n", *ls[1:]], r"^line 2: expected a JSON object, got list"),
        (lambda ls: [ls[0], '{"type":"comment"}\n', *ls[1:]], r"^line 2: unknown line type 'comment'"),
        (lambda ls: [ls[0], ls[1].replace('"key_id"', '"kid"'), *ls[2:]], r"^line 2: head: unknown"),
        (
            lambda ls: [ls[0], ls[1].replace('"signature":"', '"signature":"!'), *ls[2:]],
            r"^line 2: head: .*base64",
        ),
        (
            lambda ls: [*ls[:2], ls[2].replace('"seq":1', '"seq":"1"'), *ls[3:]],
            r"^line 3: record: seq must be an integer",
        ),
        (
            lambda ls: [*ls[:2], ls[2].replace('"seq":1,', ""), *ls[3:]],
            r"^line 3: record: .*missing field.*seq",
        ),
        (lambda ls: [*ls[:2], ls[2].replace('"at":', '"at":NaN,"x":'), *ls[3:]], r"^line 3: not valid JSON"),
        (
            lambda ls: [*ls[:2], ls[2].replace('"seq":1', '"seq":1,"seq":2'), *ls[3:]],
            r"^line 3: not valid JSON.*duplicate key 'seq'",
        ),
        (lambda ls: [*ls[:3], "\n", ls[1], *ls[3:]], r"^line 5: a signed head after the records"),
        (lambda ls: [*ls, "{oops\n"], r"^line 6: not valid JSON"),
    ],
)
def test_invalid_export_lines_are_named(edit: Any, message: str) -> None:
    lines = edit(_export())
    with pytest.raises(ValidationError, match=message):
        _, records, _ = parse_export(lines)
        list(records)


def test_parse_export_reads_records_lazily() -> None:
    def lines() -> Iterator[str]:
        yield from _export()
        raise AssertionError("read past the records before they were asked for")

    header, records, heads = parse_export(lines())
    assert header["public_key"] == "pk" and len(heads) == 1
    assert next(records).seq == 1


def test_export_header_can_list_every_coordinator_key() -> None:
    lines = list(export_lines(simple_chain(1), [], "pk-a", keys={"coord-a": "pk-a", "coord-b": "pk-b"}))
    header, records, _ = parse_export(lines)
    assert header == {
        "format": EXPORT_FORMAT,
        "public_key": "pk-a",
        "keys": {"coord-a": "pk-a", "coord-b": "pk-b"},
    }
    assert len(list(records)) == 1
    with pytest.raises(ValidationError, match="public key 'coord-b' must be a string"):
        list(export_lines([], [], "pk-a", keys={"coord-b": None}))  # type: ignore[dict-item]


def test_export_without_heads_or_records() -> None:
    header, records, heads = parse_export(export_lines([], [], "pk"))
    assert header["format"] == EXPORT_FORMAT
    assert list(records) == [] and heads == []


# --- real Ed25519, as the CLI will do it (only the tests may import cryptography) ----------------------


def test_round_trip_with_real_ed25519() -> None:
    ed25519 = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ed25519")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    public_b64 = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    chain = simple_chain(12)
    heads = [sign_head(chain[s - 1], at=2e9 + s, key_id="coord-1", sign=key.sign) for s in (4, 12)]
    lines = list(export_lines(chain, heads, public_b64))

    def verifier_from(header: dict[str, Any]) -> Any:
        public = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(header["public_key"]))

        def verify(message: bytes, signature: bytes) -> bool:
            try:
                public.verify(signature, message)
            except InvalidSignature:
                return False
            return True

        return verify

    header, records, parsed_heads = parse_export(lines)
    report = verify_chain(records, heads=parsed_heads, verify_signature=verifier_from(header))
    assert report.ok and report.signatures_checked == 2

    # A head re-signed by someone else's key, and a chain cut short under a genuine head.
    other = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32))
    forged = sign_head(chain[3], at=3e9, key_id="coord-1", sign=other.sign)
    header, records, parsed_heads = parse_export(list(export_lines(chain, [forged], public_b64)))
    report = verify_chain(records, heads=parsed_heads, verify_signature=verifier_from(header))
    assert report.problem == "signed head at seq 4: signature invalid"

    header, records, parsed_heads = parse_export(list(export_lines(chain[:10], heads, public_b64)))
    report = verify_chain(records, heads=parsed_heads, verify_signature=verifier_from(header))
    assert report.first_bad_seq == 11
    assert report.problem is not None and "seq 12 is past the end" in report.problem
