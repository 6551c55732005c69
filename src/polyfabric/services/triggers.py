"""Webhook triggers: a stored workflow started by an HMAC-signed POST to /v1/hooks/{id}.

The sender signs `TIMESTAMP + "." + BODY` with HMAC-SHA256 under the trigger's secret and sends
`X-Polyfabric-Timestamp: TIMESTAMP` (unix seconds) and `X-Polyfabric-Signature: sha256=HEX` (the
scheme of Stripe and GitHub). A timestamp more than `TOLERANCE_S` away from the coordinator's clock
is refused (an old capture cannot be replayed later), and a signature already delivered within
that window is refused too (a capture cannot be replayed at once). Every refusal is audited.

The secret must be usable to verify a signature, so it cannot be stored as a hash: it is sealed
with AES-256-GCM (the trigger id as associated data, so a sealed secret cannot be moved to another
trigger). The sealing key comes from `POLYFABRIC_TRIGGER_KEY` (base64 of 32 bytes, the same on
every coordinator) when set, else from the store (made at first use), where it is shared by
coordinators on one database; then a copy of the database alone reveals the secrets: set the
variable to keep the key apart. Listings and the audit chain never show a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from polyfabric.domain.access import Principal, Role, authorize
from polyfabric.domain.errors import Conflict, NotAuthenticated, NotFound, ValidationError
from polyfabric.services.context import ServiceContext
from polyfabric.services.ports import AuditEntry
from polyfabric.services.runtime import JobRuntime
from polyfabric.workflow.spec import parse_workflow

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "TOLERANCE_S", "TriggerService", "sign_webhook"]

SIGNATURE_HEADER = "x-polyfabric-signature"
TIMESTAMP_HEADER = "x-polyfabric-timestamp"
TOLERANCE_S = 300.0
KEY_ENV = "POLYFABRIC_TRIGGER_KEY"
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")


def sign_webhook(secret: str, timestamp: str | int | float, body: bytes) -> str:
    """The header value a sender computes: `sha256=` + HMAC-SHA256(secret, TIMESTAMP.BODY) in hex."""
    message = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class TriggerService:
    def __init__(self, ctx: ServiceContext, runtime: JobRuntime) -> None:
        self._ctx = ctx
        self._runtime = runtime
        self._key: bytes | None = None

    # -- sealing ----------------------------------------------------------------------------

    def _aead(self, uow: Any) -> AESGCM:
        if self._key is None:
            configured = os.environ.get(KEY_ENV)
            if configured:
                key = base64.b64decode(configured)
                if len(key) != 32:
                    raise ValidationError(f"{KEY_ENV} must be base64 of 32 bytes")
            else:
                key = base64.b64decode(uow.triggers.sealing_key(
                    lambda: base64.b64encode(AESGCM.generate_key(256)).decode(), self._ctx.clock.now()))
            self._key = key
        return AESGCM(self._key)

    def _seal(self, uow: Any, trigger_id: str, secret: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead(uow).encrypt(nonce, secret.encode(), trigger_id.encode())
        return "v1:" + base64.b64encode(nonce + sealed).decode()

    def _unseal(self, uow: Any, trigger_id: str, sealed: str) -> str:
        raw = base64.b64decode(sealed.removeprefix("v1:"))
        return self._aead(uow).decrypt(raw[:12], raw[12:], trigger_id.encode()).decode()

    # -- the API ----------------------------------------------------------------------------

    def create(self, principal: Principal, *, document: dict[str, Any], domain: str,
               name: str | None = None) -> dict[str, Any]:
        authorize(principal, "trigger.manage", domain)
        authorize(principal, "job.submit", domain)
        if not isinstance(document, dict):
            raise ValidationError("the workflow must be a mapping (a YAML document with name and tasks)")
        spec = parse_workflow(document)
        name = name or spec.name
        if not _NAME.match(name):
            raise ValidationError(f"trigger name {name!r} is not valid: use 1-64 letters, digits, '.', '_' and '-'")
        now = self._ctx.clock.now()
        trigger_id = self._ctx.ids.new_id("wh")
        secret = "pfw_" + secrets.token_urlsafe(32)
        with self._ctx.store.unit_of_work() as uow:
            if uow.domains.get(domain) is None:
                raise NotFound(f"domain {domain!r} does not exist")
            if uow.triggers.get(name) is not None:
                raise Conflict(f"a trigger named {name!r} exists already")
            row = {"id": trigger_id, "name": name, "kind": "webhook", "domain": domain, "document": document,
                   "secret_sealed": self._seal(uow, trigger_id, secret), "created_by": principal.actor,
                   "created_at": now, "fired": 0, "last_fired_at": None}
            uow.triggers.add(row)
            uow.audit.append([AuditEntry(
                actor=principal.actor, action="trigger.created", subject=f"trigger:{trigger_id}", domain=domain,
                cause="operator request", details={"name": name, "kind": "webhook", "workflow": spec.name,
                                                   "params": sorted(spec.params)})], now)
            uow.commit()
        return {**_out(row), "secret": secret}

    def list(self, principal: Principal) -> list[dict[str, Any]]:
        authorize(principal, "trigger.read")
        scope = None if "*" in principal.domains else principal.domains
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            return [_out(r) for r in uow.triggers.list(scope)]

    def get(self, principal: Principal, ref: str) -> dict[str, Any]:
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            return _out(self._row(uow, principal, ref, "trigger.read"))

    def delete(self, principal: Principal, ref: str) -> dict[str, Any]:
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            row = self._row(uow, principal, ref, "trigger.manage")
            uow.triggers.delete(row["id"])
            uow.audit.append([AuditEntry(actor=principal.actor, action="trigger.deleted",
                                         subject=f"trigger:{row['id']}", domain=row["domain"],
                                         cause="operator request", details={"name": row["name"]})], now)
            uow.commit()
        return {"id": row["id"], "name": row["name"], "deleted": True}

    def _row(self, uow: Any, principal: Principal, ref: str, action: str) -> dict[str, Any]:
        row = uow.triggers.get(ref)
        if row is None:
            raise NotFound(f"no trigger {ref!r}")
        authorize(principal, action, row["domain"])
        return dict(row)

    # -- a delivery -------------------------------------------------------------------------

    def deliver(self, trigger_id: str, body: bytes, headers: dict[str, str], source: str) -> dict[str, Any]:
        """Check the signature and start a run with the body's fields as params."""
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            row = uow.triggers.get(trigger_id)
            if row is None or row["id"] != trigger_id:
                raise NotFound(f"no trigger {trigger_id!r}")
            secret = self._unseal(uow, row["id"], row["secret_sealed"])
        signature = headers.get(SIGNATURE_HEADER, "").strip()
        stamp = headers.get(TIMESTAMP_HEADER, "").strip()
        problem = _check(secret, signature, stamp, body, now)
        if problem is not None:
            self._refuse(row, problem, source, now)
            raise NotAuthenticated(problem)
        try:
            params = json.loads(body or b"{}")
        except ValueError as exc:
            raise ValidationError(f"the body must be a JSON object of params: {exc}") from None
        if not isinstance(params, dict):
            raise ValidationError("the body must be a JSON object of params (field names = the workflow's params)")
        parse_workflow(row["document"], params)  # an unknown or mistyped param: 400 naming it, nothing recorded
        digest = hashlib.sha256(signature.encode()).hexdigest()
        job_id = self._ctx.ids.new_id("j")
        with self._ctx.store.unit_of_work() as uow:
            earlier = uow.triggers.record_delivery(row["id"], digest, now, job_id)
            if earlier is None:
                uow.audit.append([AuditEntry(actor=f"trigger:{row['name']}", action="trigger.fired",
                                             subject=f"trigger:{row['id']}", domain=row["domain"],
                                             cause=f"signed webhook from {source}",
                                             details={"job": job_id, "params": params})], now)
            uow.commit()
        if earlier is not None:
            if earlier and not self._runtime.exists(earlier):
                job_id = earlier  # recorded, then the coordinator stopped before submitting: finish it
            else:
                self._refuse(row, f"replayed delivery (this signature started job {earlier} already)", source, now)
                raise Conflict(f"this delivery was received before and started job {earlier}; "
                               "sign each delivery with a fresh timestamp")
        who = Principal("trigger", row["id"], row["name"], Role.SUBMITTER, (row["domain"],))
        return self._runtime.submit(who, row["document"], params, row["domain"], job_id=job_id)

    def _refuse(self, row: dict[str, Any], problem: str, source: str, now: float) -> None:
        with self._ctx.store.unit_of_work() as uow:
            uow.audit.append([AuditEntry(actor=f"remote:{source}", action="trigger.refused",
                                         subject=f"trigger:{row['id']}", domain=row["domain"], cause=problem,
                                         details={"name": row["name"]})], now)
            uow.commit()

    def forget_deliveries(self) -> int:
        """Deliveries older than twice the tolerance cannot be replayed anyway (their timestamp)."""
        with self._ctx.store.unit_of_work() as uow:
            n = uow.triggers.forget_deliveries(self._ctx.clock.now() - 2 * TOLERANCE_S)
            uow.commit()
        return int(n)


