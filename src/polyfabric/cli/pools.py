"""`polyfabric pool`: elastic node pools that the autoscaler grows under waiting work and shrinks
when idle, and `pool quota`: how many nodes a domain may have at most (docs/pools.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from polyfabric.cli.output import client_options, emit, handle_errors, open_client, table

__all__ = ["pool"]


def _labels(value: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (value or "").split(",")):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not k=v", param_hint="--labels")
        out[key.strip()] = val.strip()
    return out


def _render_pool(p: dict[str, Any]) -> str:
    states = ", ".join(f"{n} {s}" for s, n in sorted(p["members_by_state"].items())) or "none"
    lines = [
        f"pool {p['name']} ({p['provider']}, domain {p['domain']}){'  PAUSED' if p['paused'] else ''}",
        f"  size {p['size']}  target {p['target']}  min {p['min']}  max {p['max']}  slots/node {p['slots']}",
        f"  why: {p['reason']}",
        f"  members: {states}",
        f"  labels: {', '.join(f'{k}={v}' for k, v in sorted(p['labels'].items()))}",
        f"  scale up after {p['scale_up_after_s']:g}s of waiting; drain after {p['idle_s']:g}s idle",
    ]
    if p.get("hosts"):
        lines.append(f"  hosts: {', '.join(p['hosts'])}")
    if p.get("signal"):
        lines.append("  signal: " + ", ".join(f"{k}={v}" for k, v in p["signal"].items()))
    if p.get("members"):
        lines.append("")
        lines.append(table([(m["id"], m["state"], m["node_id"] or "-", m["host"], m["pid"] or "-",
                             m["error"] or "") for m in p["members"]],
                           ["MEMBER", "STATE", "NODE", "HOST", "PID", "ERROR"]))
    if p.get("decisions"):
        lines.append("")
        lines.append("recent decisions:")
        lines.extend(f"  #{d['seq']} {d['cause']}" for d in p["decisions"][-10:])
    return "\n".join(lines)


@click.group()
def pool() -> None:
    """Elastic node pools: nodes added under waiting work, drained and retired when idle."""


@pool.command("create")
@click.argument("name")
@click.option("--provider", type=click.Choice(["local", "ssh"]), default="local", show_default=True,
              help="local: agent processes on the coordinator's machine; ssh: on --hosts over SSH.")
@click.option("--min", "min_nodes", type=click.IntRange(0), default=0, show_default=True)
@click.option("--max", "max_nodes", type=click.IntRange(0), required=True)
@click.option("--domain", default="default", show_default=True, help="The domain the pool's nodes join.")
@click.option("--labels", default=None, help="k=v,k=v given to every node of the pool (plus pool=NAME).")
@click.option("--idle", default="5m", show_default=True, help="Drain a node idle this long (above --min).")
@click.option("--scale-up-after", default="5s", show_default=True,
              help="Add nodes when fitting tasks have waited this long.")
@click.option("--start-timeout", default="2m", show_default=True,
              help="Give up on a node that is not Active this long after its start.")
@click.option("--slots", type=click.IntRange(1), default=4, show_default=True, help="Task slots per node.")
@click.option("--cpu", default="4", show_default=True, help="CPU each node declares (e.g. 2, 500m).")
@click.option("--memory", default="8Gi", show_default=True, help="Memory each node declares.")
@click.option("--gpus", type=click.IntRange(0), default=0, show_default=True)
@click.option("--hosts", default=None, help="ssh: HOST[:PORT],... to start agents on.")
@click.option("--ssh-user", default=None, help="ssh: the remote user.")
@click.option("--ssh-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="ssh: the client key file (read by the coordinator).")
@click.option("--known-hosts", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="ssh: known_hosts file with the hosts' keys (default: the coordinator's ~/.ssh/known_hosts).")
@click.option("--remote-python", default=None, help="ssh: the Python with polyfabric installed (default python3).")
@click.option("--remote-dir", default=None, help="ssh: base directory for agent data (default ~/.polyfabric/pools).")
@click.option("--agent-arg", "agent_args", multiple=True, help="An extra argument for each agent (repeatable).")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def pool_create(name: str, provider: str, min_nodes: int, max_nodes: int, domain: str, labels: str | None,
                idle: str, scale_up_after: str, start_timeout: str, slots: int, cpu: str, memory: str, gpus: int,
                hosts: str | None, ssh_user: str | None, ssh_key: Path | None, known_hosts: Path | None,
                remote_python: str | None, remote_dir: str | None, agent_args: tuple[str, ...], as_json: bool,
                url: str | None, token: str | None) -> None:
    """Create pool NAME (admin). The autoscaler keeps it between --min and --max nodes."""
    config: dict[str, Any] = {}
    if hosts:
        config["hosts"] = [h.strip() for h in hosts.split(",") if h.strip()]
    for key, value in (("user", ssh_user), ("key_file", str(ssh_key.resolve()) if ssh_key else None),
                       ("known_hosts", str(known_hosts.resolve()) if known_hosts else None),
                       ("python", remote_python), ("base_dir", remote_dir)):
        if value:
            config[key] = value
    if agent_args:
        config["agent_args"] = list(agent_args)
    body = {"name": name, "provider": provider, "min": min_nodes, "max": max_nodes, "domain": domain,
            "labels": _labels(labels), "idle": idle, "scale_up_after": scale_up_after,
            "start_timeout": start_timeout, "slots": slots, "cpu": cpu, "memory": memory, "gpus": gpus,
            "provider_config": config}
    with open_client(url, token) as client:
        out = client.post("/v1/pools", body)
    emit(out, as_json, _render_pool)


@pool.command("ls")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def pool_ls(as_json: bool, url: str | None, token: str | None) -> None:
    """List pools with their size, target and the reason of the last decision."""
    with open_client(url, token) as client:
        pools = client.get("/v1/pools")
    emit(pools, as_json, lambda ps: table(
        [(p["name"], p["provider"], p["domain"], p["size"], p["target"], f"{p['min']}-{p['max']}",
          "paused" if p["paused"] else "", p["reason"]) for p in ps],
        ["NAME", "PROVIDER", "DOMAIN", "SIZE", "TARGET", "MIN-MAX", "", "WHY"]))


@pool.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def pool_show(name: str, as_json: bool, url: str | None, token: str | None) -> None:
    """A pool: members, the last decision with its demand signal, and recent scaling decisions."""
    with open_client(url, token) as client:
        out = client.get(f"/v1/pools/{name}")
    emit(out, as_json, _render_pool)


def _patch(name: str, body: dict[str, Any], as_json: bool, url: str | None, token: str | None) -> None:
    with open_client(url, token) as client:
        out = client.request("PATCH", f"/v1/pools/{name}", json=body)
    emit(out, as_json, _render_pool)


@pool.command("set")
@click.argument("name")
@click.option("--min", "min_nodes", type=click.IntRange(0), default=None)
@click.option("--max", "max_nodes", type=click.IntRange(0), default=None)
@click.option("--idle", default=None)
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def pool_set(name: str, min_nodes: int | None, max_nodes: int | None, idle: str | None, as_json: bool,
             url: str | None, token: str | None) -> None:
    """Resize pool NAME or change its idle period (admin). Below its size, idle nodes drain at once."""
    body = {k: v for k, v in {"min": min_nodes, "max": max_nodes, "idle": idle}.items() if v is not None}
    if not body:
        raise click.UsageError("give --min, --max or --idle")
    _patch(name, body, as_json, url, token)


@pool.command("pause")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def pool_pause(name: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Stop scaling pool NAME (its nodes stay)."""
    _patch(name, {"paused": True}, as_json, url, token)


