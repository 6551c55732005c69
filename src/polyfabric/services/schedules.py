"""Cron schedules: a stored workflow submitted at every due time of a cron expression.

Exactly once per due time, across crashes and leader changes. The controller's tick does, in ONE
fenced transaction: insert a fire row keyed by (schedule, due time) with a job id chosen now
(outcome "pending"), and move the schedule's cursor (`next_at`) past it. Only then does it submit,
through `JobRuntime.submit(job_id=...)`, which does nothing when that job already exists. A
coordinator killed between the two finds the pending fire at its next start (or the next leader
does) and submits it again with the same id: the job exists once, the due time fires once.

Due times missed while no coordinator ran the controller (down, or no leader) follow the catch-up
rule: those older than the grace period are "missed"; the `catch_up` most recent of them fire (the
rest are recorded as missed); due times within the grace period fire as usual.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from polyfabric.domain.access import Principal, Role, authorize
from polyfabric.domain.errors import Conflict, NotFound, ValidationError
from polyfabric.services.context import ServiceContext
from polyfabric.services.ports import AuditEntry
from polyfabric.services.runtime import JobRuntime
from polyfabric.workflow.spec import parse_workflow

__all__ = ["CONCURRENCY", "ScheduleService", "due_times", "next_due", "parse_cron", "schedule_principal"]

log = logging.getLogger("polyfabric.schedules")

CONCURRENCY = ("allow", "forbid", "replace")
MAX_CATCH_UP = 100
MAX_DUE_SCAN = 100_000  # due times looked at in one pass (a every-second cron down for a day)
MISSED_ROWS_KEPT = 100  # missed due times recorded one by one; beyond, only counted in the audit
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")


def parse_cron(expr: str, timezone: str) -> tuple[str, ZoneInfo]:
    """A valid cron expression (5 fields, or 6 with seconds last) and its time zone, or ValidationError."""
    expr = " ".join(str(expr).split())
    if len(expr.split()) not in (5, 6):
        raise ValidationError(f"cron {expr!r} must have 5 fields (minute hour day month weekday), "
                              "or 6 with seconds last")
    if not croniter.is_valid(expr):
        raise ValidationError(f"cron {expr!r} is not a valid cron expression")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {timezone!r} (use an IANA name: UTC, Europe/Paris ...)") from None
    return expr, zone


def next_due(expr: str, zone: ZoneInfo, after: float) -> float:
    """The first due time strictly after `after` (unix seconds), in the schedule's time zone."""
    return float(croniter(expr, datetime.fromtimestamp(after, zone)).get_next(float))


def due_times(expr: str, zone: ZoneInfo, first: float, now: float, limit: int = MAX_DUE_SCAN) -> Iterator[float]:
    """`first` (a due time) and every later due time up to `now`, at most `limit` of them."""
    it = croniter(expr, datetime.fromtimestamp(first, zone))
    t = first
    for _ in range(limit):
        if t > now:
            return
        yield t
        t = float(it.get_next(float))


def plan_fires(dues: list[float], now: float, grace_s: float, catch_up: int) -> tuple[list[float], list[float]]:
    """(due times to fire, due times missed for good). Due times within the grace period fire;
    of the older ones (missed while no coordinator ran), the `catch_up` most recent fire."""
    on_time = [t for t in dues if t >= now - grace_s]
    late = [t for t in dues if t < now - grace_s]
    caught = late[max(0, len(late) - catch_up):] if catch_up > 0 else []
    missed = late[:len(late) - len(caught)]
    return caught + on_time, missed


def schedule_principal(row: dict[str, Any]) -> Principal:
    """Who submits a schedule's runs: the schedule itself, a submitter in its one domain."""
    return Principal("schedule", row["id"], row["name"], Role.SUBMITTER, (row["domain"],))


