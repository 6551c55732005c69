"""`polyfabric secret`: set, list (names and metadata only), remove, rotate the key-encryption key."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import click

from polyfabric.cli.output import client_options, emit, handle_errors, open_client, table, when

__all__ = ["secret"]


@click.group("secret")
def secret() -> None:
    """Secrets for tasks: stored encrypted, delivered sealed to the node running an attempt.

    A task asks for them in its workflow: `secrets: {API_KEY: name}` (an env variable) or
    `secrets: {cert.pem: {file: name}}` (a file in $POLYFABRIC_SECRETS_DIR). See docs/secrets.md."""


@secret.command("set")
@click.argument("name")
@click.option("--domain", required=True, help="The domain whose jobs may use it.")
@click.option("--from-file", "from_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Read the value from this file (bytes as they are).")
@click.option("--from-stdin", is_flag=True, help="Read the value from standard input.")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def secret_set(name: str, domain: str, from_file: Path | None, from_stdin: bool, as_json: bool,
               url: str | None, token: str | None) -> None:
    """Create or replace secret NAME in a domain. The value never appears on the command line."""
    if (from_file is None) == (not from_stdin):
        raise click.UsageError("give exactly one of --from-file FILE and --from-stdin")
    value = from_file.read_bytes() if from_file is not None else sys.stdin.buffer.read()
    if not value:
        raise click.UsageError("the value is empty")
    with open_client(url, token) as client:
        out = client.request("PUT", f"/v1/secrets/{name}",
                             json={"domain": domain, "value_b64": base64.b64encode(value).decode()})
    emit(out, as_json, lambda d: f"secret {d['name']} in {d['domain']}: version {d['version']}, {d['size']} bytes")


@secret.command("ls")
@click.option("--domain", default=None, help="Only this domain.")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def secret_ls(domain: str | None, as_json: bool, url: str | None, token: str | None) -> None:
    """Names and metadata (never values)."""
    with open_client(url, token) as client:
        rows = client.get("/v1/secrets", domain=domain)

    def render(rs: list[dict[str, Any]]) -> str:
        return table([(r["domain"], r["name"], r["version"], r["size"], r["updated_by"], when(r["updated_at"]))
                      for r in rs], ["DOMAIN", "NAME", "VERSION", "BYTES", "UPDATED BY", "UPDATED"])

    emit(rows, as_json, render)


@secret.command("rm")
@click.argument("name")
@click.option("--domain", required=True)
@client_options
@handle_errors
def secret_rm(name: str, domain: str, url: str | None, token: str | None) -> None:
    """Remove a secret (tasks that name it fail to start from now on)."""
    with open_client(url, token) as client:
        client.request("DELETE", f"/v1/secrets/{name}", params={"domain": domain})
    click.echo(f"secret {name} removed from {domain}")


@secret.command("rotate-key")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def secret_rotate_key(as_json: bool, url: str | None, token: str | None) -> None:
    """New key-encryption key on the coordinator; every secret's data key is re-wrapped under it."""
    with open_client(url, token) as client:
        out = client.post("/v1/secrets/rotate-key")
    emit(out, as_json, lambda d: f"key {d['key_id']} now wraps {d['rewrapped']} secret(s)")
