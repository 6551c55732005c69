"""Roles, domains and the one authorize decision."""

from __future__ import annotations

import itertools

import pytest

from polyfabric.domain.access import ACTIONS, ALL_DOMAINS, Principal, Role, authorize, parse_role
from polyfabric.domain.errors import NotPermitted, ValidationError

ORDER = [Role.VIEWER, Role.SUBMITTER, Role.OPERATOR, Role.ADMIN]


def principal(role: Role, domains: tuple[str, ...] = (ALL_DOMAINS,), name: str = "alice") -> Principal:
    return Principal(kind="token", id="t-1", name=name, role=role, domains=domains)


def test_roles_are_ordered() -> None:
    assert [r.rank for r in ORDER] == [0, 1, 2, 3]
    for lower, higher in itertools.combinations(ORDER, 2):
        assert higher.covers(lower)
        assert not lower.covers(higher)
    for role in ORDER:
        assert role.covers(role)


@pytest.mark.parametrize("action, needed", sorted(ACTIONS.items()))
def test_each_action_needs_its_minimum_role(action: str, needed: Role) -> None:
    for role in ORDER:
        if role.covers(needed):
            authorize(principal(role), action)
        else:
            with pytest.raises(NotPermitted) as info:
                authorize(principal(role), action)
            assert info.value.message == (
                f"{action} needs role {needed} or higher; this token has role {role}"
            )


def test_some_actions_need_admin() -> None:
    assert ACTIONS["domain.manage"] == Role.ADMIN
    with pytest.raises(NotPermitted, match="needs role admin"):
        authorize(principal(Role.OPERATOR), "domain.manage")


def test_a_domain_outside_the_tokens_is_refused_naming_it() -> None:
    p = principal(Role.OPERATOR, ("lab", "prod"))
    authorize(p, "node.manage", "lab")
    authorize(p, "node.manage")  # no domain involved
    with pytest.raises(NotPermitted) as info:
        authorize(p, "node.manage", "edge")
    assert "'edge'" in info.value.message
    assert "its domains: lab, prod" in info.value.message


def test_a_token_without_domains_says_so() -> None:
    with pytest.raises(NotPermitted, match=r"its domains: none"):
        authorize(principal(Role.ADMIN, ()), "node.read", "lab")


def test_the_role_is_checked_before_the_domain() -> None:
    with pytest.raises(NotPermitted, match="needs role operator"):
        authorize(principal(Role.VIEWER, ("lab",)), "node.manage", "edge")


def test_all_domains() -> None:
    p = principal(Role.VIEWER, (ALL_DOMAINS,))
    assert p.has_domain("anything")
    authorize(p, "node.read", "anything")
    assert p.covers_domains(("a", "b", ALL_DOMAINS))


def test_covers_domains() -> None:
    p = principal(Role.OPERATOR, ("lab", "prod"))
    assert p.covers_domains(("lab",))
    assert p.covers_domains(["lab", "prod"])
    assert not p.covers_domains(("lab", "edge"))
    assert not p.covers_domains((ALL_DOMAINS,)), "a scoped token cannot grant every domain"


def test_unknown_actions_are_refused() -> None:
    with pytest.raises(NotPermitted, match=r"unknown action 'node\.explode'"):
        authorize(principal(Role.ADMIN), "node.explode")


def test_parse_role() -> None:
    assert parse_role("operator") is Role.OPERATOR
    with pytest.raises(ValidationError) as info:
        parse_role("root")
    assert info.value.message == "unknown role 'root'; roles: viewer, submitter, operator, admin"


def test_actor_names_the_principal() -> None:
    assert principal(Role.ADMIN, name="admin").actor == "token:admin"
    assert Principal("node", "n-abc", "", Role.VIEWER, ()).actor == "node:n-abc"
