"""DeferredCalls: the runtime's held-back job wakes, on one thread."""

from __future__ import annotations

import threading
import time

from polyfabric.services.deferred import DeferredCalls


def test_calls_run_once_due_in_due_order_on_one_thread() -> None:
    later = DeferredCalls("test-deferred")
    ran: list[tuple[str, str]] = []
    done = threading.Event()
    threads_before = threading.active_count()
    now = time.monotonic()
    # Asked out of order, and many of them: one thread serves them all, soonest first.
    def record(name: str) -> None:
        ran.append((name, threading.current_thread().name))

    for i in reversed(range(200)):
        later.call_at(now + 0.05 + i * 0.0005, record, f"c{i:03d}")
    later.call_at(now + 0.2, done.set)
    assert threading.active_count() <= threads_before + 1
    assert done.wait(10)
    assert [name for name, _ in ran] == [f"c{i:03d}" for i in range(200)]
    assert {thread for _, thread in ran} == {"test-deferred"}
    assert later.pending() == 0
    # With nothing left to run the thread ends: an idle owner (a runtime no longer used) leaves
    # no thread behind, nor what its last call held; the next call starts one again.
    deadline = time.monotonic() + 10
    while any(t.name == "test-deferred" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not any(t.name == "test-deferred" for t in threading.enumerate())
    again = threading.Event()
    later.call_at(time.monotonic(), again.set)
    assert again.wait(10)


def test_a_sooner_call_is_not_held_behind_a_later_one() -> None:
    later = DeferredCalls()
    soon = threading.Event()
    later.call_at(time.monotonic() + 3600, lambda: None)  # the thread now waits for an hour
    asked = time.monotonic()
    later.call_at(asked + 0.01, soon.set)
    assert soon.wait(10)
    assert time.monotonic() - asked < 5
    assert later.pending() == 1


def test_a_call_that_raises_does_not_stop_the_others(caplog) -> None:  # type: ignore[no-untyped-def]
    later = DeferredCalls()
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("boom")

    now = time.monotonic()
    later.call_at(now, boom)
    later.call_at(now + 0.01, done.set)
    assert done.wait(10)
    assert "a deferred call failed" in caplog.text
