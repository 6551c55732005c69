"""Governance domains: the organizations (or groups of them) that nodes and jobs belong to."""

from __future__ import annotations

from typing import Any

from polyfabric.domain.access import Principal, authorize
from polyfabric.domain.errors import Conflict
from polyfabric.domain.ids import validate_domain_name
from polyfabric.services.context import ServiceContext
from polyfabric.services.ports import AuditEntry, UnitOfWork

__all__ = ["DomainService", "ensure_domain"]


def ensure_domain(uow: UnitOfWork, name: str, principal: Principal, now: float) -> list[AuditEntry]:
    """Create the domain on first use; returns the audit entries to append (none if it existed)."""
    if uow.domains.get(name) is not None:
        return []
    uow.domains.add(name, "", now, principal.actor)
    return [AuditEntry(actor=principal.actor, action="domain.created", subject=f"domain:{name}",
                       domain=name, cause="first use")]


class DomainService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def create(self, principal: Principal, name: str, description: str = "") -> dict[str, Any]:
        validate_domain_name(name)
        authorize(principal, "domain.manage", name)
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            if uow.domains.get(name) is not None:
                raise Conflict(f"domain {name!r} already exists")
            uow.domains.add(name, description, now, principal.actor)
            uow.audit.append([AuditEntry(actor=principal.actor, action="domain.created",
                                         subject=f"domain:{name}", domain=name,
                                         cause="operator request", details={"description": description})],
                             now)
            created = uow.domains.get(name)
            uow.commit()
        assert created is not None
        return created

    def list(self, principal: Principal) -> list[dict[str, Any]]:
        authorize(principal, "domain.read")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            return [d for d in uow.domains.list() if principal.has_domain(d["name"])]
