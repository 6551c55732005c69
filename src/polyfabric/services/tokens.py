"""Join tokens (a node's ticket into a domain) and API tokens (a person's or tool's credential).

Tokens are random, shown once, stored only as SHA-256 hashes. A token can only mint tokens of
its own role or lower, for domains it holds itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyfabric.domain.access import ALL_DOMAINS, Principal, Role, authorize, parse_role
from polyfabric.domain.errors import NotAuthenticated, NotFound, NotPermitted, ValidationError
from polyfabric.domain.ids import validate_domain_name
from polyfabric.security.tokens import looks_like_token, new_token, token_hash, token_prefix
from polyfabric.services.context import ServiceContext
from polyfabric.services.domains import ensure_domain
from polyfabric.services.ports import ApiTokenRow, AuditEntry, JoinTokenRow, UnitOfWork

__all__ = ["IssuedToken", "TokenService"]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly minted token: the only moment its plaintext exists outside the holder."""

    id: str
    token: str
    kind: str
    row: JoinTokenRow | ApiTokenRow


class TokenService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    # -- bootstrap and authentication -------------------------------------------------------

    def bootstrap_admin(self) -> IssuedToken | None:
        """On the very first start, mint the admin token. Returns None when tokens exist."""
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            if uow.tokens.count_api() > 0:
                return None
            issued = self._add_api(uow, "admin", Role.ADMIN, (ALL_DOMAINS,), None, now, "system:bootstrap")
            uow.audit.append([AuditEntry(
                actor="system:bootstrap", action="token.created", subject=f"token:{issued.id}",
                cause="first start of the coordinator", details={"kind": "api", "role": "admin",
                                                                 "name": "admin", "domains": ["*"]},
            )], now)
            uow.commit()
        return issued

    def authenticate(self, token: str) -> Principal:
        if not token or not looks_like_token(token):
            raise NotAuthenticated("missing or malformed API token (expected 'Authorization: Bearer pfa_...')")
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            row = uow.tokens.api_by_hash(token_hash(token))
        if row is None:
            raise NotAuthenticated("unknown API token")
        if row.revoked_at is not None:
            raise NotAuthenticated(f"API token {row.id} was revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise NotAuthenticated(f"API token {row.id} expired")
        return Principal("token", row.id, row.name, Role(row.role), row.domains)

    # -- join tokens ------------------------------------------------------------------------

    def create_join(self, principal: Principal, *, domain: str, ttl_s: float | None, uses: int | None,
                    description: str = "") -> IssuedToken:
        validate_domain_name(domain)
        authorize(principal, "token.join.create", domain)
        if uses is not None and uses < 1:
            raise ValidationError(f"--uses must be at least 1, got {uses}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValidationError("--ttl must be positive")
        now = self._ctx.clock.now()
        token = new_token("join")
        row = JoinTokenRow(
            id=self._ctx.ids.new_id("jt"), token_hash=token_hash(token), prefix=token_prefix(token),
            domain=domain, description=description, created_at=now, created_by=principal.actor,
            expires_at=now + ttl_s if ttl_s else None, uses_allowed=uses, uses=0, revoked_at=None,
        )
        with self._ctx.store.unit_of_work() as uow:
            entries = ensure_domain(uow, domain, principal, now)
            uow.tokens.add_join(row)
            entries.append(AuditEntry(
                actor=principal.actor, action="token.created", subject=f"token:{row.id}", domain=domain,
                cause="operator request",
                details={"kind": "join", "domain": domain, "ttl_s": ttl_s, "uses": uses,
                         "prefix": row.prefix},
            ))
            uow.audit.append(entries, now)
            uow.commit()
        return IssuedToken(row.id, token, "join", row)

    def check_join(self, uow: UnitOfWork, token: str, now: float) -> JoinTokenRow:
        """Validate a join token inside the registering transaction and use it once."""
        if not token or not token.startswith("pfj_"):
            raise NotAuthenticated("join token is missing or malformed (expected pfj_...)")
        row = uow.tokens.join_by_hash(token_hash(token))
        if row is None:
            raise NotAuthenticated("join token is not known to this coordinator")
        if row.revoked_at is not None:
            raise NotAuthenticated(f"join token {row.id} was revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise NotAuthenticated(f"join token {row.id} expired")
        if not uow.tokens.consume_join(row.id):
            raise NotAuthenticated(f"join token {row.id} is used up ({row.uses_allowed} uses allowed)")
        return row

    # -- API tokens -------------------------------------------------------------------------

    def create_api(self, principal: Principal, *, name: str, role: str, domains: list[str],
                   ttl_s: float | None) -> IssuedToken:
        wanted = parse_role(role)
        if not name.strip():
            raise ValidationError("an API token needs a name (who or what holds it)")
        if not domains:
            raise ValidationError("an API token needs at least one domain (or '*' for all)")
        for domain in domains:
            if domain != ALL_DOMAINS:
                validate_domain_name(domain)
        authorize(principal, "token.api.create")
        if not principal.role.covers(wanted):
            raise NotPermitted(f"a {principal.role} token cannot create a {wanted} token")
        if not principal.covers_domains(domains):
            raise NotPermitted(
                f"cannot grant domains {', '.join(domains)}: this token holds only "
                f"{', '.join(principal.domains)}"
            )
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            issued = self._add_api(uow, name, wanted, tuple(domains), ttl_s, now, principal.actor)
            uow.audit.append([AuditEntry(
                actor=principal.actor, action="token.created", subject=f"token:{issued.id}",
                cause="operator request",
                details={"kind": "api", "name": name, "role": wanted.value, "domains": domains,
                         "ttl_s": ttl_s, "prefix": issued.row.prefix},
            )], now)
            uow.commit()
        return issued

    def _add_api(self, uow: UnitOfWork, name: str, role: Role, domains: tuple[str, ...],
                 ttl_s: float | None, now: float, actor: str) -> IssuedToken:
        token = new_token("api")
        row = ApiTokenRow(
            id=self._ctx.ids.new_id("at"), token_hash=token_hash(token), prefix=token_prefix(token),
            name=name, role=role.value, domains=domains, created_at=now, created_by=actor,
            expires_at=now + ttl_s if ttl_s else None, revoked_at=None,
        )
        uow.tokens.add_api(row)
        return IssuedToken(row.id, token, "api", row)

    # -- listing and revocation -------------------------------------------------------------

    def list(self, principal: Principal, kind: str | None) -> list[JoinTokenRow | ApiTokenRow]:
        authorize(principal, "token.read")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            out: list[JoinTokenRow | ApiTokenRow] = []
            if kind in (None, "join"):
                scope = None if ALL_DOMAINS in principal.domains else principal.domains
                out.extend(uow.tokens.list_join(scope))
            if kind in (None, "api"):
                out.extend(t for t in uow.tokens.list_api() if principal.covers_domains(t.domains))
        return out

    def revoke(self, principal: Principal, token_id: str) -> str:
        authorize(principal, "token.revoke")
        now = self._ctx.clock.now()
        with self._ctx.store.unit_of_work() as uow:
            target = next((t for t in self._all(uow) if t.id == token_id), None)
            if target is None:
                raise NotFound(f"no token with id {token_id!r}")
            domains = (target.domain,) if isinstance(target, JoinTokenRow) else target.domains
            if not principal.covers_domains(domains):
                raise NotPermitted(f"token {token_id} belongs to domains this token does not hold")
            kind = uow.tokens.revoke(token_id, now)
            uow.audit.append([AuditEntry(
                actor=principal.actor, action="token.revoked", subject=f"token:{token_id}",
                domain=domains[0] if kind == "join" else None, cause="operator request",
                details={"kind": kind},
            )], now)
            uow.commit()
        return kind or ""

    @staticmethod
    def _all(uow: UnitOfWork) -> list[JoinTokenRow | ApiTokenRow]:
        return [*uow.tokens.list_join(None), *uow.tokens.list_api()]
