"""`polyfabric token` (join and API tokens) and `polyfabric domain`."""

from __future__ import annotations

from typing import Any

import click

from polyfabric.cli.output import client_options, emit, handle_errors, open_client, table, when
from polyfabric.domain.errors import ValidationError
from polyfabric.domain.jobs import parse_duration

__all__ = ["domain", "token"]


def _ttl(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="--ttl") from None


@click.group()
def token() -> None:
    """Join tokens (for nodes) and API tokens (for people and tools)."""


@token.command("create")
@click.option("--domain", "domains", multiple=True, required=True,
              help="Join token: the domain the node joins. API token: a domain it may act in (repeat; '*' = all).")
@click.option("--role", default=None, type=click.Choice(["admin", "operator", "submitter", "viewer"]),
              help="Make an API token with this role (without --role: a join token).")
@click.option("--name", default=None, help="API token: who or what holds it. Join token: a description.")
@click.option("--ttl", default=None, help="Lifetime, e.g. 1h, 30m, 7d (default: no expiry).")
@click.option("--uses", type=int, default=None, help="Join token: how many nodes may join with it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
@handle_errors
def token_create(domains: tuple[str, ...], role: str | None, name: str | None, ttl: str | None,
                 uses: int | None, as_json: bool, url: str | None, token: str | None) -> None:
    """Create a join token (default) or, with --role, an API token. The token is shown once."""
    with open_client(url, token) as client:
        if role is None:
            if len(domains) != 1:
                raise click.BadParameter("a join token is for exactly one domain", param_hint="--domain")
            if uses is not None and uses < 1:
                raise click.BadParameter("must be at least 1", param_hint="--uses")
            created = client.post("/v1/tokens/join", {"domain": domains[0], "ttl_s": _ttl(ttl), "uses": uses,
                                                      "description": name or ""})
        else:
            if uses is not None:
                raise click.BadParameter("only join tokens have a use count", param_hint="--uses")
            created = client.post("/v1/tokens/api", {"name": name or role, "role": role,
                                                     "domains": list(domains), "ttl_s": _ttl(ttl)})
    emit(created, as_json, lambda c: (
        f"{c['token']}\n\n{c['kind']} token {c['id']} "
        + (f"for domain {c['domain']}" if c["kind"] == "join"
           else f"role {c['role']}, domains {','.join(c['domains'])}")
        + (f", expires {when(c['expires_at'])}" if c.get("expires_at") else "")
        + (f", {c['uses_allowed']} uses" if c.get("uses_allowed") else "")
        + "\nThe token is shown only now; the coordinator keeps its hash."))


def _token_rows(tokens: list[dict[str, Any]]) -> str:
    return table([
        (t["id"], t["kind"], t["prefix"] + "…", t.get("role") or "-",
         t.get("domain") or ",".join(t.get("domains") or []), t["status"],
         f"{t['uses']}/{t['uses_allowed'] or '∞'}" if t["kind"] == "join" else "-",
         when(t.get("expires_at")), t.get("name") or "")
        for t in tokens
    ], ["ID", "KIND", "PREFIX", "ROLE", "DOMAINS", "STATUS", "USES", "EXPIRES", "NAME"])


@token.command("ls")
@click.option("--kind", type=click.Choice(["join", "api"]), default=None)
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def token_ls(kind: str | None, as_json: bool, url: str | None, token: str | None) -> None:
    """List tokens (never the tokens themselves: only ids and prefixes)."""
    with open_client(url, token) as client:
        tokens = client.get("/v1/tokens", kind=kind)
    emit(tokens, as_json, _token_rows)


@token.command("revoke")
@click.argument("token_id")
@client_options
@handle_errors
def token_revoke(token_id: str, url: str | None, token: str | None) -> None:
    """Revoke a token by id: it stops working at once."""
    with open_client(url, token) as client:
        result = client.delete(f"/v1/tokens/{token_id}")
    click.echo(f"revoked {result['kind']} token {token_id}")


@click.group()
def domain() -> None:
    """Governance domains: the owners that nodes and jobs belong to."""


@domain.command("create")
@click.argument("name")
@click.option("--description", default="")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def domain_create(name: str, description: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Create a domain (join tokens also create theirs on first use)."""
    with open_client(url, token) as client:
        created = client.post("/v1/domains", {"name": name, "description": description})
    emit(created, as_json, lambda d: f"created domain {d['name']}")


@domain.command("ls")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def domain_ls(as_json: bool, url: str | None, token: str | None) -> None:
    """List the domains this token may see."""
    with open_client(url, token) as client:
        domains = client.get("/v1/domains")
    emit(domains, as_json, lambda ds: table(
        [(d["name"], when(d["created_at"]), d["created_by"], d["description"]) for d in ds],
        ["NAME", "CREATED", "BY", "DESCRIPTION"]))
