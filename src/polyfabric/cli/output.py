"""Printing: aligned tables for people, `--json` for programs, errors as one line on stderr."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from polyfabric.cli.config import load_config
from polyfabric.client import ApiClient, ApiError, ClientError

__all__ = ["age", "client_options", "emit", "handle_errors", "open_client", "table", "when"]

F = TypeVar("F", bound=Callable[..., Any])


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


def emit(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(render(data))


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def client_options(func: F) -> F:
    func = click.option("--token", envvar=None, default=None, help="API token (default: POLYFABRIC_TOKEN "
                        "or the config file).")(func)
    func = click.option("--url", default=None, help="Coordinator URL, or several comma-separated (default: "
                        "POLYFABRIC_URL or the config file).")(func)
    return func


def open_client(url: str | None, token: str | None) -> ApiClient:
    config = load_config(url, token)
    return ApiClient(config.url, config.token)


def handle_errors(func: F) -> F:
    """Turn client errors into one readable line and a non-zero exit: never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ApiError as exc:
            click.echo(f"Error: {exc.message} (HTTP {exc.status})", err=True)
            sys.exit(1)
        except ClientError as exc:
            click.echo(f"Error: {exc.message}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
