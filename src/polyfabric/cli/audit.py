"""`polyfabric audit`: list, export, and verify the hash chain (online or offline)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from polyfabric.cli.output import client_options, emit, handle_errors, open_client, table, when
from polyfabric.domain import audit as chain
from polyfabric.domain.errors import ValidationError
from polyfabric.domain.jobs import parse_duration
from polyfabric.security.keys import b64d
from polyfabric.security.signing import verify_bytes

__all__ = ["audit"]


@click.group()
def audit() -> None:
    """The tamper-evident audit chain."""


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    import time

    try:
        return time.time() - parse_duration(value)
    except ValidationError:
        pass
    try:
        from datetime import datetime

        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter("use a duration (10m, 2h) or an ISO time", param_hint="--since") from None


@audit.command("ls")
@click.option("--node", default=None, help="Only records about this node id.")
@click.option("--kind", default=None, help="Only this action (node.transition) or family (node).")
@click.option("--since", default=None, help="Only records newer than this: a duration (1h) or ISO time.")
@click.option("--after", type=int, default=0, help="Only records after this sequence number.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def audit_ls(node: str | None, kind: str | None, since: str | None, after: int, limit: int, as_json: bool,
             url: str | None, token: str | None) -> None:
    """List audit records: who did what, to what, when and why."""
    with open_client(url, token) as client:
        records = client.get("/v1/audit", node=node, kind=kind, since=_since(since), after=after, limit=limit)

    def render(rs: list[dict[str, Any]]) -> str:
        return table([
            (r["seq"], when(r["at"]), r["actor"], r["action"], r["subject"], _brief(r), r["cause"])
            for r in rs
        ], ["SEQ", "TIME", "ACTOR", "ACTION", "SUBJECT", "DETAILS", "CAUSE"])

    emit(records, as_json, render)


def _brief(record: dict[str, Any]) -> str:
    details = record.get("details") or {}
    if record["action"] == "node.transition":
        return f"{details.get('from')} -> {details.get('to')} ({details.get('trigger')})"
    return ",".join(f"{k}={v}" for k, v in details.items() if isinstance(v, str | int | float))[:60]


@audit.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (default: standard output).")
@client_options
@handle_errors
def audit_export(output: Path | None, url: str | None, token: str | None) -> None:
    """Export the whole chain (JSON Lines, with signed heads and keys) for offline verification."""
    with open_client(url, token) as client:
        lines = client.stream_lines("/v1/audit/export")
        if output is None:
            for line in lines:
                click.echo(line)
        else:
            tmp = output.with_suffix(output.suffix + ".part")
            with tmp.open("w") as handle:
                count = 0
                for line in lines:
                    handle.write(line + "\n")
                    count += 1
            tmp.replace(output)
            click.echo(f"exported {count} lines to {output}", err=True)


def _verifier(public_keys: list[str]):  # type: ignore[no-untyped-def]
    raw = [b64d(k) for k in public_keys]

    def verify(message: bytes, signature: bytes) -> bool:
        return any(verify_bytes(key, message, signature) for key in raw)

    return verify


@audit.command("verify")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Verify an export offline instead of asking the coordinator.")
@click.option("--public-key", "pinned", multiple=True,
              help="Trust only this coordinator key (base64url) for signed heads, not the keys the export "
                   "names itself: compare it with the key you got from the coordinator's operator.")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def audit_verify(path: Path | None, pinned: tuple[str, ...], as_json: bool, url: str | None,
                 token: str | None) -> None:
    """Check every record's hash and link and every signed head. Exit 0 only if intact.

    Without --file, the chain is downloaded and checked here, on the client, so trusting the
    coordinator's word is not needed. An export names the keys that signed it; without
    --public-key those are trusted, which proves the chain consistent but not who signed it."""
    try:
        if path is not None:
            with path.open() as handle:
                report, keys = _verify_lines(handle, pinned)
        else:
            with open_client(url, token) as client:
                report, keys = _verify_lines(client.stream_lines("/v1/audit/export"), pinned)
    except ValidationError as exc:
        click.echo(f"Error: the export is malformed: {exc.message}", err=True)
        sys.exit(2)
    data = {"ok": report.ok, "records_checked": report.records_checked, "heads_checked": report.heads_checked,
            "first_bad_seq": report.first_bad_seq, "problem": report.problem, "trusted_keys": keys,
            "keys_pinned": bool(pinned)}
    emit(data, as_json, lambda d: (
        f"audit chain intact: {d['records_checked']} records, {d['heads_checked']} signed heads verified "
        f"with {'pinned' if d['keys_pinned'] else 'the export’s own'} key(s) {', '.join(d['trusted_keys'])}"
        if d["ok"] else f"audit chain BROKEN at record {d['first_bad_seq']}: {d['problem']}"))
    sys.exit(0 if report.ok else 1)


def _verify_lines(lines: Any, pinned: tuple[str, ...]) -> tuple[chain.ChainReport, list[str]]:
    header, records, heads = chain.parse_export(lines)
    keys = list(pinned) or sorted({header["public_key"], *dict(header.get("keys") or {}).values()})
    try:
        verifier = _verifier(keys)
    except ValidationError:
        raise click.BadParameter("not a base64url Ed25519 public key", param_hint="--public-key") from None
    return chain.verify_chain(records, heads=heads, verify_signature=verifier), keys