class ScheduleService:
    def __init__(self, ctx: ServiceContext, runtime: JobRuntime, *, grace_s: float = 30.0) -> None:
        self._ctx = ctx
        self._runtime = runtime
        self.grace_s = grace_s

    # -- the API ----------------------------------------------------------------------------

    def create(self, principal: Principal, *, document: dict[str, Any], params: dict[str, Any], domain: str,
               cron: str, timezone: str = "UTC", concurrency: str = "allow", catch_up: int = 0,
               name: str | None = None) -> dict[str, Any]:
        authorize(principal, "schedule.manage", domain)
        authorize(principal, "job.submit", domain)
        expr, zone = parse_cron(cron, timezone)
        if concurrency not in CONCURRENCY:
            raise ValidationError(f"concurrency {concurrency!r} is not one of {', '.join(CONCURRENCY)}")
        if not 0 <= catch_up <= MAX_CATCH_UP:
            raise ValidationError(f"catch-up must be between 0 and {MAX_CATCH_UP}, got {catch_up}")
        if not isinstance(document, dict):
            raise ValidationError("the workflow must be a mapping (a YAML document with name and tasks)")
        spec = parse_workflow(document, params)  # every problem now, not at the first due time
        name = name or spec.name
        if not _NAME.match(name):
            raise ValidationError(f"schedule name {name!r} is not valid: use 1-64 letters, digits, '.', '_' and '-'")
        now = self._ctx.clock.now()
        row = {"id": self._ctx.ids.new_id("s"), "name": name, "domain": domain, "document": document,
               "params": params, "cron": expr, "timezone": timezone, "concurrency": concurrency,
               "catch_up": catch_up, "paused": False, "next_at": next_due(expr, zone, now),
               "created_by": principal.actor, "created_at": now}
        with self._ctx.store.unit_of_work() as uow:
            if uow.domains.get(domain) is None:
                raise NotFound(f"domain {domain!r} does not exist")
            if uow.schedules.get(name) is not None:
                raise Conflict(f"a schedule named {name!r} exists already")
            uow.schedules.add(row)
            uow.audit.append([AuditEntry(
                actor=principal.actor, action="schedule.created", subject=f"schedule:{row['id']}", domain=domain,
                cause="operator request", details={"name": name, "cron": expr, "timezone": timezone,
                                                   "concurrency": concurrency, "catch_up": catch_up,
                                                   "workflow": spec.name, "params": params})], now)
            uow.commit()
        return self._out(row, {}, [])

    def list(self, principal: Principal) -> list[dict[str, Any]]:
        authorize(principal, "schedule.read")
        scope = None if "*" in principal.domains else principal.domains
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            counts = uow.schedules.fire_counts()
            return [self._out(r, counts.get(r["id"], {}), []) for r in uow.schedules.list(scope)]

    def get(self, principal: Principal, ref: str, fires: int = 20) -> dict[str, Any]:
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            row = self._row(uow, principal, ref, "schedule.read")
            return self._out(row, uow.schedules.fire_counts().get(row["id"], {}),
                             uow.schedules.fires(row["id"], limit=fires))

    def set_paused(self, principal: Principal, ref: str, paused: bool) -> dict[str, Any]:
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            row = self._row(uow, principal, ref, "schedule.manage")
            if row["paused"] != paused:
                fields: dict[str, Any] = {"paused": paused}
                if not paused:  # due times that passed while paused are not wanted: start from now
                    expr, zone = parse_cron(row["cron"], row["timezone"])
                    fields["next_at"] = next_due(expr, zone, now)
                uow.schedules.update(row["id"], **fields)
                row.update(fields)
                uow.audit.append([AuditEntry(
                    actor=principal.actor, action="schedule.paused" if paused else "schedule.resumed",
                    subject=f"schedule:{row['id']}", domain=row["domain"], cause="operator request",
                    details={"name": row["name"]})], now)
                uow.commit()
            return self._out(row, uow.schedules.fire_counts().get(row["id"], {}), [])

    def delete(self, principal: Principal, ref: str) -> dict[str, Any]:
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            row = self._row(uow, principal, ref, "schedule.manage")
            uow.schedules.delete(row["id"])
            uow.audit.append([AuditEntry(
                actor=principal.actor, action="schedule.deleted", subject=f"schedule:{row['id']}",
                domain=row["domain"], cause="operator request", details={"name": row["name"]})], now)
            uow.commit()
        return {"id": row["id"], "name": row["name"], "deleted": True}

    def _row(self, uow: Any, principal: Principal, ref: str, action: str) -> dict[str, Any]:
        row = uow.schedules.get(ref)
        if row is None:
            raise NotFound(f"no schedule {ref!r}")
        authorize(principal, action, row["domain"])
        return dict(row)

    def _out(self, row: dict[str, Any], counts: dict[str, int], fires: list[dict[str, Any]]) -> dict[str, Any]:
        expr, zone = parse_cron(row["cron"], row["timezone"])
        upcoming, t = [], row["next_at"]
        for _ in range(3):
            upcoming.append(t)
            t = next_due(expr, zone, t)
        return {"id": row["id"], "name": row["name"], "domain": row["domain"], "cron": row["cron"],
                "timezone": row["timezone"], "concurrency": row["concurrency"], "catch_up": row["catch_up"],
                "paused": row["paused"], "next_at": None if row["paused"] else row["next_at"],
                "upcoming": [] if row["paused"] else upcoming, "workflow": row["document"].get("name"),
                "params": row["params"], "created_by": row["created_by"], "created_at": row["created_at"],
                "fires": counts, "recent": [_fire_out(f) for f in fires]}

    # -- the controller's work ----------------------------------------------------------------

    def recover(self) -> int:
        """Fires recorded but maybe not submitted (a crash between the two): submit them now
        (idempotent by job id). What a new leader does before its first tick."""
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            pending = uow.schedules.pending_fires()
        for fire in pending:
            self._complete(fire)
        return len(pending)

    def tick(self) -> int:
        """Fire every due time that has come; the number of runs submitted."""
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            due = uow.schedules.due(now)
        submitted = 0
        for row in due:
            for fire in self._record(row, now):
                submitted += self._complete(fire)
        return submitted

    def _record(self, row: dict[str, Any], now: float) -> list[dict[str, Any]]:
        """Record the due times of one schedule up to now and advance its cursor, in one fenced
        transaction; the fires to submit (outcome "pending")."""
        expr, zone = parse_cron(row["cron"], row["timezone"])
        dues = list(due_times(expr, zone, row["next_at"], now))
        if not dues:
            return []
        fire_at, missed = plan_fires(dues, now, self.grace_s, row["catch_up"])
        caught = {t for t in fire_at if t < now - self.grace_s}
        next_at = next_due(expr, zone, dues[-1])
        fires = [{"schedule_id": row["id"], "scheduled_at": t, "job_id": self._ctx.ids.new_id("j"),
                  "outcome": "pending", "catch_up": t in caught, "reason": None, "fired_at": now} for t in fire_at]
        missed_rows = [{"schedule_id": row["id"], "scheduled_at": t, "job_id": None, "outcome": "missed",
                        "catch_up": False, "reason": "missed while no coordinator ran schedules "
                        f"(catch-up {row['catch_up']})", "fired_at": now} for t in missed[-MISSED_ROWS_KEPT:]]
        audit = []
        if missed:
            audit.append(AuditEntry(
                actor="system:schedules", action="schedule.skipped", subject=f"schedule:{row['id']}",
                domain=row["domain"], cause="missed while no coordinator ran schedules",
                details={"name": row["name"], "missed": len(missed), "first": missed[0], "last": missed[-1],
                         "caught_up": len(caught), "catch_up": row["catch_up"]}))
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)
            if not uow.schedules.advance(row["id"], row["next_at"], next_at):
                return []  # changed meanwhile (paused, resumed, deleted): the next tick sees it
            uow.schedules.add_fires(missed_rows + fires)
            uow.audit.append(audit, now)
            uow.commit()
        return [{**f, "schedule": row} for f in fires]

    def _complete(self, fire: dict[str, Any]) -> int:
        """Submit a recorded fire (applying the concurrency rule) and record the outcome."""
        schedule = fire.get("schedule")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            if schedule is None:
                schedule = uow.schedules.get(fire["schedule_id"])
            if schedule is None:
                return 0
            exists = uow.schedules.job_exists(fire["job_id"])
            running = [j for j in uow.schedules.unfinished_jobs(schedule["id"]) if j != fire["job_id"]]
        who = schedule_principal(schedule)
        outcome, reason, submitted = "submitted", None, 0
        if not exists and running and schedule["concurrency"] == "forbid":
            outcome, reason = "skipped", f"the previous run {running[-1]} is still running (concurrency forbid)"
        else:
            try:
                if not exists and running and schedule["concurrency"] == "replace":
                    # Only its own runs, in its own domain: cancelling them is part of the rule the
                    # submitter chose, so the schedule may (as an operator would) for these jobs.
                    canceller = Principal("schedule", who.id, who.name, Role.OPERATOR, who.domains)
                    for job_id in running:
                        with contextlib.suppress(Conflict, NotFound):  # finished meanwhile
                            self._runtime.intervene(canceller, job_id, "cancel",
                                                    f"replaced by the run due at {_iso(fire['scheduled_at'])}")
                if not exists:
                    self._runtime.submit(who, schedule["document"], schedule["params"], schedule["domain"],
                                         job_id=fire["job_id"])
                    submitted = 1
            except ValidationError as exc:  # the stored workflow no longer validates (a domain removed ...)
                outcome, reason = "failed", exc.message
        now = self._ctx.clock.now()
        details = {"name": schedule["name"], "scheduled_at": fire["scheduled_at"], "job": fire["job_id"],
                   "catch_up": bool(fire["catch_up"])}
        action = {"submitted": "schedule.fired", "skipped": "schedule.skipped", "failed": "schedule.failed"}[outcome]
        with self._ctx.store.unit_of_work() as uow:
            self._ctx.leadership.fence(uow)
            uow.schedules.set_fire(schedule["id"], fire["scheduled_at"], outcome=outcome, reason=reason,
                                   job_id=fire["job_id"] if outcome == "submitted" else None)
            uow.audit.append([AuditEntry(actor="system:schedules", action=action,
                                         subject=f"schedule:{schedule['id']}", domain=schedule["domain"],
                                         cause=reason or ("catch-up after downtime" if fire["catch_up"]
                                                          else "due time reached"), details=details)], now)
            uow.commit()
        if outcome != "submitted":
            log.info("schedule %s at %s: %s (%s)", schedule["name"], _iso(fire["scheduled_at"]), outcome, reason)
        return submitted


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _fire_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"scheduled_at": row["scheduled_at"], "job_id": row["job_id"], "outcome": row["outcome"],
            "catch_up": bool(row["catch_up"]), "reason": row["reason"], "fired_at": row["fired_at"]}
