"""Who may do what, where: roles, principals and the one `authorize` decision.

A token carries a role and the domains it may act in (`*` for all). Roles are ordered:
viewer < submitter < operator < admin. Each action needs a minimum role; acting on an object of
a domain needs that domain among the token's. Every refusal says which of the two failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from polyfabric.domain.errors import NotPermitted, ValidationError

__all__ = ["ACTIONS", "ALL_DOMAINS", "Principal", "Role", "authorize", "parse_role"]

ALL_DOMAINS = "*"


class Role(StrEnum):
    VIEWER = "viewer"
    SUBMITTER = "submitter"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def covers(self, other: Role) -> bool:
        return self.rank >= other.rank


_RANK = {Role.VIEWER: 0, Role.SUBMITTER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}

# action -> minimum role.
ACTIONS: dict[str, Role] = {
    "node.read": Role.VIEWER,
    "node.manage": Role.OPERATOR,
    "domain.read": Role.VIEWER,
    "domain.manage": Role.ADMIN,
    "token.read": Role.OPERATOR,
    "token.join.create": Role.OPERATOR,
    "token.api.create": Role.OPERATOR,
    "token.revoke": Role.OPERATOR,
    "audit.read": Role.VIEWER,
    "job.read": Role.VIEWER,
    "job.submit": Role.SUBMITTER,
    "job.manage": Role.OPERATOR,
    "usage.read": Role.VIEWER,  # the contribution ledger, limited to the token's domains
    "metrics.read": Role.VIEWER,  # GET /metrics: fabric-wide, so it also needs the domain "*"
    "schedule.read": Role.VIEWER,  # issue 7: cron schedules, webhook triggers, garbage collection
    "schedule.manage": Role.SUBMITTER,
    "trigger.read": Role.VIEWER,
    "trigger.manage": Role.SUBMITTER,
    "gc.read": Role.OPERATOR,
    "gc.run": Role.OPERATOR,
    "policy.read": Role.VIEWER,  # issue 6: policies (network scope needs admin: domain.manage)
    "policy.manage": Role.OPERATOR,
    "policy.test": Role.SUBMITTER,
    "config.read": Role.VIEWER,  # issue 6: configuration documents (network/selector scope need admin)
    "config.manage": Role.OPERATOR,
    "secret.read": Role.VIEWER,  # names and metadata only; values are never readable through the API
    "secret.manage": Role.OPERATOR,
    "secret.rotate": Role.ADMIN,
    "pool.read": Role.VIEWER,  # issue 7: elastic node pools
    "pool.manage": Role.ADMIN,  # a pool starts processes on the coordinator's machine or over SSH
    "quota.manage": Role.ADMIN,
}


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValidationError(
            f"unknown role {value!r}; roles: {', '.join(r.value for r in Role)}"
        ) from None


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: a user token or a node."""

    kind: str  # "token" or "node"
    id: str
    name: str
    role: Role
    domains: tuple[str, ...]

    @property
    def actor(self) -> str:
        """How the audit chain names this caller."""
        return f"{self.kind}:{self.name}" if self.name else f"{self.kind}:{self.id}"

    def has_domain(self, domain: str) -> bool:
        return ALL_DOMAINS in self.domains or domain in self.domains

    def covers_domains(self, domains: tuple[str, ...] | list[str]) -> bool:
        if ALL_DOMAINS in self.domains:
            return True
        return ALL_DOMAINS not in domains and all(d in self.domains for d in domains)


def authorize(principal: Principal, action: str, domain: str | None = None) -> None:
    """Raise NotPermitted with the reason unless `principal` may do `action` (in `domain`)."""
    needed = ACTIONS.get(action)
    if needed is None:
        raise NotPermitted(f"unknown action {action!r}")
    if not principal.role.covers(needed):
        raise NotPermitted(
            f"{action} needs role {needed} or higher; this token has role {principal.role}"
        )
    if domain is not None and not principal.has_domain(domain):
        raise NotPermitted(
            f"{action} in domain {domain!r} is not allowed for this token "
            f"(its domains: {', '.join(principal.domains) or 'none'})"
        )
