"""`polyfabric trigger`: start a workflow from a signed webhook."""

from __future__ import annotations

from typing import Any

import click

from polyfabric.cli.jobs import open_jobs
from polyfabric.cli.output import client_options, emit, handle_errors, open_client, table, when
from polyfabric.cli.run import load_workflow_file
from polyfabric.cli.schedules import _domain

__all__ = ["trigger"]


@click.group()
def trigger() -> None:
    """Webhook triggers: an HMAC-signed POST starts a run (docs/triggers.md)."""


@trigger.command("create")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--webhook", is_flag=True, required=True, help="A webhook trigger (the only kind so far).")
@click.option("--name", default=None, help="Trigger name (default: the workflow's name).")
@click.option("--domain", default=None, envvar="POLYFABRIC_DOMAIN", help="The domain the runs go to.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the secret).")
@client_options
@handle_errors
def trigger_create(file: str, webhook: bool, name: str | None, domain: str | None, as_json: bool,
                   url: str | None, token: str | None) -> None:
    """Create a webhook trigger for FILE; print its URL and its secret (shown only now)."""
    doc = load_workflow_file(file)
    with open_jobs(url, token) as client:
        created = client.post("/v1/triggers", {"workflow": doc, "domain": _domain(client, domain), "name": name,
                                               "kind": "webhook"})
        base = client.base_url if hasattr(client, "base_url") else ""
    created["url"] = f"{str(base).rstrip('/')}{created['url']}"
    emit(created, as_json, lambda t: (
        f"trigger {t['id']} ({t['name']})\nurl:    {t['url']}\nsecret: {t['secret']}\n\n"
        "POST a JSON object of params with headers X-Polyfabric-Timestamp: <unix seconds> and\n"
        "X-Polyfabric-Signature: sha256=<hex HMAC-SHA256 of TIMESTAMP.BODY under the secret>.\n"
        "The secret is shown only now."))


def _rows(items: list[dict[str, Any]]) -> str:
    return table([(t["id"], t["name"], t["kind"], t["domain"], t["workflow"], ",".join(t["params"]) or "-",
                   t["fired"], when(t["last_fired_at"])) for t in items],
                 ["ID", "NAME", "KIND", "DOMAIN", "WORKFLOW", "PARAMS", "FIRED", "LAST"])


@trigger.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
@handle_errors
def trigger_ls(as_json: bool, url: str | None, token: str | None) -> None:
    """List triggers (never their secrets)."""
    with open_client(url, token) as client:
        emit(client.get("/v1/triggers"), as_json, _rows)


@trigger.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
@handle_errors
def trigger_show(ref: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Show a trigger by id or name."""
    with open_client(url, token) as client:
        emit(client.get(f"/v1/triggers/{ref}"), as_json, lambda t: _rows([t]) + f"\nurl: {t['url']}")


@trigger.command("rm")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
@handle_errors
def trigger_rm(ref: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Delete a trigger: its URL answers 404 from now on."""
    with open_client(url, token) as client:
        emit(client.delete(f"/v1/triggers/{ref}"), as_json, lambda t: f"trigger {t['name']} deleted")
