"""stdout/stderr of running tasks, turned into log chunks with byte offsets.

A `Pump` owns the read end of one pipe and a thread that reads it without blocking anyone else;
bytes are batched (flushed every `flush_interval_s` or at `flush_bytes`, whichever comes first)
and handed to its current target, a `LogWriter`, which decodes UTF-8 incrementally and emits
`(stream, offset, text)` where `offset` is the byte offset of the chunk's first byte in the raw
stream. A multi-byte character split across reads is never split across chunks; invalid bytes
become U+FFFD (the offset still counts raw bytes).

A pump can change target between calls (warm workers serve one call after another):
`retarget` first drains everything already in the pipe into the old target, so output written
before a call returned is attributed to that call.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable

__all__ = ["Emit", "LogWriter", "Pump"]

log = logging.getLogger("polyfabric.agent.runner")

Emit = Callable[[str, int, str], None]
"""emit(stream, offset, text)."""

_TAIL_BYTES = 4096


class LogWriter:
    """One stream of one attempt: offsets, incremental decoding, a size cap, the last line."""

    def __init__(self, emit: Emit, stream: str, *, limit_bytes: int | None = None) -> None:
        self.stream = stream
        self._emit = emit
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._fed = 0  # raw bytes given to the decoder
        self._emitted = 0  # raw bytes whose text was emitted: the next chunk's offset
        self._limit = limit_bytes
        self._dropped = 0
        self._tail = b""
        self._lock = threading.Lock()
        self.closed = False

    @property
    def total_bytes(self) -> int:
        return self._fed + self._dropped

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self.closed:
                return
            self._tail = (self._tail + data)[-_TAIL_BYTES:]
            if self._limit is not None and self._fed + len(data) > self._limit:
                keep = max(0, self._limit - self._fed)
                if not self._dropped:
                    log.warning("%s output over %d bytes: the rest is not sent", self.stream, self._limit)
                self._dropped += len(data) - keep
                data = data[:keep]
                if not data:
                    return
            self._fed += len(data)
            text = self._decoder.decode(data)
            pending = len(self._decoder.getstate()[0])
            if text:
                self._emit(self.stream, self._emitted, text)
            self._emitted = self._fed - pending

    def close(self) -> None:
        """Emit what is left in the decoder (an incomplete character becomes U+FFFD)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            text = self._decoder.decode(b"", final=True)
            if text:
                self._emit(self.stream, self._emitted, text)
            self._emitted = self._fed

    def last_line(self, limit: int = 500) -> str:
        """The last non-blank line written (for error messages)."""
        with self._lock:
            tail = self._tail
        for line in reversed(tail.decode("utf-8", "replace").splitlines()):
            if line.strip():
                line = line.strip()
                return line if len(line) <= limit else line[: limit - 3] + "..."
        return ""


class Pump:
    """A thread reading one pipe (non-blocking) into its current `LogWriter` target."""

    def __init__(self, fd: int, name: str, target: LogWriter | None = None, *, flush_interval_s: float = 0.1,
                 flush_bytes: int = 32 * 1024, idle_poll_s: float = 0.25) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._target = target
        self._lock = threading.Lock()
        self._buf = bytearray()
        self._first_at = 0.0
        self._interval = flush_interval_s
        self._flush_bytes = flush_bytes
        self._idle_ms = int(idle_poll_s * 1000)
        self._stopped = False
        self.eof = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pf-pump-{name}", daemon=True)

    def start(self) -> Pump:
        self._thread.start()
        return self

    # -- called from other threads ---------------------------------------------------------

    def retarget(self, target: LogWriter | None) -> None:
        """Drain what is already in the pipe into the current target, then switch to `target`."""
        with self._lock:
            if not self._stopped:
                self._drain_locked(limit=1 << 20)
            self._flush_locked()
            self._target = target

    def finish(self, eof_timeout_s: float = 0.0) -> None:
        """Wait up to `eof_timeout_s` for end of file, drain, flush and stop (the thread closes the fd)."""
        if eof_timeout_s > 0:
            self.eof.wait(eof_timeout_s)
        with self._lock:
            if not self._stopped:
                self._drain_locked(limit=1 << 20)
            self._flush_locked()
            self._target = None
            self._stopped = True

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- the pump thread -------------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        try:
            while True:
                with self._lock:
                    if self._stopped:
                        return
                    if self._buf:
                        wait_ms = max(0, int((self._first_at + self._interval - time.monotonic()) * 1000) + 1)
                    else:
                        wait_ms = self._idle_ms
                events = poller.poll(wait_ms)
                with self._lock:
                    if self._stopped:
                        return
                    eof = self._drain_locked(limit=256 * 1024) if events else False
                    if self._buf and (eof or time.monotonic() >= self._first_at + self._interval):
                        self._flush_locked()
                    if eof:
                        self._stopped = True
                        self.eof.set()
                        return
        except Exception:  # never let a pump die silently: the task would look stuck
            log.exception("reading task output failed")
        finally:
            with self._lock:
                self._stopped = True
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self.eof.set()

    def _drain_locked(self, limit: int) -> bool:
        """Read what is available (up to `limit` bytes); True at end of file."""
        got = 0
        while got < limit:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not data:
                return True
            if not self._buf:
                self._first_at = time.monotonic()
            self._buf += data
            got += len(data)
            if len(self._buf) >= self._flush_bytes:
                self._flush_locked()
        return False

    def _flush_locked(self) -> None:
        if not self._buf:
            return
        data = bytes(self._buf)
        self._buf.clear()
        if self._target is not None:
            self._target.write(data)
        else:
            log.debug("output outside any task (%d bytes) dropped", len(data))
