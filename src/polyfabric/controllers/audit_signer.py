"""Signs the audit chain's head with the coordinator's key whenever the chain has grown."""

from __future__ import annotations

from polyfabric.services.audit import AuditService

__all__ = ["AuditHeadSigner"]


class AuditHeadSigner:
    """Signs the audit chain's head with the coordinator's key when it has moved."""

    name = "audit-signer"

    def __init__(self, audit: AuditService, period: float = 5.0) -> None:
        self._audit = audit
        self.period = period

    def run_once(self) -> object:
        return self._audit.sign_head()

    def final_pass(self) -> object:
        return self.run_once()
