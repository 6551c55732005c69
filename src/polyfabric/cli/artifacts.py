"""`polyfabric job artifacts ID` and `polyfabric task artifact TASK PATH`: the files tasks left.

A task leaves files as artifacts by writing them under $POLYFABRIC_ARTIFACTS; its agent uploads
them when the attempt ends (services/artifacts.py). These commands list them (per task and
attempt, with size and sha256, or why one was refused) and download them, checking the sha256
the coordinator recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import httpx

from polyfabric.cli.output import client_options, emit, handle_errors, open_client, table
from polyfabric.client import ApiClient, ClientError, CoordinatorUnreachable
from polyfabric.client.http import _raise_for
from polyfabric.domain.artifacts import check_path
from polyfabric.domain.resources import format_bytes

__all__ = ["job_artifacts", "task_artifact"]


def _render(listing: dict[str, Any]) -> str:
    rows = [(a["key"] or a["task_id"], a["attempt"], a["path"], format_bytes(a["size"]),
             (a["sha256"] or "")[:16] if not a["problem"] else f"REFUSED: {a['problem']}")
            for a in listing["artifacts"]]
    if not rows:
        return f"Job {listing['job_id']} has no artifacts."
    return table(rows, ["TASK", "ATTEMPT", "PATH", "SIZE", "SHA256"])


def _download(client: ApiClient, task_id: str, path: str, attempt: int | None, dest: Path) -> dict[str, Any]:
    """Stream one artifact to `dest` (through a temporary file), checking its sha256."""
    url = f"{client.base_url}/v1/tasks/{quote(task_id, safe='')}/artifacts/{quote(path, safe='/')}"
    params = {"attempt": attempt} if attempt is not None else None
    digest = hashlib.sha256()
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with client._http.stream("GET", url, headers=client._auth, params=params) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            expected = response.headers.get("x-polyfabric-sha256")
            with open(tmp, "wb") as handle:
                for block in response.iter_bytes(1 << 20):
                    digest.update(block)
                    size += len(block)
                    handle.write(block)
    except httpx.TransportError as exc:
        tmp.unlink(missing_ok=True)
        raise CoordinatorUnreachable(f"cannot reach the coordinator at {client.base_url}: {exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if expected and expected != digest.hexdigest():
        tmp.unlink(missing_ok=True)
        raise ClientError(f"artifact {path} arrived damaged: sha256 {digest.hexdigest()}, expected {expected}")
    os.replace(tmp, dest)
    return {"task_id": task_id, "path": path, "size": size, "sha256": digest.hexdigest(), "file": str(dest)}


@click.command("artifacts")
@click.argument("job_id")
@click.option("--download", "download_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Download every stored artifact into DIR/<task key>/<attempt>/<path>.")
@click.option("--json", "as_json", is_flag=True, help="The listing (or what was downloaded) as JSON.")
@client_options
@handle_errors
def job_artifacts(job_id: str, download_dir: Path | None, as_json: bool, url: str | None, token: str | None) -> None:
    """List the files the job's tasks left as artifacts (per task and attempt), or download them."""
    with contextlib.closing(open_client(url, token)) as client:
        listing = client.get(f"/v1/jobs/{quote(job_id, safe='')}/artifacts")
        if download_dir is None:
            emit(listing, as_json, _render)
            return
        done = []
        for a in listing["artifacts"]:
            if a["problem"]:
                continue
            folder = (a["key"] or a["task_id"]).replace("/", "_")
            dest = download_dir / folder / str(a["attempt"]) / check_path(a["path"])
            done.append(_download(client, a["task_id"], a["path"], a["attempt"], dest))
    emit(done, as_json, lambda items: "\n".join(f"{d['file']}  {format_bytes(d['size'])}" for d in items)
         or "Nothing to download.")


@click.command("artifact")
@click.argument("task_id")
@click.argument("path")
@click.option("--attempt", type=click.IntRange(0), default=None, help="Of this attempt (default: the latest "
              "attempt that left PATH).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write it here (default: the file's name in the current directory; '-' for stdout).")
@client_options
@handle_errors
def task_artifact(task_id: str, path: str, attempt: int | None, output: Path | None, url: str | None,
                  token: str | None) -> None:
    """Download one artifact of a task (its sha256 is checked)."""
    try:
        path = check_path(path)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="PATH") from None
    with contextlib.closing(open_client(url, token)) as client:
        if output is not None and str(output) == "-":
            tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"pf-artifact-{os.getpid()}"
            try:
                _download(client, task_id, path, attempt, tmp)
                with open(tmp, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        click.get_binary_stream("stdout").write(block)
            finally:
                tmp.unlink(missing_ok=True)
            return
        got = _download(client, task_id, path, attempt, output or Path(path.rsplit("/", 1)[-1]))
    click.echo(f"{got['file']}  {format_bytes(got['size'])}  sha256 {got['sha256']}", err=True)
