"""The contribution ledger: per finished attempt, what it used, which domain consumed it (the job's)
and which domain contributed it (the one whose node ran it).

Rows are made by the job runtime from the `usage` the agent sends with an attempt's final report
(`ledger_row`), and written in the runtime's group commit with the attempt itself: no extra
transaction per report. Reports are at-least-once; a row per (task, attempt) is kept once.
`report()` answers `polyfabric usage`: per domain, contributed versus consumed. `balances()` feeds
fair share (scheduling/fairshare.py), refreshed every few seconds off the scheduler's lock.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from polyfabric.domain.access import ALL_DOMAINS, Principal, authorize
from polyfabric.domain.errors import ValidationError
from polyfabric.services.context import ServiceContext

__all__ = ["FIGURES", "LedgerService", "ledger_row"]

FIGURES = ("wall_s", "cpu_s", "memory_byte_s", "gpu_s")


def _number(value: Any, limit: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return min(max(number, 0.0), limit) if math.isfinite(number) else 0.0


def ledger_row(usage: dict[str, Any], *, task_id: str, attempt: int, job_id: str, key: str, node_id: str,
               consumer: str, provider: str, outcome: str, finished_at: float) -> dict[str, Any]:
    """One ledger row from an agent's `usage` object (already validated by the schema; clamped
    again here, since the runtime may be driven without the API)."""
    return {
        "task_id": task_id, "attempt": attempt, "job_id": job_id, "task_key": key[:200], "node_id": node_id,
        "consumer_domain": consumer, "provider_domain": provider, "outcome": outcome[:16],
        "finished_at": finished_at,
        "wall_s": _number(usage.get("wall_s"), 1e9), "cpu_s": _number(usage.get("cpu_s"), 1e12),
        "memory_byte_s": _number(usage.get("memory_byte_s"), 1e24),
        "max_rss_bytes": int(_number(usage.get("max_rss_bytes"), 1 << 60)),
        "gpu_s": _number(usage.get("gpu_s"), 1e12), "method": str(usage.get("method") or "")[:64],
    }


class LedgerService:
    def __init__(self, ctx: ServiceContext, *, balance_window_s: float = 7 * 86400.0) -> None:
        self._ctx = ctx
        self.balance_window_s = balance_window_s
        self._lock = threading.Lock()
        self._balances: dict[str, tuple[float, float]] = {}

    def report(self, principal: Principal, *, domain: str | None = None, since: float | None = None,
               ) -> dict[str, Any]:
        """Per domain: consumed (jobs of the domain, wherever they ran) and contributed (attempts
        run on the domain's nodes, whoever's jobs), with the CPU-seconds balance."""
        authorize(principal, "usage.read", domain)
        if since is not None and (not math.isfinite(since) or since < 0):
            raise ValidationError(f"since must be a time in unix seconds, got {since}")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            consumed = uow.ledger.totals("consumer_domain", since)
            contributed = uow.ledger.totals("provider_domain", since)
        names = sorted(set(consumed) | set(contributed))
        if domain is not None:
            names = [domain]
        elif ALL_DOMAINS not in principal.domains:
            names = [n for n in names if n in principal.domains]
        empty = {"attempts": 0, **{name: 0.0 for name in FIGURES}}
        rows = []
        for name in names:
            used, given = consumed.get(name, empty), contributed.get(name, empty)
            rows.append({"domain": name, "consumed": used, "contributed": given,
                         "balance_cpu_s": given["cpu_s"] - used["cpu_s"],
                         "balance_gpu_s": given["gpu_s"] - used["gpu_s"]})
        return {"since": since, "domains": rows}

    def attempts(self, principal: Principal, *, domain: str | None = None, since: float | None = None,
                 job_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The ledger rows themselves (newest first), limited to the caller's domains."""
        authorize(principal, "usage.read", domain)
        scope = None if ALL_DOMAINS in principal.domains else principal.domains
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            return uow.ledger.rows(domain=domain, domains=scope, since=since, job_id=job_id, limit=limit)

    def balances(self) -> dict[str, tuple[float, float]]:
        """Domain -> (contributed, consumed) CPU-seconds over the balance window, as last read by
        `refresh_balances()` (the scheduler calls this on every pass, under its lock: no I/O here)."""
        with self._lock:
            return self._balances

    def refresh_balances(self) -> dict[str, tuple[float, float]]:
        """Read the balances from the store (the observability controller does, every few seconds)."""
        since = self._ctx.clock.now() - self.balance_window_s
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            consumed = uow.ledger.totals("consumer_domain", since)
            contributed = uow.ledger.totals("provider_domain", since)
        balances = {name: (contributed.get(name, {}).get("cpu_s", 0.0), consumed.get(name, {}).get("cpu_s", 0.0))
                    for name in set(consumed) | set(contributed)}
        with self._lock:
            self._balances = balances
        return balances