def _check(secret: str, signature: str, stamp: str, body: bytes, now: float) -> str | None:
    """Why a delivery is refused, or None."""
    if not signature:
        return f"missing signature: send {SIGNATURE_HEADER.title()}: sha256=<hex HMAC of TIMESTAMP.BODY>"
    if not stamp:
        return f"missing timestamp: send {TIMESTAMP_HEADER.title()}: <unix seconds> (it is signed too)"
    try:
        at = float(stamp)
    except ValueError:
        return f"timestamp {stamp[:40]!r} is not unix seconds"
    if abs(now - at) > TOLERANCE_S:
        return f"timestamp is {abs(now - at):.0f}s away from the coordinator's clock (at most {TOLERANCE_S:.0f}s)"
    if not hmac.compare_digest(sign_webhook(secret, stamp, body), signature):
        return "bad signature: not an HMAC-SHA256 of TIMESTAMP.BODY under this trigger's secret"
    return None


def _out(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "kind": row["kind"], "domain": row["domain"],
            "url": f"/v1/hooks/{row['id']}", "workflow": row["document"].get("name"),
            "params": sorted((row["document"].get("params") or {}).keys()),
            "created_by": row["created_by"], "created_at": row["created_at"], "fired": row["fired"],
            "last_fired_at": row["last_fired_at"]}
