"""`polyfabric config`: versioned node configuration by scope, canary rollouts, drift, rollback.

(The CLI's own client settings live in cli/config.py; this module is the configuration manager.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml

from polyfabric.cli.output import client_options, emit, handle_errors, open_client, table, when
from polyfabric.domain.configdoc import parse_document, parse_scope
from polyfabric.domain.errors import ValidationError

__all__ = ["config"]


@click.group("config")
def config() -> None:
    """Node configuration: publish versioned documents by scope; agents apply and acknowledge them.

    Scopes, broad to narrow (the narrower value wins): network, domain:NAME, selector:K=V[,K=V],
    node:ID. See docs/config.md for the document's fields."""


def _load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    if data is None:
        data = {}
    try:
        parse_document(data)  # the coordinator checks again; this names the field before any call
    except ValidationError as exc:
        raise click.ClickException(f"{path}: {exc.message}") from None
    return data


def _doc_rows(docs: list[dict[str, Any]]) -> str:
    return table([(d["version"], d["scope"], d["state"], ",".join(d["canary_nodes"] or []) or "-",
                   d["published_by"], when(d["published_at"]), d.get("halted_reason") or d["comment"] or "")
                  for d in docs], ["VERSION", "SCOPE", "STATE", "CANARY", "BY", "PUBLISHED", "NOTE"])


@config.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--scope", required=True, help="network | domain:NAME | selector:K=V[,K=V] | node:ID")
@click.option("--canary", type=click.IntRange(min=1), default=None,
              help="Send it to this many nodes first; `config promote` sends it to the rest.")
@click.option("--comment", default="", help="Why (kept with the version and in the audit chain).")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def config_publish(file: Path, scope: str, canary: int | None, comment: str, as_json: bool, url: str | None,
                   token: str | None) -> None:
    """Publish FILE (YAML) as a new version at a scope."""
    document = _load(file)
    try:
        parse_scope(scope)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="--scope") from None
    with open_client(url, token) as client:
        out = client.post("/v1/config", {"document": document, "scope": scope, "canary": canary,
                                         "comment": comment})
    emit(out, as_json, lambda d: f"published version {d['version']} at {d['scope']} ({d['state']}"
         + (f" on {', '.join(d['canary_nodes'])}" if d["canary_nodes"] else "") + ")")


@config.command("ls")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def config_ls(as_json: bool, url: str | None, token: str | None) -> None:
    """Every published version, oldest first."""
    with open_client(url, token) as client:
        emit(client.get("/v1/config"), as_json, _doc_rows)


@config.command("show")
@click.argument("version", type=int)
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def config_show(version: int, as_json: bool, url: str | None, token: str | None) -> None:
    """One version: its scope, state and document."""
    with open_client(url, token) as client:
        doc = client.get(f"/v1/config/{version}")
    emit(doc, as_json, lambda d: _doc_rows([d]) + "\n\n" + yaml.safe_dump(d["document"], sort_keys=True).rstrip())


@config.command("status")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def config_status(as_json: bool, url: str | None, token: str | None) -> None:
    """Per node: the desired and the acknowledged version (DRIFT when they differ) and any failure."""
    with open_client(url, token) as client:
        rows = client.get("/v1/config/status")

    def render(rs: list[dict[str, Any]]) -> str:
        return table([(r["name"], r["node_id"], r["domain"], r["desired_version"],
                       "-" if r["acked_version"] is None else r["acked_version"],
                       "DRIFT" if r["drift"] else "ok", when(r["acked_at"]),
                       f"v{r['error_version']}: {r['error']}" if r["error"] else "")
                      for r in rs], ["NODE", "ID", "DOMAIN", "DESIRED", "ACKED", "", "ACKED AT", "ERROR"])

    emit(rows, as_json, render)


@config.command("diff")
@click.argument("v1", type=int)
@click.argument("v2", type=int)
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def config_diff(v1: int, v2: int, as_json: bool, url: str | None, token: str | None) -> None:
    """What changed between two versions, field by field."""
    with open_client(url, token) as client:
        out = client.get("/v1/config/diff", v1=v1, v2=v2)

    def render(d: dict[str, Any]) -> str:
        if not d["changes"]:
            return f"v{v1} and v{v2} have the same document"
        return table([(c["field"], json.dumps(c["old"]), json.dumps(c["new"])) for c in d["changes"]],
                     ["FIELD", f"v{v1} ({d['from_scope']})", f"v{v2} ({d['to_scope']})"])

    emit(out, as_json, render)


@config.command("promote")
@click.argument("version", type=int, required=False)
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def config_promote(version: int | None, as_json: bool, url: str | None, token: str | None) -> None:
    """Continue a canary rollout to every node of its scope (default: the one canary in flight)."""
    with open_client(url, token) as client:
        out = client.request("POST", "/v1/config/promote", json={}, params={"version": version})
    emit(out, as_json, lambda d: f"version {d['version']} at {d['scope']} is now {d['state']}")


@config.command("rollback")
@click.argument("version", type=int, required=False)
@click.option("--reason", default="", help="Why (audited).")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def config_rollback(version: int | None, reason: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Withdraw a version (default: the newest live one); the one before it at its scope applies again."""
    with open_client(url, token) as client:
        out = client.post("/v1/config/rollback", {"version": version, "reason": reason})
    emit(out, as_json, lambda d: f"version {d['version']} at {d['scope']} rolled back; "
         + (f"version {d['now_applies']} applies again" if d["now_applies"] else "no earlier version at that scope"))
