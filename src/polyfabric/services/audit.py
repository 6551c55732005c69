"""The audit chain as a use case: query, export, verify, and sign the head.

The chain itself (linking, hashing, verification) is pure code in `domain.audit`; this module
reads it from the store and signs its head with the coordinator's key, so that a participant
holding an export can prove later that nothing before that head was rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from polyfabric.domain import audit as chain
from polyfabric.domain.access import Principal, authorize
from polyfabric.domain.audit import AuditRecord, ChainReport, SignedHead
from polyfabric.domain.errors import NotPermitted
from polyfabric.security.keys import b64d
from polyfabric.security.signing import verify_bytes
from polyfabric.services.context import ServiceContext
from polyfabric.services.ports import AuditQuery

__all__ = ["AuditService"]


class AuditService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def register_key(self) -> None:
        with self._ctx.store.unit_of_work() as uow:
            uow.audit.add_coordinator_key(self._ctx.signer.key_id, self._ctx.signer.public_key_b64,
                                          self._ctx.clock.now())
            uow.commit()

    def query(self, principal: Principal, q: AuditQuery) -> list[AuditRecord]:
        authorize(principal, "audit.read")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            records = uow.audit.query(q)
        if "*" in principal.domains:
            return records
        return [r for r in records if r.domain is None or principal.has_domain(r.domain)]

    def export(self, principal: Principal) -> Iterator[str]:
        """The whole chain as JSON Lines, with the signed heads and the coordinators' keys."""
        authorize(principal, "audit.read")
        if "*" not in principal.domains:
            raise NotPermitted("exporting the whole audit chain needs a token for all domains ('*')")
        return self._export_lines()

    def _export_lines(self) -> Iterator[str]:
        # One read-only transaction for the whole export: a consistent snapshot, streamed.
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            heads = uow.audit.heads()
            keys = uow.audit.coordinator_keys()
            yield from chain.export_lines(uow.audit.iter_all(), heads, self._ctx.signer.public_key_b64,
                                          keys=keys)

    def verify(self, principal: Principal) -> ChainReport:
        authorize(principal, "audit.read")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            heads = uow.audit.heads()
            keys = uow.audit.coordinator_keys()
            return chain.verify_chain(uow.audit.iter_all(), heads=heads,
                                      verify_signature=make_verifier(keys.values()))

    def sign_head(self) -> SignedHead | None:
        """Sign the chain's tip if it moved since the last signed head."""
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            seq, tip_hash = uow.audit.tip()
            last = uow.audit.last_head()
            if seq == 0 or (last is not None and last.seq >= seq):
                return None
            message = chain.head_message(seq, tip_hash, now)
            head = SignedHead(seq=seq, hash=tip_hash, at=now, key_id=self._ctx.signer.key_id,
                              signature=self._ctx.signer.sign(message))
            uow.audit.add_head(head)
            uow.commit()
        return head


def make_verifier(keys: Iterable[str]) -> Callable[[bytes, bytes], bool]:
    """A head-signature checker that accepts a signature by any of the coordinators' keys
    (base64url raw Ed25519 public keys): with several coordinators, each signs with its own."""
    raw = [b64d(value) for value in keys]

    def verify(message: bytes, signature: bytes) -> bool:
        return any(verify_bytes(key, message, signature) for key in raw)

    return verify
