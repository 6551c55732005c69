"""The node's side of the configuration manager: fetch the merged configuration, apply it, acknowledge.

Every few seconds (the heartbeat interval) the agent calls `POST /v1/agent/config` (signed) with
what it runs (`acked`: version, the document versions merged into it, and what it applied) or what
it could not apply (`failed`), and gets the configuration it should run. Applying it means:

- `labels`: added to the node's labels (the owner's `--labels` win on a conflict) and declared to
  the coordinator again (`hello`), so the scheduler sees them;
- `max_concurrent_tasks`: the node's task slots (declared, and enforced by the task runner); it can
  lower what the owner allows (`--slots`), never raise it: a higher value cannot be applied;
- `reservations`: CPU and memory kept back from what the node offers (more than the node has:
  cannot be applied);
- `allowed_env`, `execution`: checked for every lease; a lease that breaks them is rejected with
  the reason (it goes to another node);
- `health`: the interval and timeout of the agent's health checks;
- `network`: recorded with the rest (the agent reports it; enforcing it is the owner's firewall's).

A configuration that cannot be applied is reported (`failed`) and the agent keeps running what it
ran; the coordinator halts the rollout of the documents that caused it.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from typing import Any

from pydantic import ValidationError

from polyfabric.client import AgentClient, ApiError, CoordinatorUnreachable
from polyfabric.domain.configdoc import ConfigDocument, describe_validation, env_allowed
from polyfabric.domain.resources import Resources

__all__ = ["CannotApply", "ConfigApplier"]

log = logging.getLogger("polyfabric.agent.config")

_REDECLARE_S = 30.0


class CannotApply(Exception):
    """This node cannot run the configuration (the message says which field and why)."""


class ConfigApplier:
    def __init__(self, agent: Any, client: AgentClient, interval_s: float = 2.0) -> None:
        self.agent = agent
        self.client = client
        self.interval_s = interval_s
        self.doc: ConfigDocument | None = None
        self.version: int | None = None
        self.docs: list[int] = []
        self.applied: dict[str, Any] = {}
        self._failed: tuple[int, tuple[int, ...]] | None = None
        self._failure: dict[str, Any] | None = None
        self._declared: dict[str, Any] | None = None
        self._declared_at = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> ConfigApplier:
        self._thread = threading.Thread(target=self._loop, name="pf-config", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        """Wait for the loop to end (it ends with the agent's stop_event), then close its client."""
        if self._thread is not None:
            self._thread.join(timeout)
        self.client.close()

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        failures = 0
        while not self.agent.stop_event.is_set():
            try:
                again = self.sync_once()
                failures = 0
                delay = 0.0 if again else self.interval_s
            except CoordinatorUnreachable:
                failures += 1
                delay = min(0.25 * 2 ** min(failures, 4), 5.0)
            except ApiError as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("configuration call failed: %s", exc.message)
                delay = min(0.25 * 2 ** min(failures, 4), 5.0)
            except Exception:
                log.exception("configuration loop failed")
                delay = self.interval_s
            self.agent.stop_event.wait(delay)

    def sync_once(self) -> bool:
        """One exchange; True when something was applied (acknowledge it at once)."""
        body: dict[str, Any] = {}
        if self.version is not None:
            body["acked"] = {"version": self.version, "docs": self.docs, "applied": self.applied}
        if self._failure is not None:
            body["failed"] = self._failure
        reply = self.client.post("/v1/agent/config", body)
        if "failed" in body:
            self._failure = None  # delivered
        version, docs = int(reply.get("version") or 0), [int(v) for v in reply.get("docs") or []]
        if (version, docs) == (self.version, self.docs):
            self._redeclare_if_due()
            return False
        if self._failed == (version, tuple(docs)):
            return False  # reported already; wait for the coordinator to halt it and answer otherwise
        try:
            self.apply(reply.get("config") or {}, version)
        except CannotApply as exc:
            log.warning("cannot apply configuration version %d: %s", version, exc)
            self._failed = (version, tuple(docs))
            self._failure = {"version": version, "docs": docs, "error": str(exc)}
            return True
        log.info("applied configuration version %d (documents %s)", version, docs or "none")
        self.version, self.docs = version, docs
        return True

    # -- applying -------------------------------------------------------------------------------

    def apply(self, config: dict[str, Any], version: int) -> None:
        try:
            doc = ConfigDocument.model_validate(config)
        except ValidationError as exc:
            raise CannotApply(f"this agent does not understand it: {describe_validation(exc)}") from None
        base = self.agent.declaration()
        capacity = Resources.from_dict(base["capacity"])
        owner_slots = capacity.slots
        slots = owner_slots
        if doc.max_concurrent_tasks is not None:
            if doc.max_concurrent_tasks > owner_slots:
                raise CannotApply(f"max_concurrent_tasks: {doc.max_concurrent_tasks} is more than this node's owner "
                                  f"allows ({owner_slots} slots)")
            slots = doc.max_concurrent_tasks
        cpu, memory = capacity.cpu_millis, capacity.memory_bytes
        if doc.reservations is not None:
            if (doc.reservations.cpu_millis or 0) > cpu:
                raise CannotApply(f"reservations.cpu_millis: {doc.reservations.cpu_millis}m is more than the "
                                  f"node's {cpu}m")
            if (doc.reservations.memory_bytes or 0) > memory:
                raise CannotApply(f"reservations.memory_bytes: {doc.reservations.memory_bytes} is more than the "
                                  f"node's {memory}")
            cpu -= doc.reservations.cpu_millis or 0
            memory -= doc.reservations.memory_bytes or 0
        new_capacity = Resources.from_dict({**capacity.to_dict(), "cpu_millis": cpu, "memory_bytes": memory,
                                            "slots": slots})
        labels = {**(doc.labels or {}), **self.agent.settings.labels}
        declaration = {**base, "labels": labels, "capacity": new_capacity.to_dict()}
        self._declare(declaration)
        runner = getattr(self.agent, "runner", None)
        if runner is not None:
            runner.slots = slots
            runner.capacity = new_capacity
            runner.admit = self.admit
        settings = self.agent.settings
        if doc.health is not None:
            if doc.health.interval_s is not None:
                settings.health_interval_s = doc.health.interval_s
            if doc.health.timeout_s is not None:
                settings.health_timeout_s = doc.health.timeout_s
        self.doc = doc
        self.applied = {"version": version, "labels": labels, "slots": slots,
                        "capacity": {"cpu_millis": cpu, "memory_bytes": memory},
                        "allowed_env": list(doc.allowed_env) if doc.allowed_env is not None else None,
                        "health": {"interval_s": settings.health_interval_s, "timeout_s": settings.health_timeout_s},
                        "execution": doc.execution.model_dump(mode="json") if doc.execution else None,
                        "network": doc.network.model_dump(mode="json") if doc.network else None}

    def _declare(self, declaration: dict[str, Any]) -> None:
        if declaration == self._declared:
            return
        self.client.post("/v1/agent/hello", {"node": declaration})
        self._declared = declaration
        self._declared_at = time.monotonic()

    def redeclare(self) -> bool:
        """Declare again now with the agent's current facts (its owner policy was reloaded): False
        when nothing was declared here yet (the agent's own `hello` then carries them)."""
        if self._declared is None:
            return False
        facts = dict(self._declared.get("facts") or {})
        advertised = self.agent.advertised_policy()
        if advertised is None:
            facts.pop("owner_policy", None)
        else:
            facts["owner_policy"] = advertised
        self._declare({**self._declared, "facts": facts})
        return True

    def _redeclare_if_due(self) -> None:
        """Labels and capacity again now and then: a reconnect declares the owner's values only."""
        if self._declared is not None and time.monotonic() - self._declared_at > _REDECLARE_S:
            self.client.post("/v1/agent/hello", {"node": self._declared})
            self._declared_at = time.monotonic()

    def admit(self, lease: Any) -> str | None:
        """Why this lease may not run under the node's configuration (None: it may)."""
        doc, version = self.doc, self.version
        if doc is None:
            return None
        where = f"node configuration v{version}"
        if doc.allowed_env is not None:
            bad = sorted(name for name in lease.env if not env_allowed(name, doc.allowed_env))
            if bad:
                return f"{where}: env {', '.join(bad)} not allowed here (allowed_env: {', '.join(doc.allowed_env)})"
        ex = doc.execution
        if ex is not None:
            if ex.functions is False and lease.function is not None:
                return f"{where}: function tasks do not run here (execution.functions: false)"
            if ex.allowed_commands is not None and lease.command is not None:
                program = os.path.basename(lease.command[0])
                if not any(fnmatch.fnmatchcase(program, p) for p in ex.allowed_commands):
                    return f"{where}: command {program!r} is not in execution.allowed_commands"
            if ex.max_timeout_s is not None and (lease.timeout_s is None or lease.timeout_s > ex.max_timeout_s):
                return f"{where}: tasks here need a timeout of at most {ex.max_timeout_s:g}s (execution.max_timeout_s)"
        return None