@pool.command("resume")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def pool_resume(name: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Scale pool NAME again."""
    _patch(name, {"paused": False}, as_json, url, token)


@pool.command("rm")
@click.argument("name")
@client_options
@handle_errors
def pool_rm(name: str, url: str | None, token: str | None) -> None:
    """Remove pool NAME (it must have no live node: `pool set NAME --min 0 --max 0` first)."""
    with open_client(url, token) as client:
        client.delete(f"/v1/pools/{name}")
    click.echo(f"pool {name} removed")


@pool.group("quota")
def quota() -> None:
    """How many nodes (pools' and others) a domain may have; the autoscaler never goes past it."""


@quota.command("set")
@click.argument("domain")
@click.option("--max-nodes", type=click.IntRange(0), default=None, help="The quota; omit with --none.")
@click.option("--none", "no_quota", is_flag=True, help="Remove the domain's quota.")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def quota_set(domain: str, max_nodes: int | None, no_quota: bool, as_json: bool, url: str | None,
              token: str | None) -> None:
    """Set DOMAIN's node quota (admin)."""
    if (max_nodes is None) == no_quota:
        raise click.UsageError("give exactly one of --max-nodes N and --none")
    with open_client(url, token) as client:
        out = client.request("PUT", f"/v1/quotas/{domain}", json={"max_nodes": max_nodes})
    def render(q: dict[str, Any]) -> str:
        limit = q["max_nodes"] if q["max_nodes"] is not None else "none"
        return f"domain {q['domain']}: quota {limit}, {q['nodes']} node(s) now"

    emit(out, as_json, render)


@quota.command("ls")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def quota_ls(as_json: bool, url: str | None, token: str | None) -> None:
    """List domain node quotas and use."""
    with open_client(url, token) as client:
        rows = client.get("/v1/quotas")
    emit(rows, as_json, lambda qs: table([(q["domain"], q["max_nodes"], q["nodes"]) for q in qs],
                                         ["DOMAIN", "MAX NODES", "NODES"]))
