"""Ports: what the services need from the outside world, as protocols.

The store implements the unit of work and its repositories; the coordinator supplies the clock,
the id source and the signer. Tests pass a FakeClock (polyfabric.testing).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from polyfabric.domain.audit import AuditRecord, SignedHead
from polyfabric.domain.nodes import Node

__all__ = [
    "ApiTokenRow",
    "AuditEntry",
    "AuditQuery",
    "AuditRepository",
    "Clock",
    "DomainRepository",
    "IdSource",
    "JoinTokenRow",
    "NodeRepository",
    "Signer",
    "Store",
    "TokenRepository",
    "UnitOfWork",
]


class Clock(Protocol):
    def now(self) -> float: ...


class IdSource(Protocol):
    def new_id(self, prefix: str) -> str: ...


class Signer(Protocol):
    """The coordinator's own key: signs audit heads."""

    key_id: str
    public_key_b64: str

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What a use case wants recorded; the audit repository links it into the chain."""

    actor: str
    action: str
    subject: str
    cause: str
    domain: str | None = None
    details: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    subject: str | None = None
    action: str | None = None
    since: float | None = None
    after_seq: int = 0
    limit: int = 100


@dataclass(frozen=True, slots=True)
class JoinTokenRow:
    id: str
    token_hash: str
    prefix: str
    domain: str
    description: str
    created_at: float
    created_by: str
    expires_at: float | None
    uses_allowed: int | None
    uses: int
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class ApiTokenRow:
    id: str
    token_hash: str
    prefix: str
    name: str
    role: str
    domains: tuple[str, ...]
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None


class DomainRepository(Protocol):
    def get(self, name: str) -> dict[str, Any] | None: ...
    def add(self, name: str, description: str, now: float, actor: str) -> None: ...
    def list(self) -> list[dict[str, Any]]: ...


class TokenRepository(Protocol):
    def add_join(self, row: JoinTokenRow) -> None: ...
    def add_api(self, row: ApiTokenRow) -> None: ...
    def join_by_hash(self, token_hash: str) -> JoinTokenRow | None: ...
    def api_by_hash(self, token_hash: str) -> ApiTokenRow | None: ...
    def consume_join(self, token_id: str) -> bool: ...
    def list_join(self, domains: tuple[str, ...] | None) -> list[JoinTokenRow]: ...
    def list_api(self) -> list[ApiTokenRow]: ...
    def revoke(self, token_id: str, now: float) -> str | None: ...
    def count_api(self) -> int: ...


class NodeRepository(Protocol):
    def get(self, node_id: str) -> Node | None: ...
    def by_name(self, name: str) -> Node | None: ...
    def add(self, node: Node, facts: dict[str, Any], join_token_id: str) -> None: ...
    def update(self, node: Node, *, expected_version: int | None = None) -> None: ...
    def list(self, *, state: str | None = None, domain: str | None = None,
             domains: tuple[str, ...] | None = None, after: str | None = None,
             limit: int = 1000) -> list[Node]: ...
    def facts(self, node_id: str) -> dict[str, Any]: ...
    def set_facts(self, node_id: str, facts: dict[str, Any]) -> None: ...
    def set_conditions(self, node_id: str, conditions: list[dict[str, Any]],
                       health: list[dict[str, Any]]) -> None: ...
    def down_times(self, node_id: str) -> list[float]: ...
    def set_down_times(self, node_id: str, times: list[float]) -> None: ...
    def record_liveness(self, rows: list[tuple[str, float, dict[str, Any]]]) -> None: ...
    def public_keys(self) -> dict[str, tuple[bytes, bool]]: ...


class AuditRepository(Protocol):
    def append(self, entries: list[AuditEntry], now: float) -> list[AuditRecord]: ...
    def query(self, q: AuditQuery) -> list[AuditRecord]: ...
    def iter_all(self, batch: int = 1000) -> Iterator[AuditRecord]: ...
    def tip(self) -> tuple[int, str]: ...
    def add_head(self, head: SignedHead) -> None: ...
    def heads(self) -> list[SignedHead]: ...
    def last_head(self) -> SignedHead | None: ...
    def add_coordinator_key(self, key_id: str, public_key_b64: str, now: float) -> None: ...
    def coordinator_keys(self) -> dict[str, str]: ...


class UnitOfWork(Protocol):
    """One transaction. Leaving the `with` block without `commit()` rolls everything back."""

    domains: DomainRepository
    tokens: TokenRepository
    nodes: NodeRepository
    audit: AuditRepository

    def __enter__(self) -> UnitOfWork: ...
    def __exit__(self, *exc: object) -> None: ...
    def commit(self) -> None: ...


class Store(Protocol):
    def unit_of_work(self, *, readonly: bool = False) -> UnitOfWork: ...
    def close(self) -> None: ...
