"""`polyfabric usage` (the contribution ledger) and `polyfabric node metrics` (telemetry history)."""

from __future__ import annotations

import time
from typing import Any

import click

from polyfabric.cli.output import client_options, emit, handle_errors, open_client, table, when
from polyfabric.domain.resources import format_bytes

__all__ = ["node_metrics", "usage"]

_GIB = float(1 << 30)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3f}" if seconds < 36_000 else f"{seconds / 3600:.0f}"


def _render_usage(report: dict[str, Any]) -> str:
    if not report["domains"]:
        return "no usage recorded" + (f" since {when(report['since'])}" if report.get("since") else "")
    rows = []
    for d in report["domains"]:
        used, given = d["consumed"], d["contributed"]
        rows.append((d["domain"], used["attempts"], f"{used['cpu_s']:.1f}", f"{used['memory_byte_s'] / _GIB:.1f}",
                     f"{used['gpu_s']:.1f}", given["attempts"], f"{given['cpu_s']:.1f}",
                     f"{given['memory_byte_s'] / _GIB:.1f}", f"{given['gpu_s']:.1f}", f"{d['balance_cpu_s']:+.1f}"))
    head = f"since {when(report['since'])}\n" if report.get("since") else "all time\n"
    return head + table(rows, ["DOMAIN", "USED", "CPU-S", "GIB-S", "GPU-S", "GAVE", "CPU-S", "GIB-S", "GPU-S",
                               "BALANCE CPU-S"]) + \
        "\nUSED: attempts of the domain's jobs and what they consumed; GAVE: attempts its nodes ran for anyone."


@click.command()
@click.option("--domain", default=None, help="Only this domain.")
@click.option("--since", default=None, metavar="WHEN",
              help="A duration back (24h, 7d) or unix seconds (default: all recorded usage).")
@click.option("--attempts", "show_attempts", is_flag=True, help="List the ledger's rows (one per attempt).")
@click.option("--job", default=None, help="With --attempts: only this job's attempts.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
@handle_errors
def usage(domain: str | None, since: str | None, show_attempts: bool, job: str | None, limit: int, as_json: bool,
          url: str | None, token: str | None) -> None:
    """Contributed versus consumed resources per domain (CPU-, memory- and GPU-seconds).

    Consumed: what the jobs of a domain used, wherever they ran. Contributed: what the domain's nodes
    ran, for anyone. Figures are measured by the agents for each finished attempt."""
    with open_client(url, token) as client:
        if show_attempts:
            rows = client.get("/v1/usage/attempts", domain=domain, since=since, job=job, limit=limit)
            emit(rows, as_json, _render_attempts)
            return
        report = client.get("/v1/usage", domain=domain, since=since)
    emit(report, as_json, _render_usage)


def _render_attempts(rows: list[dict[str, Any]]) -> str:
    return table([(r["task_id"], r["attempt"], r["task_key"], r["consumer_domain"], r["provider_domain"],
                   r["node_id"], r["outcome"], f"{r['wall_s']:.2f}", f"{r['cpu_s']:.2f}",
                   format_bytes(int(r["max_rss_bytes"])), f"{r['gpu_s']:.1f}", when(r["finished_at"]))
                  for r in rows],
                 ["TASK", "ATTEMPT", "KEY", "CONSUMER", "CONTRIBUTOR", "NODE", "OUTCOME", "WALL-S", "CPU-S",
                  "PEAK RSS", "GPU-S", "FINISHED"])


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        return format_bytes(int(value))
    return f"{value:.1f}"


def _render_history(data: dict[str, Any]) -> str:
    points = data["points"]
    head = (f"node {data['name']} ({data['node_id']}): {len(points)} point(s) of {data['resolution_s']}s "
            f"since {when(data['since'])}")
    if not points:
        return head + "\n(no telemetry recorded in that period)"
    rows = [(time.strftime("%H:%M:%S", time.localtime(p["at"])), _fmt(p["cpu_percent"]), _fmt(p["memory_percent"]),
             _fmt(p["memory_used_bytes"], "bytes"), _fmt(p["disk_percent"]), _fmt(p["load1"]),
             _fmt(p["gpu_percent"])) for p in points]
    return head + "\n" + table(rows, ["TIME", "CPU%", "MEM%", "MEM USED", "DISK%", "LOAD1", "GPU%"])


@click.command("metrics")
@click.argument("node_ref")
@click.option("--since", default="1h", show_default=True, metavar="WHEN",
              help="A duration back (15m, 1h, 24h, 30d) or unix seconds.")
@click.option("--resolution", type=click.IntRange(min=1), default=None,
              help="Seconds per point (a kept tier: the raw interval, 60 or 600; default: the finest kept "
                   "that far back).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
@handle_errors
def node_metrics(node_ref: str, since: str, resolution: int | None, as_json: bool, url: str | None,
                 token: str | None) -> None:
    """A node's telemetry history: CPU, memory, disk, load and GPU use over time (raw points for the
    last hour, 1-minute means for a day, 10-minute means for 30 days)."""
    with open_client(url, token) as client:
        data = client.get(f"/v1/nodes/{node_ref}/metrics", since=since, resolution=resolution)
    emit(data, as_json, _render_history)
