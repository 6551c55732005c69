"""`polyfabric topology`: the region/zone/rack tree, measured coordinates, estimated round trips."""

from __future__ import annotations

from typing import Any

import click

from polyfabric.cli.output import client_options, emit, handle_errors, open_client, table
from polyfabric.domain.resources import format_bytes

__all__ = ["topology"]


def _free(level: dict[str, Any]) -> str:
    free, cap = level["free"], level["capacity"]
    return (f"cpu {free['cpu_millis'] / 1000:g}/{cap['cpu_millis'] / 1000:g}  "
            f"mem {format_bytes(free['memory_bytes'])}/{format_bytes(cap['memory_bytes'])}  "
            f"gpu {free['gpus']}/{cap['gpus']}  slots {free['slots']}/{cap['slots']}")


def _states(level: dict[str, Any]) -> str:
    return ", ".join(f"{n} {state}" for state, n in level["states"].items()) or "no nodes"


def _render_tree(tree: dict[str, Any]) -> str:
    lines: list[str] = []

    def walk(level: dict[str, Any], depth: int, kind: str) -> None:
        indent = "  " * depth
        title = "fabric" if depth == 0 else f"{kind} {level['name']}"
        lines.append(f"{indent}{title}: {level['nodes']} nodes ({_states(level)}); free {_free(level)}")
        for child in level.get("children", []):
            walk(child, depth + 1, level.get("level", ""))
        for member in level.get("members", []):
            free = member["free"]
            lines.append(f"{indent}  - {member['name']} {member['state']} (free cpu {free['cpu_millis'] / 1000:g}, "
                         f"slots {free['slots']})")

    walk(tree, 0, "")
    coords = tree.get("coordinates") or {}
    lines.append(f"network coordinates reported by {coords.get('nodes', 0)} of {tree['nodes']} nodes")
    return "\n".join(lines)


@click.group(invoke_without_command=True)
@click.option("--domain", default=None, help="Only nodes of this domain.")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
@click.pass_context
def topology(ctx: click.Context, domain: str | None, as_json: bool, url: str | None, token: str | None) -> None:
    """The fabric by region, zone and rack (node labels): node counts, states and free capacity.

    Subcommands: `coords` (measured network coordinates), `rtt A B` (estimated round trip)."""
    if ctx.invoked_subcommand is not None:
        return
    with open_client(url, token) as client:
        tree = client.get("/v1/topology", domain=domain)
    emit(tree, as_json, _render_tree)


@topology.command("coords")
@click.option("--domain", default=None, help="Only nodes of this domain.")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def topology_coords(domain: str | None, as_json: bool, url: str | None, token: str | None) -> None:
    """Each node's Vivaldi coordinate error and its round trip to the coordinator (measured, estimated)."""
    with open_client(url, token) as client:
        rows = client.get("/v1/topology/coordinates", domain=domain)

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.2f}"

    emit(rows, as_json, lambda rs: table([
        (r["name"], ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items())), f"{r['coords']['error']:.2f}",
         ms(r["rtt_to_coordinator_s"]), ms(r["estimated_rtt_to_coordinator_s"]), r["echo"] or "-")
        for r in rs], ["NAME", "TOPOLOGY", "ERROR", "RTT_MS", "EST_RTT_MS", "ECHO"]))


@topology.command("rtt")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def topology_rtt(a: str, b: str, as_json: bool, url: str | None, token: str | None) -> None:
    """The round trip between nodes A and B (ids or names) that their network coordinates estimate."""
    with open_client(url, token) as client:
        answer = client.get("/v1/topology/rtt", **{"from": a, "to": b})
    emit(answer, as_json, lambda r: f"{r['from']['name']} -> {r['to']['name']}: {r['estimated_rtt_ms']:.3f} ms "
                                    f"(estimated; coordinate errors {r['error']['from']:.2f}, {r['error']['to']:.2f})")
