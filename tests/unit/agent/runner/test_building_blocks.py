"""Leases parse strictly, log writers keep byte offsets across split characters, the outbox keeps order."""

from __future__ import annotations

import os
import time

import pytest

from polyfabric.agent.runner import Lease, LeaseInvalid, Outbox
from polyfabric.agent.runner.streams import LogWriter, Pump

__all__: list[str] = []

pytestmark = pytest.mark.skipif(os.name != "posix", reason="tasks run as POSIX process groups")


def test_a_lease_parses_into_typed_fields(make_lease):
    lease = Lease.from_wire(make_lease(["echo", "hi"], timeout_s=30, env={"A": "1"},
                                       resources={"cpu_millis": 500, "memory_bytes": 1024, "gpus": 0, "slots": 2}))
    assert lease.command == ("echo", "hi") and lease.function is None
    assert lease.timeout_s == 30.0 and lease.env == {"A": "1"}
    assert lease.slots == 2 and lease.resources.cpu_millis == 500
    assert Lease.from_wire(make_lease(function="m:f", resources={})).slots == 1  # every attempt takes a slot


@pytest.mark.parametrize(("fields", "problem"), [
    ({"command": None, "function": None}, "exactly one of command and function"),
    ({"command": ["a"], "function": "m:f"}, "exactly one of command and function"),
    ({"command": "echo hi"}, "non-empty list of strings"),
    ({"function": "nocolon"}, "module:attr"),
    ({"command": ["a"], "env": {"A": 1}}, "env"),
    ({"command": ["a"], "timeout_s": -1}, "timeout_s"),
    ({"command": ["a"], "task_id": "../etc"}, "characters"),
])
def test_a_malformed_lease_names_its_problem_and_keeps_its_ids(make_lease, fields, problem):
    raw = make_lease(**fields)
    with pytest.raises(LeaseInvalid) as caught:
        Lease.from_wire(raw)
    assert problem in caught.value.message
    assert caught.value.ident == (raw["task_id"], 1)


def test_a_lease_without_ids_cannot_be_answered():
    with pytest.raises(LeaseInvalid) as caught:
        Lease.from_wire({"command": ["a"]})
    assert caught.value.ident is None


def test_log_writer_offsets_count_raw_bytes_and_never_split_a_character():
    chunks = []
    writer = LogWriter(lambda stream, offset, text: chunks.append((offset, text)), "stdout")
    data = "héllo wörld ✓\n".encode()
    for i in range(len(data)):  # one byte at a time: every multi-byte character is split
        writer.write(data[i:i + 1])
    writer.close()
    assert "".join(text for _, text in chunks) == data.decode()
    for offset, text in chunks:
        assert data[offset:offset + len(text.encode())] == text.encode()


def test_log_writer_invalid_bytes_become_replacement_characters_and_the_cap_drops_the_rest():
    chunks = []
    writer = LogWriter(lambda s, o, t: chunks.append((o, t)), "stderr", limit_bytes=8)
    writer.write(b"ab\xffcd\n")
    writer.write(b"efghij")
    writer.close()
    assert "".join(t for _, t in chunks) == "ab\ufffdcd\nef"
    assert writer.total_bytes == 12
    assert writer.last_line() == "efghij"  # error messages see the real last line


def test_pump_batches_small_writes_into_one_chunk():
    chunks = []
    writer = LogWriter(lambda s, o, t: chunks.append((o, t)), "stdout")
    r, w = os.pipe()
    pump = Pump(r, "t", writer, flush_interval_s=0.2).start()
    for i in range(5):
        os.write(w, f"line {i}\n".encode())
    time.sleep(0.05)
    assert chunks == []  # still batching
    os.close(w)
    pump.finish(eof_timeout_s=2.0)
    pump.join(2.0)
    assert chunks == [(0, "".join(f"line {i}\n" for i in range(5)))]


def test_outbox_batches_are_prefixes_and_leave_only_when_acknowledged():
    box = Outbox()
    for i in range(5):
        box.add_event({"type": "started", "task_id": f"t{i}", "attempt": 1})
        box.add_log({"task_id": f"t{i}", "attempt": 1, "stream": "stdout", "offset": 0, "data": "x" * 10})
    first = box.peek(max_items=3)
    assert first.count == 3 and [e["task_id"] for e in first.events] == ["t0", "t1"]
    assert [c["task_id"] for c in first.logs] == ["t0"]
    assert box.peek(max_items=3).count == 3  # nothing removed by looking
    box.ack(first)
    assert len(box) == 7
    assert box.peek(max_items=100, max_log_bytes=15).count == 2  # the log budget ends a batch
    box.ack(box.peek(max_items=100))
    assert len(box) == 0 and box.wait_empty(0)
