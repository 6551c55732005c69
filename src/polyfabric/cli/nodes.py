"""`polyfabric node`: list, show, and the lifecycle actions of operators."""

from __future__ import annotations

from typing import Any

import click

from polyfabric.cli.output import age, client_options, emit, handle_errors, open_client, table, when
from polyfabric.cli.usage import node_metrics
from polyfabric.domain.errors import ValidationError
from polyfabric.domain.jobs import parse_duration
from polyfabric.domain.resources import format_bytes

__all__ = ["node"]


@click.group()
def node() -> None:
    """Nodes: see them, and move them through their lifecycle."""


def _conditions(n: dict[str, Any]) -> str:
    active = [c["type"] for c in n.get("conditions", []) if c["status"] and c["type"] != "Ready"]
    ready = next((c["status"] for c in n.get("conditions", []) if c["type"] == "Ready"), False)
    return ",".join((["Ready"] if ready else ["NotReady"]) + active)


def _render_list(nodes: list[dict[str, Any]]) -> str:
    return table([
        (n["id"], n["name"], n["domain"], n["state"], _conditions(n), age(n.get("heartbeat_age_s")),
         f"{n['capacity']['cpu_millis'] / 1000:g}", format_bytes(n["capacity"]["memory_bytes"]),
         n["capacity"]["gpus"], ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items())))
        for n in nodes
    ], ["ID", "NAME", "DOMAIN", "STATE", "CONDITIONS", "HEARTBEAT", "CPU", "MEMORY", "GPU", "LABELS"])


@node.command("ls")
@click.option("--state", default=None, help="Only nodes in this state.")
@click.option("--domain", default=None, help="Only nodes of this domain.")
@click.option("--label", "labels", multiple=True, help="Only nodes with this label (k=v; repeat).")
@click.option("--limit", type=int, default=500, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def node_ls(state: str | None, domain: str | None, labels: tuple[str, ...], limit: int, as_json: bool,
            url: str | None, token: str | None) -> None:
    """List nodes with their state, conditions and heartbeat age."""
    with open_client(url, token) as client:
        nodes = client.get("/v1/nodes", state=state, domain=domain, label=list(labels), limit=limit)
    emit(nodes, as_json, _render_list)


def _render_one(n: dict[str, Any]) -> str:
    cap = n["capacity"]
    lines = [
        f"Node:       {n['name']} ({n['id']})",
        f"Domain:     {n['domain']}",
        f"State:      {n['state']} since {when(n['state_since'])}" + (" (revoked)" if n["revoked"] else ""),
        f"Heartbeat:  {age(n.get('heartbeat_age_s'))} ago" if n.get("heartbeat_age_s") is not None
        else "Heartbeat:  never",
        f"Capacity:   cpu {cap['cpu_millis'] / 1000:g}, memory {format_bytes(cap['memory_bytes'])}, "
        f"disk {format_bytes(cap['disk_bytes'])}, gpus {cap['gpus']}, slots {cap['slots']}",
    ]
    for gpu in cap.get("gpu_models", []):
        lines.append(f"  GPU {gpu['index']}:    {gpu['model']} ({format_bytes(gpu['memory_bytes'])})")
    lines.append("Labels:     " + (", ".join(f"{k}={v}" for k, v in sorted(n["labels"].items())) or "-"))
    lines.append("Topology:   " + (", ".join(f"{k}={v}" for k, v in n["topology"].items()) or "-"))
    tel = n.get("telemetry") or {}
    if tel:
        lines.append(f"Telemetry:  cpu {tel.get('cpu_percent', '-')}%, memory {tel.get('memory_percent', '-')}%, "
                     f"disk {tel.get('disk_percent', '-')}%, load {tel.get('load1', '-')}")
    if n.get("drain_deadline") and n["state"] in ("draining", "down"):
        lines.append(f"Drain:      tasks still here move to other nodes at {when(n['drain_deadline'])}")
    quarantine = n.get("quarantine") or {}
    if quarantine and n["state"] == "quarantined":
        automatic = quarantine.get("trigger") != "operator"
        lines.append(f"Quarantine: since {when(quarantine.get('at'))} by {quarantine.get('by')} "
                     f"({quarantine.get('trigger')}): {quarantine.get('reason')}")
        lines.append("            " + ("released automatically after a healthy probation, or by `node resume`"
                                       if automatic else "released by `polyfabric node resume`"))
    elif quarantine.get("released_at"):
        lines.append(f"Quarantine: last one ended {when(quarantine['released_at'])} by "
                     f"{quarantine.get('released_by')} (was: {quarantine.get('reason')})")
    lines.append("Conditions:")
    for c in n.get("conditions", []):
        lines.append(f"  {c['type']:<15} {c['status']!s:<6} {c['reason']}")
    if n.get("health"):
        lines.append("Health checks:")
        for h in n["health"]:
            lines.append(f"  {h['name']:<15} {'ok' if h['ok'] else 'FAILED':<6} {h.get('message', '')}")
    return "\n".join(lines)


@node.command("show")
@click.argument("node_ref")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def node_show(node_ref: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Show one node (by id or name): capacity, telemetry, conditions, health checks."""
    with open_client(url, token) as client:
        n = client.get(f"/v1/nodes/{node_ref}")
    emit(n, as_json, _render_one)


def _parse_deadline(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="--deadline") from None


def _action(verb: str, doc: str, *, deadline: bool = False) -> click.Command:
    @click.command(verb, help=doc)
    @click.argument("node_ref")
    @click.option("--reason", default="", help="Why (recorded in the audit chain).")
    @click.option("--json", "as_json", is_flag=True)
    @client_options
    @handle_errors
    def command(node_ref: str, reason: str, as_json: bool, url: str | None, token: str | None,
                deadline: str | None = None) -> None:
        body: dict[str, Any] = {"reason": reason}
        seconds = _parse_deadline(deadline)
        if seconds is not None:
            body["deadline_s"] = seconds
        with open_client(url, token) as client:
            n = client.post(f"/v1/nodes/{node_ref}/{verb}", body)
        emit(n, as_json, lambda x: f"node {x['name']} ({x['id']}) is now {x['state']}"
             + (f", deadline {when(x['drain_deadline'])}" if x.get("drain_deadline") else ""))

    if deadline:
        command = click.option(
            "--deadline", default=None, metavar="DURATION",
            help="After this long (30s, 5m, 1h) the tasks still running are stopped and run again on other "
                 "nodes (not counted as failures). Again on a draining node: sets a new deadline.")(command)
    return command


for _verb, _doc in (
    ("cordon", "Stop placing new work on a node; running work continues."),
    ("uncordon", "Let a cordoned (or draining) node take new work again."),
    ("suspend", "Take a node out of service for a while."),
    ("resume", "Bring a suspended or quarantined node back to Active."),
    ("drain", "Let a node finish its work and take nothing new; it retires by itself when no task is left."),
    ("retire", "Retire a node for good."),
    ("quarantine", "Isolate a misbehaving node (only an operator's resume ends it)."),
    ("revoke", "Refuse a node from now on: its key is no longer accepted."),
):
    node.add_command(_action(_verb, _doc, deadline=_verb == "drain"))
node.add_command(node_metrics)  # issue 7: the telemetry history (cli/usage.py)
