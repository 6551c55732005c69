"""Secrets: stored encrypted, listed by name only, delivered sealed to the one node running an attempt.

At rest (security/sealing.py): each value is AES-256-GCM encrypted under its own data key, which is
wrapped by the key-encryption key in `DATA_DIR/secrets.key` (0600). Associated data binds every
ciphertext to its domain and name, so a row copied onto another name does not decrypt.

In flight: a task names the secrets it needs (`secrets: {API_KEY: name}` as env, `{file: name}` as a
file). When its attempt is leased to a node, the lease carries the values sealed to that node's
key for that attempt only (`seal_leases`); nothing else ever carries them. The audit chain records
each delivery (task, attempt, node, names), never a value. Values are never logged, listed, or
returned by any API call.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from polyfabric.domain.access import Principal, authorize
from polyfabric.domain.errors import NotFound, Unavailable, ValidationError
from polyfabric.domain.ids import validate_domain_name
from polyfabric.security.sealing import Keyring, SealError, aead_decrypt, aead_encrypt, seal
from polyfabric.services.context import ServiceContext
from polyfabric.services.ports import AuditEntry

__all__ = ["MAX_SECRET_BYTES", "SecretService", "validate_secret_name"]

log = logging.getLogger("polyfabric.secrets")

MAX_SECRET_BYTES = 64 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def validate_secret_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(f"secret name {name!r} is not valid (letters, digits, '.', '_', '-'; at most 100)")
    return name


def _aad(domain: str, name: str) -> bytes:
    return f"polyfabric-secret|{domain}|{name}".encode()


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    return {"domain": row["domain"], "name": row["name"], "size": row["size"], "version": row["version"],
            "key_id": row["key_id"], "created_at": row["created_at"], "created_by": row["created_by"],
            "updated_at": row["updated_at"], "updated_by": row["updated_by"]}


class SecretService:
    def __init__(self, ctx: ServiceContext, keyring_path: Path | None = None) -> None:
        self._ctx = ctx
        self._keyring = Keyring(keyring_path) if keyring_path is not None else None
        self._lock = threading.Lock()
        self._delivered: set[tuple[str, int, str]] = set()

    def configure(self, keyring_path: Path) -> None:
        """Where the key-encryption keys live (the coordinator's data dir)."""
        self._keyring = Keyring(keyring_path)

    def _ring(self) -> Keyring:
        if self._keyring is None:
            raise Unavailable("this coordinator has no secrets key file configured")
        return self._keyring

    # -- operators ----------------------------------------------------------------------------

    def set(self, principal: Principal, domain: str, name: str, value: bytes) -> dict[str, Any]:
        validate_domain_name(domain)
        validate_secret_name(name)
        authorize(principal, "secret.manage", domain)
        if not isinstance(value, bytes | bytearray) or not value:
            raise ValidationError("a secret's value must not be empty")
        if len(value) > MAX_SECRET_BYTES:
            raise ValidationError(f"a secret's value may have at most {MAX_SECRET_BYTES} bytes, got {len(value)}")
        now = self._ctx.clock.now()
        with self._lock:
            kid, kek = self._ring().current()
        data_key = os.urandom(32)  # AES-256 data key of this value
        row = {"domain": domain, "name": name, "key_id": kid,
               "wrapped_key": aead_encrypt(kek, data_key, _aad(domain, name) + b"|key"),
               "ciphertext": aead_encrypt(data_key, bytes(value), _aad(domain, name)),
               "size": len(value), "updated_at": now, "updated_by": principal.actor}
        with self._ctx.store.unit_of_work() as uow:
            if uow.domains.get(domain) is None:
                raise NotFound(f"domain {domain!r} does not exist")
            before = uow.secrets.get(domain, name)
            row["version"] = (before["version"] + 1) if before else 1
            row["created_at"] = before["created_at"] if before else now
            row["created_by"] = before["created_by"] if before else principal.actor
            uow.secrets.put(row)
            uow.audit.append([AuditEntry(
                actor=principal.actor, action="secret.set", subject=f"secret:{domain}/{name}", domain=domain,
                cause="operator request", details={"version": row["version"], "size": len(value),
                                                   "key_id": kid})], now)
            uow.commit()
        return _meta(row)

    def list(self, principal: Principal, domain: str | None = None) -> list[dict[str, Any]]:
        authorize(principal, "secret.read", domain)
        scope = None if "*" in principal.domains else principal.domains
        if domain is not None:
            scope = (domain,)
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            return [_meta(r) for r in uow.secrets.list(scope)]

    def remove(self, principal: Principal, domain: str, name: str) -> None:
        authorize(principal, "secret.manage", domain)
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            if not uow.secrets.delete(domain, name):
                raise NotFound(f"no secret {name!r} in domain {domain!r}")
            uow.audit.append([AuditEntry(
                actor=principal.actor, action="secret.removed", subject=f"secret:{domain}/{name}", domain=domain,
                cause="operator request", details={})], now)
            uow.commit()

    def rotate_key(self, principal: Principal) -> dict[str, Any]:
        """A new key-encryption key; every data key re-wrapped under it in one transaction."""
        authorize(principal, "secret.rotate")
        now = self._ctx.clock.now()
        ring = self._ring()
        with self._lock:
            ring.current()  # make sure a ring exists
            new_kid, new_kek = ring.add_new()  # on disk before anything is wrapped with it
            with self._ctx.store.unit_of_work() as uow:
                rows = uow.secrets.wrapped_keys()
                old = set()
                for domain, name, kid, wrapped in rows:
                    data_key = aead_decrypt(ring.get(kid), wrapped, _aad(domain, name) + b"|key")
                    uow.secrets.rewrap(domain, name, new_kid,
                                       aead_encrypt(new_kek, data_key, _aad(domain, name) + b"|key"))
                    old.add(kid)
                uow.audit.append([AuditEntry(
                    actor=principal.actor, action="secret.key_rotated", subject="secrets:keyring",
                    cause="operator request", details={"key_id": new_kid, "rewrapped": len(rows),
                                                       "retired_keys": sorted(old - {new_kid})})], now)
                uow.commit()
            ring.make_only(new_kid)
        return {"key_id": new_kid, "rewrapped": len(rows)}

    # -- delivery -----------------------------------------------------------------------------

    def _value(self, uow: Any, domain: str, name: str) -> bytes:
        row = uow.secrets.get(domain, name)
        if row is None:
            raise NotFound(f"secret {name!r} does not exist in domain {domain!r}")
        data_key = aead_decrypt(self._ring().get(row["key_id"]), bytes(row["wrapped_key"]),
                                _aad(domain, name) + b"|key")
        return aead_decrypt(data_key, bytes(row["ciphertext"]), _aad(domain, name))

    def seal_leases(self, node_id: str, leases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replace each lease's secret references (`secret_refs`, set by the runtime) with the values
        sealed to this node for this attempt; a secret that cannot be had becomes an `error` the
        agent fails the attempt with."""
        wanting = [lease for lease in leases if lease.get("secret_refs")]
        if not wanting:
            for lease in leases:
                lease.pop("secret_refs", None)
            return leases
        now = self._ctx.clock.now()
        audit: list[AuditEntry] = []
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            node = uow.nodes.get(node_id)
            for lease in wanting:
                refs = lease.pop("secret_refs")
                domain = refs["domain"]
                names = sorted({name for _, name in refs["items"].values()})
                context = f"{node_id}|{lease['task_id']}|{lease['attempt']}"
                try:
                    if node is None:
                        raise NotFound(f"node {node_id} is not registered")
                    values = {name: self._value(uow, domain, name) for name in names}
                except (NotFound, ValidationError, SealError, Unavailable) as exc:
                    message = exc.message if hasattr(exc, "message") else str(exc)
                    lease["secrets"] = {"names": names, "error": f"secrets unavailable: {message}"}
                    continue
                plain = {"env": {}, "files": {}}
                for target, (kind, name) in refs["items"].items():
                    plain["env" if kind == "env" else "files"][target] = base64.b64encode(values[name]).decode()
                envelope = seal(node.public_key, json.dumps(plain).encode(), context)
                lease["secrets"] = {"names": names, "sealed": envelope,
                                    "env": sorted(plain["env"]), "files": sorted(plain["files"])}
                key = (lease["task_id"], lease["attempt"], node_id)
                with self._lock:
                    first = key not in self._delivered
                    self._delivered.add(key)
                    if len(self._delivered) > 100_000:
                        self._delivered.clear()
                if first:
                    audit.append(AuditEntry(
                        actor="system:secrets", action="secret.delivered", subject=f"task:{lease['task_id']}",
                        domain=domain, cause=f"sealed to node {node_id} for attempt {lease['attempt']}",
                        details={"node": node_id, "attempt": lease["attempt"], "job": lease.get("job_id"),
                                 "secrets": names}))
        for lease in leases:
            lease.pop("secret_refs", None)
        if audit:
            with self._ctx.store.unit_of_work() as uow:
                uow.audit.append(audit, now)
                uow.commit()
        return leases
