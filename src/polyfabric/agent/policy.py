"""The node owner's policy, held by the agent: what this machine accepts, answered per offer.

The coordinator only proposes: every lease is an offer. Before running one, the task runner asks
`Negotiator.answer()`; the owner's policy (`agent --policy FILE`, YAML, see docs/policy.md) is
evaluated here with the same pure evaluator the coordinator uses (domain/policy.py). A decline
becomes a `declined` event carrying the reason, the policy's name and version, and an Ed25519
signature by the node's key over the answer (the whole report is RFC 9421-signed as well; this
signature stays checkable from the audit chain on its own).

`reload()` (SIGHUP, or `polyfabric agent reload`) reads the file again: new offers follow it at
once; running attempts the new policy no longer allows are returned by `no_longer_allowed()`
when the policy says `on_change: stop` (with `finish`, they run to the end): the agent asks each
to checkpoint and stop, stops it after the policy's `checkpoint_grace`, and hands it back
(TaskRunner.hand_back).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from polyfabric.domain.policy import Evaluator, OwnerPolicy, answer_bytes, parse_owner_policy

__all__ = ["Negotiator", "load_owner_policy"]

log = logging.getLogger("polyfabric.agent.policy")

Ident = tuple[str, int]


def load_owner_policy(path: Path, version: int = 1) -> OwnerPolicy:
    """Read and validate the owner's policy file; ValidationError (PolicyInvalid) names the field."""
    try:
        doc = yaml.safe_load(path.read_text()) if path.exists() else None
    except yaml.YAMLError as exc:
        from polyfabric.domain.policy import PolicyInvalid

        raise PolicyInvalid("owner", [f"{path} is not valid YAML: {exc}"]) from None
    return parse_owner_policy(doc, version=version)


class Negotiator:
    """Answers offers for this node. Thread-safe: the lease loop answers, a signal reloads."""

    def __init__(self, path: Path | None, node: Callable[[], dict[str, Any]], node_id: str,
                 sign: Callable[[bytes], bytes], clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._node = node  # the node's own variables (id, name, domain, labels, cpu, ...)
        self.node_id = node_id
        self._sign = sign
        self._clock = clock
        self._lock = threading.Lock()
        self._ev = Evaluator()
        self._accepted: dict[Ident, dict[str, Any]] = {}  # running attempts: their offers
        self.policy = load_owner_policy(path) if path is not None else OwnerPolicy()

    def reload(self) -> tuple[OwnerPolicy, str | None]:
        """Read the file again (a new version); a bad file keeps the old policy and says why."""
        if self.path is None:
            return self.policy, None
        try:
            fresh = load_owner_policy(self.path, self.policy.version + 1)
        except Exception as exc:
            log.error("the node policy %s was not reloaded: %s", self.path, exc)
            return self.policy, str(exc)
        with self._lock:
            self.policy = fresh
        log.info("node policy %s reloaded: version %d", self.path, fresh.version)
        return fresh, None

    def _foreign_cpu(self, domain: str) -> int:
        return sum(int(o.get("task", {}).get("cpu") or 0) for o in self._accepted.values()
                   if (o.get("job") or {}).get("domain") != domain)

    def answer(self, raw: dict[str, Any], ident: Ident) -> dict[str, Any] | None:
        """None: accepted (remembered until `forget`). Else the `declined` event's fields."""
        offer = raw.get("offer") or {}
        job, task = dict(offer.get("job") or {}), dict(offer.get("task") or {})
        node = self._node()
        now = self._clock()
        with self._lock:
            policy = self.policy
            finding = policy.decide(job, task, node, now, foreign_cpu=self._foreign_cpu(node.get("domain", "")),
                                    ev=self._ev)
            if finding.allowed:
                self._accepted[ident] = {"job": job, "task": task}
                return None
        answer = {"node_id": self.node_id, "task_id": ident[0], "attempt": ident[1], "decision": "decline",
                  "reason": finding.reason, "policy": {"name": policy.name, "version": policy.version}, "at": now}
        from polyfabric.security.keys import b64e

        return {"reason": finding.reason, "policy": answer["policy"], "answer": answer,
                "signature": b64e(self._sign(answer_bytes(answer)))}

    def forget(self, ident: Ident) -> None:
        with self._lock:
            self._accepted.pop(ident, None)

    def no_longer_allowed(self) -> list[tuple[Ident, str]]:
        """Running attempts the current policy would decline now, when it says `on_change: stop`."""
        node = self._node()
        now = self._clock()
        out = []
        with self._lock:
            policy = self.policy
            if policy.on_change != "stop":
                return []
            for ident, offer in list(self._accepted.items()):
                others = {k: v for k, v in self._accepted.items() if k != ident}
                foreign = sum(int(o["task"].get("cpu") or 0) for o in others.values()
                              if (o["job"] or {}).get("domain") != node.get("domain"))
                finding = policy.decide(offer["job"], offer["task"], node, now, foreign_cpu=foreign, ev=self._ev)
                if not finding.allowed:
                    out.append((ident, f"the node's owner policy v{policy.version} no longer allows it: "
                                       f"{finding.reason}"))
        return out
