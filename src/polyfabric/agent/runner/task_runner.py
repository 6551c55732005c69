"""The attempts of this node: accept leases, run them, report what happened.

`TaskRunner` is the one owner of "what runs here". It takes leases from the lease poller,
ignores an attempt it already knows (the coordinator re-sends every lease until it is reported
started), rejects one that does not fit in what is free (slots, and CPU, memory and GPUs when
the node's capacity is given), and runs each accepted attempt on its own thread: a command in
its own process group (process.py) or a function on a warm worker (workers.py). Everything it
has to say goes into the outbox as protocol events, in order: `started`, log chunks, then
exactly one of `finished`, `cancelled` (the coordinator asked) or `rejected`.

An attempt still running when the agent shuts down is stopped and reported `rejected` ("the
agent is shutting down"): the protocol's way of handing work back without counting a failure.
`hand_back` does the same to one attempt (a reloaded owner policy with `on_change: stop`), first
asking it to checkpoint and stop, as a drain deadline does, for a bounded grace: however it then
ends, it is reported `rejected`, and its next attempt resumes elsewhere from its last checkpoint.
An attempt whose reports the coordinator refuses (no longer the task's current attempt) is
killed quietly. A workspace is removed once the attempt's final event is acknowledged.

Threads: `offer`, `cancel`, `refused` and `acknowledged` are called by the sync loops;
`free_slots` and `running` by whoever builds a request. All of them are thread-safe.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from polyfabric.agent.runner.artifacts import ARTIFACTS_DIR, ArtifactAgent
from polyfabric.agent.runner.checkpoints import CheckpointAgent
from polyfabric.agent.runner.interrupt import Interrupt, StopKind
from polyfabric.agent.runner.lease import Ident, Lease, LeaseInvalid, Outcome
from polyfabric.agent.runner.outbox import TERMINAL_EVENTS, Outbox
from polyfabric.agent.runner.process import SetupError, run_command
from polyfabric.agent.runner.streams import LogWriter
from polyfabric.agent.runner.workers import WorkerPool
from polyfabric.agent.runner.workspace import Workspace, sweep
from polyfabric.agent.usage import UsageMeter
from polyfabric.domain.resources import Resources, format_bytes

__all__ = ["Attempt", "TaskRunner"]

log = logging.getLogger("polyfabric.agent.runner")

SHUTDOWN_REASON = "the agent is shutting down"
MAX_ERROR_CHARS = 8000  # an exception message can be huge; a report must stay acceptable
MAX_REASON_CHARS = 2000
_REMEMBER = 100_000  # finished attempts remembered, to ignore late re-sends of their leases


@dataclass(eq=False)
class Attempt:
    lease: Lease
    interrupt: Interrupt = field(default_factory=Interrupt)
    workspace: Workspace | None = None
    pgid: int | None = None
    thread: threading.Thread | None = None
    meter: UsageMeter | None = None  # what the attempt uses (CPU, memory, GPU seconds): the ledger's figures
    secrets: Any = None  # agent.secrets.SecretMaterial: opened secrets, in memory only (issue 6)
    started_at: float | None = None
    handed_back: str | None = None  # why it is being handed back (hand_back): it ends `rejected`
    stop_timer: threading.Timer | None = None  # stops a handed-back attempt when its grace is over


class TaskRunner:
    def __init__(self, *, data_dir: Path, slots: int, outbox: Outbox, capacity: Resources | None = None,
                 pythonpath: Sequence[Path | str] = (), kill_grace_s: float = 5.0,
                 max_log_bytes: int | None = 64 * 1024 * 1024, flush_interval_s: float = 0.1,
                 clock: Callable[[], float] = time.time) -> None:
        self.work_root = Path(data_dir) / "work"
        self.slots = slots
        self.capacity = capacity
        self.outbox = outbox
        self.kill_grace_s = kill_grace_s
        self.max_log_bytes = max_log_bytes
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.pool = WorkerPool(max(1, slots), cwd=self.work_root, pythonpath=pythonpath, kill_grace_s=kill_grace_s,
                               flush_interval_s=flush_interval_s)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._running: dict[Ident, Attempt] = {}
        self._unacked: dict[Ident, Attempt] = {}
        self._seen: OrderedDict[Ident, None] = OrderedDict()
        self._used = Resources()
        self._accepting = True
        self.decisions = 0  # new attempts taken in (started, rejected or failed): the poller watches it
        self._cleanups: queue.SimpleQueue[Attempt | None] = queue.SimpleQueue()
        # Checkpoints (agent/runner/checkpoints.py): set by the agent; None runs tasks without them.
        self.checkpoints: CheckpointAgent | None = None
        # Artifacts (agent/runner/artifacts.py): uploaded when an attempt ends; None keeps them local.
        self.artifacts: ArtifactAgent | None = None
        # Issue 6, set by the agent: opens sealed secrets (agent.secrets.SecretOpener), signs result
        # manifests (signer(lease, outcome, started_at, finished_at) -> manifest), and the node
        # configuration's admission check (admit(lease) -> why it may not run here, or None).
        self.secret_opener: Any = None
        self.signer: Callable[[Lease, Outcome, float | None, float], dict[str, Any]] | None = None
        self.admit: Callable[[Lease], str | None] | None = None
        self._cleaner: threading.Thread | None = None
        # Negotiation (agent/policy.py): the owner's policy answers each offer; None accepts all.
        self.negotiator: Any = None

    # -- life ------------------------------------------------------------------------------

    def start(self) -> TaskRunner:
        """Create the work root, clear what an earlier agent left there, start the cleaner."""
        self.work_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.work_root.chmod(0o700)
        removed = sweep(self.work_root)
        if removed:
            log.info("removed %d workspace(s) left by an earlier run", removed)
        self._cleaner = threading.Thread(target=self._clean_loop, name="pf-workspace-cleaner", daemon=True)
        self._cleaner.start()
        from polyfabric.agent.gc import AgentGC  # issue 7: orphans, and early GC under disk pressure

        self.gc = AgentGC(self.work_root, self.held_workspaces).start()
        return self

    def held_workspaces(self) -> dict[Path, str]:
        """Workspace path -> "running" / "finished" (final report not acknowledged) for agent GC;
        by attempt, so a workspace being created is already known."""
        with self._lock:
            held = {self.work_root / f"{t}-{a}": "running" for (t, a) in self._running}
            held.update({self.work_root / f"{t}-{a}": "finished" for (t, a) in self._unacked})
        return held

    def stop_accepting(self) -> None:
        """From now on every new lease is rejected (the agent is shutting down)."""
        with self._lock:
            self._accepting = False

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no attempt runs; False if some still do after `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._running, timeout)

    def interrupt_all(self, kind: StopKind = "shutdown", reason: str = SHUTDOWN_REASON) -> int:
        with self._lock:
            attempts = list(self._running.values())
        for attempt in attempts:
            attempt.interrupt.fire(kind, reason)
        return len(attempts)

    def close(self) -> None:
        """Stop the workers and remove every workspace (call after the running attempts ended)."""
        self.stop_accepting()
        self.interrupt_all()
        self.wait_idle(self.kill_grace_s + 3.0)
        self.pool.close()
        with self._lock:
            leftover = list(self._unacked.values())
            self._unacked.clear()
        for attempt in leftover:
            self._cleanups.put(attempt)
        self._cleanups.put(None)
        if getattr(self, "gc", None) is not None:
            self.gc.stop()
        if self._cleaner is not None:
            self._cleaner.join(10.0)
        else:
            self._clean_loop()

    # -- what the sync loops call ----------------------------------------------------------

    def free_slots(self) -> int:
        with self._lock:
            if not self._accepting:
                return 0
            return max(0, self.slots - self._used.slots)

    def running(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"task_id": task_id, "attempt": attempt} for task_id, attempt in self._running]

    def held(self) -> list[dict[str, Any]]:
        """The attempts this node holds as far as the coordinator may know: running, or ended with
        their final report not yet acknowledged (the coordinator may still see those as leased:
        a fast task ends before its `started` reaches it). What a lease poll sends as `known`."""
        with self._lock:
            idents = list(self._running)
            idents.extend(ident for ident in self._unacked if ident not in self._running)
        return [{"task_id": task_id, "attempt": attempt} for task_id, attempt in idents]

    def is_known(self, ident: Ident) -> bool:
        with self._lock:
            return self._known(ident)

    def offer(self, leases: Iterable[Any]) -> list[Ident]:
        """Take leases from the coordinator; returns the attempts started now."""
        started: list[Attempt] = []
        for raw in leases:
            try:
                lease = Lease.from_wire(raw)
            except LeaseInvalid as exc:
                self._invalid(exc)
                continue
            with self._lock:
                if self._known(lease.ident):
                    continue
                self._remember(lease.ident)
                reason = SHUTDOWN_REASON if not self._accepting else self._shortfall(lease)
                if not reason and self.admit is not None:
                    reason = self.admit(lease)  # the node's configuration (agent/config.py)
                if reason:
                    log.info("rejecting %s attempt %d (%s): %s", lease.task_id, lease.attempt, lease.key, reason)
                    self._event("rejected", lease.ident, reason=reason)
                    continue
                # The lease is an offer: the owner's policy accepts or declines it (agent/policy.py).
                declined = self.negotiator.answer(raw, lease.ident) if self.negotiator is not None else None
                if declined is not None:
                    log.info("declining %s attempt %d (%s): %s", lease.task_id, lease.attempt, lease.key,
                             declined["reason"])
                    self._event("declined", lease.ident, **declined)
                    continue
                attempt = Attempt(lease)
                self._used = self._used + self._need(lease)
                self._running[lease.ident] = attempt
            attempt.thread = threading.Thread(target=self._execute, args=(attempt,),
                                              name=f"pf-task-{lease.task_id}-{lease.attempt}", daemon=True)
            started.append(attempt)
        for attempt in started:
            assert attempt.thread is not None
            attempt.thread.start()
        return [a.lease.ident for a in started]

    def cancel(self, cancels: Iterable[Any]) -> None:
        """Stop the listed attempts; one this agent never heard of is reported cancelled at once."""
        for entry in cancels:
            ident = _ident(entry)
            if ident is None:
                log.warning("ignoring a malformed cancel entry: %r", entry)
                continue
            reason = str(entry.get("reason") or "cancelled by the coordinator")
            with self._lock:
                attempt = self._running.get(ident)
                if attempt is None:
                    if not self._known(ident):
                        self._remember(ident)
                        self._event("cancelled", ident, reason=reason)
                    continue
            if attempt.interrupt.fire("cancel", reason):
                with self._lock:
                    self.decisions += 1
                log.info("cancelling %s attempt %d: %s", ident[0], ident[1], reason)

    def checkpoint_asked(self, entries: Iterable[Any]) -> None:
        """The coordinator asks these attempts to checkpoint and stop (a drain deadline passed)."""
        for entry in entries:
            ident = _ident(entry)
            if ident is None or self.checkpoints is None:
                continue
            with self._lock:
                attempt = self._running.get(ident)
            if attempt is not None:
                self.checkpoints.ask_stop(ident, str(entry.get("reason") or "asked to checkpoint"), attempt.pgid)

    def hand_back(self, ident: Ident, reason: str, checkpoint_grace_s: float = 0.0) -> bool:
        """Stop a running attempt and hand it back (reported `rejected`: requeued, no failure counted);
        what a reloaded owner policy with `on_change: stop` does to attempts it no longer allows.

        With a grace (and checkpoints), the attempt is first asked to checkpoint and stop, as for
        a drain deadline (its stop file appears, a command's process group gets SIGTERM), and is
        stopped when `checkpoint_grace_s` is over if it still runs. However it ends, it is handed
        back, never reported finished: a task that returns after `should_stop()` is not done, and
        its next attempt resumes elsewhere from the last checkpoint it saved. False if the attempt
        is not running here, or is already being stopped."""
        with self._lock:
            attempt = self._running.get(ident)
            if attempt is None or attempt.interrupt.fired or attempt.handed_back is not None:
                return False
            attempt.handed_back = reason
        asked = (checkpoint_grace_s > 0 and self.checkpoints is not None
                 and self.checkpoints.ask_stop(ident, reason, attempt.pgid))
        if not asked:  # no grace, or it cannot checkpoint (still being set up): stop it now
            attempt.interrupt.fire("shutdown", reason)
            return True
        timer = threading.Timer(checkpoint_grace_s, attempt.interrupt.fire, args=("shutdown", reason))
        timer.name = f"pf-hand-back-{ident[0]}-{ident[1]}"
        timer.daemon = True
        with self._lock:
            if ident not in self._running:  # it ended meanwhile
                return True
            attempt.stop_timer = timer
        timer.start()
        return True

    def refused(self, entries: Iterable[Any]) -> None:
        """The coordinator refused reports of these attempts: stop any of them still running, quietly."""
        for entry in entries:
            ident = _ident(entry)
            if ident is None:
                continue
            with self._lock:
                attempt = self._running.get(ident)
            if attempt is not None and attempt.interrupt.fire("abandon", str(entry.get("reason") or "refused")):
                log.warning("stopping %s attempt %d: the coordinator no longer accepts it", *ident)

    def acknowledged(self, events: Iterable[dict[str, Any]]) -> None:
        """These events reached the coordinator: workspaces of attempts whose final event did are removed."""
        done = []
        with self._lock:
            for event in events:
                if event.get("type") in TERMINAL_EVENTS:
                    attempt = self._unacked.pop((event["task_id"], event["attempt"]), None)
                    if attempt is not None:
                        done.append(attempt)
        for attempt in done:
            self._cleanups.put(attempt)

    # -- running one attempt ---------------------------------------------------------------

    def _execute(self, attempt: Attempt) -> None:
        lease = attempt.lease
        attempt.started_at = self.clock()
        emit: Any = self._log_emitter(lease)
        secret_problem = None
        if lease.secrets is not None and self.secret_opener is not None:
            attempt.secrets, secret_problem = self.secret_opener.open(lease.task_id, lease.attempt, lease.secrets)
            if attempt.secrets is not None:
                emit = attempt.secrets.redacting(emit)  # secret values never reach the captured logs
        elif lease.secrets is not None:
            secret_problem = "this agent cannot open sealed secrets"
        stdout = LogWriter(emit, "stdout", limit_bytes=self.max_log_bytes)
        stderr = LogWriter(emit, "stderr", limit_bytes=self.max_log_bytes)
        outcome: Outcome | None = None
        try:
            attempt.workspace = Workspace.create(self.work_root, lease.task_id, lease.attempt)
            self._event("started", lease.ident)
            if secret_problem is not None:
                raise SetupError(secret_problem)
            if attempt.secrets is not None:
                lease = replace(lease, env={**lease.env, **attempt.secrets.install(attempt.workspace.path)})
            artifacts_dir = attempt.workspace.path / ARTIFACTS_DIR  # what the task leaves there is uploaded
            artifacts_dir.mkdir(mode=0o700)
            lease = replace(lease, env={**lease.env, "POLYFABRIC_ARTIFACTS": str(artifacts_dir)})
            if self.checkpoints is not None:  # restore the task's checkpoint; the task gets the socket's env
                lease = replace(lease, env={**lease.env, **self.checkpoints.prepare(lease, attempt.workspace)})
            meter = attempt.meter = UsageMeter(gpus=lease.resources.gpus)

            def spawned(pgid: int) -> None:
                attempt.pgid = pgid
                meter.watch_group(pgid)

            if lease.command is not None:
                outcome = run_command(lease, attempt.workspace, stdout=stdout, stderr=stderr,
                                      interrupt=attempt.interrupt, kill_grace_s=self.kill_grace_s,
                                      on_spawn=spawned, flush_interval_s=self.flush_interval_s, meter=meter)
            else:
                outcome = self.pool.call(lease, attempt.workspace, stdout=stdout, stderr=stderr,
                                         interrupt=attempt.interrupt, meter=meter)
        except SetupError as exc:
            outcome = Outcome.failed(str(exc))
        except Exception as exc:
            log.exception("running %s attempt %d failed", lease.task_id, lease.attempt)
            outcome = Outcome.failed(f"the agent could not run the task: {type(exc).__name__}: {exc}")
        finally:
            stdout.close()
            stderr.close()
            if attempt.secrets is not None and attempt.secrets.redactor is not None:
                attempt.secrets.redactor.flush()
            if self.checkpoints is not None:
                stop_reason = self.checkpoints.release(lease.ident)
                if stop_reason is not None and attempt.handed_back is None:
                    # Asked to checkpoint and stop (a drain deadline): `return` after `should_stop()`
                    # is the documented way to stop, so whatever it returned, it is not done. Handed
                    # back, it resumes elsewhere from its last checkpoint (one that had finished
                    # all its work finds that out there at once) instead of passing a partial
                    # result off as the task's.
                    attempt.handed_back = stop_reason
            outcome = outcome or Outcome.failed("the agent could not run the task")
            if self.artifacts is not None and attempt.workspace is not None and outcome.status != "stopped" \
                    and attempt.handed_back is None:
                try:  # before the final report: once it is acknowledged the workspace goes
                    self.artifacts.collect(lease.task_id, lease.attempt, attempt.workspace.path / ARTIFACTS_DIR)
                except Exception:
                    log.exception("uploading the artifacts of %s attempt %d failed", lease.task_id, lease.attempt)
            self._finish(attempt, outcome)

    def _finish(self, attempt: Attempt, outcome: Outcome) -> None:
        lease = attempt.lease
        if self.negotiator is not None:
            self.negotiator.forget(lease.ident)
        usage: dict[str, Any] = {}
        if attempt.meter is not None:  # the attempt ran: its final report carries what it used
            try:
                usage = {"usage": attempt.meter.finish()}
            except Exception:
                log.exception("measuring %s attempt %d failed", lease.task_id, lease.attempt)
        with self._lock:
            self._running.pop(lease.ident, None)
            self._used = self._used - self._need(lease)
            kind = attempt.interrupt.kind
            if attempt.stop_timer is not None:
                attempt.stop_timer.cancel()
            if attempt.handed_back is not None:
                outcome = Outcome("stopped")  # asked to checkpoint and stop: not done, whatever it said
            if outcome.status != "stopped":
                if attempt.secrets is not None:
                    outcome = replace(outcome, error=attempt.secrets.redact(outcome.error))
                self._event("finished", lease.ident, status=outcome.status, result=outcome.result,
                            error=outcome.error, exit_code=outcome.exit_code, **usage,
                            **self._signed(attempt, outcome))
                self._unacked[lease.ident] = attempt
            elif kind == "cancel":
                self._event("cancelled", lease.ident, reason=attempt.interrupt.reason, **usage)
                self._unacked[lease.ident] = attempt
            elif kind == "abandon":
                self._cleanups.put(attempt)
            else:
                self._event("rejected", lease.ident,
                            reason=attempt.handed_back or attempt.interrupt.reason or SHUTDOWN_REASON, **usage)
                self._unacked[lease.ident] = attempt
            self._changed.notify_all()
        if outcome.status == "failed":
            log.info("%s attempt %d (%s) failed: %s", lease.task_id, lease.attempt, lease.key, outcome.error)

    def _signed(self, attempt: Attempt, outcome: Outcome) -> dict[str, Any]:
        """{"manifest": ...} signed by the node's key (issue 6), or nothing without a signer."""
        if self.signer is None:
            return {}
        try:
            return {"manifest": self.signer(attempt.lease, outcome, attempt.started_at, self.clock())}
        except Exception:
            log.exception("signing the manifest of %s attempt %d failed", *attempt.lease.ident)
            return {}

    def _clean_loop(self) -> None:
        while True:
            attempt = self._cleanups.get()
            if attempt is None:
                return
            if attempt.workspace is None:
                continue
            try:
                attempt.workspace.remove(attempt.pgid)
            except Exception:
                log.exception("removing workspace %s failed", attempt.workspace.path)

    # -- helpers (_known, _remember, _shortfall and _need: the caller holds the lock) -------

    def _known(self, ident: Ident) -> bool:
        return ident in self._running or ident in self._unacked or ident in self._seen

    def _remember(self, ident: Ident) -> None:
        self.decisions += 1
        self._seen[ident] = None
        while len(self._seen) > _REMEMBER:
            self._seen.popitem(last=False)

    def _invalid(self, exc: LeaseInvalid) -> None:
        if exc.ident is None:
            log.warning("ignoring a lease: %s", exc.message)
            return
        with self._lock:
            if self._known(exc.ident):
                return
            self._remember(exc.ident)
            log.warning("%s attempt %d: %s", exc.ident[0], exc.ident[1], exc.message)
            self._event("finished", exc.ident, status="failed", result=None, error=exc.message, exit_code=None)

    @staticmethod
    def _need(lease: Lease) -> Resources:
        r = lease.resources
        return Resources(cpu_millis=r.cpu_millis, memory_bytes=r.memory_bytes, gpus=r.gpus, slots=lease.slots)

    def _shortfall(self, lease: Lease) -> str | None:
        need = self._need(lease)
        free_slots = self.slots - self._used.slots
        if need.slots > free_slots:
            return f"not enough free slots: it needs {need.slots}, {max(0, free_slots)} of {self.slots} free"
        if self.capacity is None:
            return None
        cap, used = self.capacity, self._used
        if need.cpu_millis > cap.cpu_millis - used.cpu_millis:
            return (f"not enough CPU: it needs {need.cpu_millis}m, {max(0, cap.cpu_millis - used.cpu_millis)}m of "
                    f"{cap.cpu_millis}m free")
        if need.memory_bytes > cap.memory_bytes - used.memory_bytes:
            return (f"not enough memory: it needs {format_bytes(need.memory_bytes)}, "
                    f"{format_bytes(max(0, cap.memory_bytes - used.memory_bytes))} of "
                    f"{format_bytes(cap.memory_bytes)} free")
        if need.gpus > cap.gpus - used.gpus:
            return f"not enough GPUs: it needs {need.gpus}, {max(0, cap.gpus - used.gpus)} of {cap.gpus} free"
        return None

    def _event(self, kind: str, ident: Ident, **fields: Any) -> None:
        for name, limit in (("error", MAX_ERROR_CHARS), ("reason", MAX_REASON_CHARS)):
            text = fields.get(name)
            if isinstance(text, str) and len(text) > limit:
                fields[name] = text[: limit - 15] + " ... (truncated)"
        self.outbox.add_event({"type": kind, "task_id": ident[0], "attempt": ident[1], "at": self.clock(), **fields})

    def _log_emitter(self, lease: Lease) -> Callable[[str, int, str], None]:
        task_id, number, outbox = lease.task_id, lease.attempt, self.outbox

        def emit(stream: str, offset: int, text: str) -> None:
            outbox.add_log({"task_id": task_id, "attempt": number, "stream": stream, "offset": offset, "data": text})

        return emit


def _ident(entry: Any) -> Ident | None:
    if not isinstance(entry, dict):
        return None
    task_id, attempt = entry.get("task_id"), entry.get("attempt")
    if not isinstance(task_id, str) or not isinstance(attempt, int) or isinstance(attempt, bool):
        return None
    return (task_id, attempt)
