"""Where a client finds its coordinator and token.

Order: --url/--token flags, then POLYFABRIC_URL / POLYFABRIC_TOKEN (or POLYFABRIC_TOKEN_FILE),
then the config file: $POLYFABRIC_CONFIG, else ./.polyfabric/client.json (written by
`polyfabric up`), else ~/.config/polyfabric/client.json. The file holds the URL and the *path*
of the token file, never the token itself. The URL may name several coordinators, comma-separated
(`http://a:7340,http://b:7340`): the client fails over between them and follows the leader.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import click

__all__ = ["ClientConfig", "config_paths", "load_config", "write_config"]


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str


def config_paths() -> list[Path]:
    if os.environ.get("POLYFABRIC_CONFIG"):
        return [Path(os.environ["POLYFABRIC_CONFIG"])]
    return [Path.cwd() / ".polyfabric" / "client.json", Path.home() / ".config" / "polyfabric" / "client.json"]


def _from_file() -> dict[str, str]:
    for path in config_paths():
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise click.ClickException(f"cannot read client config {path}: {exc}") from None
            data["_path"] = str(path)
            return data
    return {}


def load_config(url: str | None, token: str | None) -> ClientConfig:
    file = _from_file()
    url = url or os.environ.get("POLYFABRIC_URL") or file.get("url")
    token = token or os.environ.get("POLYFABRIC_TOKEN")
    token_file = os.environ.get("POLYFABRIC_TOKEN_FILE") or file.get("token_file")
    if not token and token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise click.ClickException(f"cannot read the token file {token_file}: {exc.strerror}") from None
    if not url:
        raise click.ClickException(
            "no coordinator address: pass --url, set POLYFABRIC_URL, or run 'polyfabric up' here")
    if not token:
        raise click.ClickException(
            "no API token: pass --token, set POLYFABRIC_TOKEN (or POLYFABRIC_TOKEN_FILE), "
            "or use the admin.token file in the coordinator's data dir")
    return ClientConfig(url=url, token=token)


def write_config(path: Path, url: str, token_file: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "token_file": str(token_file.resolve())}, indent=2) + "\n")
