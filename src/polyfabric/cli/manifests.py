"""`polyfabric job verify` and `job export`: check the signed result manifests of a job.

The check runs here, on the client (security/manifests.py), like `audit verify`: the bundle holds
each finished task's result, the manifest its node signed and that node's public key (whose hash
is the node id); nothing of the coordinator's word is needed. `--file` checks an export offline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from polyfabric.cli.output import client_options, emit, handle_errors, open_client
from polyfabric.security.manifests import verify_bundle

__all__ = ["job_export", "job_verify"]


@click.command("export")
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (default: standard output).")
@client_options
@handle_errors
def job_export(job_id: str, output: Path | None, url: str | None, token: str | None) -> None:
    """Export a job's results with their signed manifests and node keys (for `job verify --file`)."""
    with open_client(url, token) as client:
        bundle = client.get(f"/v1/jobs/{job_id}/manifests")
    text = json.dumps(bundle, indent=2, sort_keys=True)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n")
        click.echo(f"exported {len(bundle['tasks'])} task result(s) of {job_id} to {output}", err=True)


@click.command("verify")
@click.argument("job_id", required=False)
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Check an export (`job export`) offline instead of downloading.")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def job_verify(job_id: str | None, path: Path | None, as_json: bool, url: str | None, token: str | None) -> None:
    """Check every result's manifest: signed by the node that ran it, matching the stored result.
    Exit 0 only if all check; each problem names the task."""
    if path is not None:
        try:
            bundle = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"cannot read {path}: {exc}") from None
    elif job_id is None:
        raise click.UsageError("give a JOB_ID, or --file EXPORT")
    else:
        with open_client(url, token) as client:
            bundle = client.get(f"/v1/jobs/{job_id}/manifests")
    report = verify_bundle(bundle)

    def render(r: dict[str, Any]) -> str:
        if r["ok"]:
            return f"job {r['job_id']}: {r['checked']} signed result manifest(s) verified"
        lines = [f"job {r['job_id']}: {len(r['problems'])} problem(s) in {r['tasks']} result(s)"]
        lines += [f"  {p.get('key') or p.get('node_id')} (task {p.get('task_id')}, attempt {p.get('attempt')}, "
                  f"node {p.get('node_id')}): {p['problem']}" for p in r["problems"]]
        return "\n".join(lines)

    emit(report, as_json, render)
    sys.exit(0 if report["ok"] else 1)
