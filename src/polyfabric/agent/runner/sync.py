"""The two conversations with the coordinator about work, each on its own thread and connection.

`LeasePoller` long-polls `POST /v1/agent/lease` with this node's free slots and hands what comes
back to the runner (cancels first, so a lease cancelled in the same answer never starts). While
every slot is busy it polls with a short wait (`full_wait_s`), because a long-poll sent with
`free_slots: 0` cannot learn that a slot freed meanwhile. The coordinator answers at once while
it holds leases not yet reported started or cancels not yet reported done; an answer that brings
nothing new (the reports are on their way) makes the poller wait a little (10 ms, doubling up to
1 s) instead of spinning. When the coordinator cannot be reached it backs off (at most 2 s) and
tries again; running attempts are not affected.

`Reporter` sends the outbox to `POST /v1/agent/report` as soon as something is in it, waiting
`batch_delay_s` (5 ms) so a burst travels in one call; a final event (finished, cancelled,
rejected) that follows a quiet spell is not held back (the coordinator waits for it to go on: the
next task of a chain), while a stream of them is still sent one call per `batch_delay_s`. At
most `max_items` (1,000) items per call. Items leave the outbox only when an answer covers
them; a failed call is retried (backoff at most 2 s), so what the runner reported survives a
lost answer, a coordinator restart or an error on this side (at-least-once; the coordinator is
idempotent). A batch the coordinator calls malformed (400/413/422) is split in halves until the
bad item stands alone, and that one is dropped with an error line, so one bad item cannot stall
every report after it (the same goes for a batch this side cannot encode). `refused` entries of
an answer are logged and their attempts, if still running, stopped; its `cancel` list goes to
the runner. While attempts run and nothing else is sent, an empty report goes out
every `idle_report_s` so the coordinator sees the `running` list.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from polyfabric.agent.runner.outbox import Batch, Outbox
from polyfabric.agent.runner.task_runner import TaskRunner
from polyfabric.client import AgentClient, ApiError, CoordinatorUnreachable

__all__ = ["LEASE_PATH", "REPORT_PATH", "LeasePoller", "Reporter", "Sync", "backoff"]

log = logging.getLogger("polyfabric.agent.runner")

LEASE_PATH = "/v1/agent/lease"
REPORT_PATH = "/v1/agent/report"


def backoff(failures: int, base_s: float = 0.25, max_s: float = 2.0) -> float:
    """0.5, 1, 2, 2, ... seconds (with the defaults)."""
    return min(base_s * 2 ** min(failures, 4), max_s)


class LeasePoller:
    def __init__(self, client: AgentClient, runner: TaskRunner, *, wait_s: float = 10.0,
                 full_wait_s: float = 1.0, backoff_base_s: float = 0.25) -> None:
        self.client = client
        self.backoff_base_s = backoff_base_s
        self.runner = runner
        self.wait_s = wait_s
        self.full_wait_s = min(full_wait_s, wait_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pf-lease", daemon=True)
        self.polls = 0

    def start(self) -> LeasePoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def poll_once(self) -> bool:
        """One lease call, its answer handed to the runner; True when it brought something new.

        Raises what the client raises."""
        free = self.runner.free_slots()
        # `known`: what this agent holds already, so the coordinator sends only what is new and the
        # long-poll waits for real news (a freed slot arrives as a lease after our own report).
        # Attempts that ended but whose report is not acknowledged yet count too: else the lease
        # of a task faster than its own `started` report comes back as an echo, and the poller
        # backs off (10 ms and more) while new leases wait for it.
        reply = self.client.post(LEASE_PATH, {"wait_s": self.wait_s, "free_slots": free,
                                              "known": self.runner.held()}) or {}
        self.polls += 1
        leases, cancels = reply.get("leases") or [], reply.get("cancel") or []
        before = self.runner.decisions
        self.runner.cancel(cancels)
        self.runner.checkpoint_asked(reply.get("checkpoint") or [])
        self.runner.offer(leases)
        return not (leases or cancels) or self.runner.decisions != before

    def _run(self) -> None:
        failures = 0
        echoes = 0
        while not self._stop.is_set():
            try:
                news = self.poll_once()
            except Exception as exc:
                if self._stop.is_set():
                    return
                failures += 1
                quiet = failures != 1 and failures % 30 != 0
                if isinstance(exc, CoordinatorUnreachable):
                    if not quiet:
                        log.warning("lease poll: %s (retrying)", exc.message)
                elif isinstance(exc, ApiError):
                    if not quiet:
                        log.warning("lease poll refused: %s %s (retrying)", exc.status, exc.message)
                else:
                    log.exception("lease poll failed (retrying)")
                self._stop.wait(backoff(failures, self.backoff_base_s))
                continue
            if failures:
                log.info("lease polling works again after %d failure(s)", failures)
            failures = 0
            # The coordinator answers at once while it has leases not yet reported started or cancels
            # not yet reported done; when all of them are in hand already, do not spin on them.
            echoes = 0 if news else echoes + 1
            if echoes:
                self._stop.wait(min(0.01 * 2 ** echoes, 1.0))


class Reporter:
    def __init__(self, client: AgentClient, runner: TaskRunner, outbox: Outbox, *, batch_delay_s: float = 0.005,
                 max_items: int = 1000, max_log_bytes: int = 1024 * 1024, idle_report_s: float = 10.0,
                 backoff_base_s: float = 0.25) -> None:
        self.client = client
        self.backoff_base_s = backoff_base_s
        self.runner = runner
        self.outbox = outbox
        self.batch_delay_s = batch_delay_s
        self.max_items = max_items
        self.max_log_bytes = max_log_bytes
        self.idle_report_s = idle_report_s
        self._limit = max_items
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pf-report", daemon=True)
        self.calls = 0
        self.failures = 0

    def start(self) -> Reporter:
        self._thread.start()
        return self

    def flush(self, timeout: float) -> bool:
        """Wait until everything pending was acknowledged (True) or `timeout` passed (False)."""
        return self.outbox.wait_empty(timeout)

    def stop(self) -> None:
        self._stop.set()
        self.outbox.wake()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._loop()
            except Exception:  # a bug here must not end reporting: the items stay in the outbox
                log.exception("the reporter failed (restarting it)")
                self.failures += 1
                self._stop.wait(backoff(self.failures, self.backoff_base_s))

    def _loop(self) -> None:
        last_call = last_end = time.monotonic()
        while not self._stop.is_set():
            idle_left = max(0.05, self.idle_report_s - (time.monotonic() - last_call))
            if not self.outbox.wait(min(idle_left, 1.0)):
                if self._stop.is_set() or time.monotonic() - last_call < self.idle_report_s:
                    continue
                if not self.runner.running():
                    last_call = time.monotonic()
                    continue
            elif self.batch_delay_s and len(self.outbox) < self._limit:
                # Let a burst gather into one call. A final event is sent at once, unless the last
                # call ended less than batch_delay_s ago: when reports stream, they are batched; a
                # lone one is not held back.
                if time.monotonic() - last_end < self.batch_delay_s:
                    time.sleep(self.batch_delay_s)
                else:
                    self.outbox.wait_final(self.batch_delay_s)
            if self._stop.is_set():
                break
            batch = self.outbox.peek(self._limit, self.max_log_bytes)
            last_call = time.monotonic()
            verdict = self.send(batch)
            last_end = time.monotonic()
            if verdict == "ok":
                self.failures = 0
            elif verdict == "failed":
                self.failures += 1
                self._stop.wait(backoff(self.failures, self.backoff_base_s))

    def send(self, batch: Batch) -> str:
        """One report call for `batch`: "ok" (acknowledged), "failed" (kept, retry later) or "split" (retry now)."""
        payload = {"events": batch.events, "logs": batch.logs, "running": self.runner.running()}
        self.calls += 1
        try:
            reply = self.client.post(REPORT_PATH, payload)
        except CoordinatorUnreachable as exc:
            if self.failures == 0 or self.failures % 30 == 0:
                log.warning("report: %s (keeping %d item(s) to resend)", exc.message, len(self.outbox))
            return "failed"
        except (ApiError, TypeError, ValueError) as exc:
            # TypeError/ValueError: this side could not encode the batch; treated like a refusal of it.
            status = exc.status if isinstance(exc, ApiError) else 0
            message = exc.message if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}"
            if status in (0, 400, 413, 422):
                if batch.count > 1:
                    self._limit = max(1, batch.count // 2)
                    log.warning("a report of %d item(s) failed (%s %s): sending smaller ones", batch.count,
                                status or "", message)
                    return "split"
                log.error("this report item cannot be delivered (%s %s), dropping it: %r", status or "", message,
                          (batch.events or batch.logs)[:1])
                self._acknowledged(batch, {})
                return "ok"
            if self.failures == 0 or self.failures % 30 == 0:
                log.warning("report refused: %s %s (keeping %d item(s) to resend)", status, message,
                            len(self.outbox))
            return "failed"
        except Exception:
            log.exception("report failed (keeping its items to resend)")
            return "failed"
        if self.failures:
            log.info("reports go through again after %d failure(s)", self.failures)
        self._acknowledged(batch, reply if isinstance(reply, dict) else {})
        self._limit = min(self.max_items, self._limit * 2)
        return "ok"

    def _acknowledged(self, batch: Batch, reply: dict[str, Any]) -> None:
        self.outbox.ack(batch)
        refused = [r for r in reply.get("refused") or [] if isinstance(r, dict)]
        for entry in refused:
            log.warning("the coordinator refused the report of %s attempt %s: %s", entry.get("task_id"),
                        entry.get("attempt"), entry.get("reason"))
        try:
            if refused:
                self.runner.refused(refused)
            self.runner.acknowledged(batch.events)
            self.runner.cancel(reply.get("cancel") or [])
        except Exception:
            log.exception("handling the report answer failed")


class Sync:
    """Both loops together: what the agent's main starts and stops."""

    def __init__(self, runner: TaskRunner, outbox: Outbox, lease_client: AgentClient, report_client: AgentClient,
                 *, lease_wait_s: float = 10.0, full_wait_s: float = 1.0, batch_delay_s: float = 0.005,
                 idle_report_s: float = 10.0, backoff_base_s: float = 0.25) -> None:
        self.runner = runner
        self.poller = LeasePoller(lease_client, runner, wait_s=lease_wait_s, full_wait_s=full_wait_s,
                                  backoff_base_s=backoff_base_s)
        self.reporter = Reporter(report_client, runner, outbox, batch_delay_s=batch_delay_s,
                                 idle_report_s=idle_report_s, backoff_base_s=backoff_base_s)

    def start(self) -> Sync:
        self.reporter.start()
        self.poller.start()
        return self

    def stop_leasing(self) -> None:
        self.poller.stop()

    def flush(self, timeout: float) -> bool:
        return self.reporter.flush(timeout)

    def stop(self) -> None:
        self.poller.stop()
        self.reporter.stop()
        self.reporter.join(2.0)
