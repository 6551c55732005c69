"""`polyfabric policy`: apply, list, show, remove and test policies (docs/policy.md).

A policy file holds one policy, or several YAML documents separated by `---`. Every apply makes a
new version (audited); `policy test` evaluates without submitting anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from polyfabric.cli.output import client_options, emit, handle_errors, open_client, table, when

__all__ = ["policy"]


def _documents(path: Path) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"{path} is not valid YAML: {exc}") from None
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise click.BadParameter(f"{path} must hold policy maps (name, kind, scope, allow, ...)")
    return docs


@click.group()
def policy() -> None:
    """Policies: CEL rules on admission, placement and limits, at network and domain scope."""


@policy.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def policy_apply(file: Path, as_json: bool, url: str | None, token: str | None) -> None:
    """Apply the policies in FILE (each becomes a new version of its name)."""
    out = []
    with open_client(url, token) as client:
        for doc in _documents(file):
            out.append(client.post("/v1/policies", {"policy": doc}))
    emit(out, as_json, lambda rows: "\n".join(
        f"policy {r['name']} v{r['version']} applied ({r['kind']}, {r['scope']}, {r['mode']})" for r in rows))


def _render_list(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no policies"
    return table([[r["name"], r["version"], r["kind"], r["scope"], r["mode"], r["created_by"], when(r["created_at"])]
                  for r in rows], ["NAME", "VERSION", "KIND", "SCOPE", "MODE", "BY", "APPLIED"])


@policy.command("ls")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def policy_ls(as_json: bool, url: str | None, token: str | None) -> None:
    """List the policies in force (their current versions)."""
    with open_client(url, token) as client:
        emit(client.get("/v1/policies"), as_json, _render_list)


def _render_show(out: dict[str, Any]) -> str:
    lines = [f"policy {out['name']} v{out['version']}" + (" (removed)" if out["removed"] else ""),
             f"kind {out['kind']}, scope {out['scope']}, mode {out['mode']}", "",
             yaml.safe_dump(out["document"], sort_keys=False).rstrip(), "", "versions:"]
    for v in out.get("versions", []):
        lines.append(f"  v{v['version']}  {when(v['created_at'])}  {v['created_by']}"
                     + ("  removed" if v["removed"] else ""))
    return "\n".join(lines)


@policy.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def policy_show(name: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Show a policy's current document and its versions."""
    with open_client(url, token) as client:
        emit(client.get(f"/v1/policies/{name}"), as_json, _render_show)


@policy.command("rm")
@click.argument("name")
@click.option("--reason", default="", help="Why (recorded in the audit chain).")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def policy_rm(name: str, reason: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Remove a policy (a removal is a new version too; the history stays)."""
    with open_client(url, token) as client:
        out = client.request("DELETE", f"/v1/policies/{name}", json={"reason": reason})
    emit(out, as_json, lambda r: f"policy {r['name']} removed (v{r['version']})")


def _render_test(out: dict[str, Any]) -> str:
    lines = [f"policies: {', '.join(out['policies']) or 'none'}"]
    adm = out["admission"]
    lines.append(f"admission: {'ALLOW' if adm['allowed'] else 'DENY'}: {'; '.join(adm['reasons'])}")
    for node in out["nodes"]:
        for task, decision in node["tasks"].items():
            verdict = "ALLOW" if decision["allowed"] else "DENY"
            lines.append(f"placement {task} on {node['name']} ({node['node_id']}): {verdict}: "
                         f"{'; '.join(decision['reasons'])}")
    if not out["nodes"]:
        lines.append("placement: no nodes to evaluate")
    return "\n".join(lines)


@policy.command("test")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--job", "job_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The workflow file of the job to evaluate (nothing is submitted).")
@click.option("--node", "nodes", multiple=True, help="A node id or name (repeatable; default: every node).")
@click.option("--domain", default="default", envvar="POLYFABRIC_DOMAIN", show_default=True,
              help="The domain the job would be submitted to.")
@click.option("--param", "-p", "params", multiple=True, help="k=v: a workflow parameter.")
@click.option("--only", is_flag=True, help="Evaluate FILE's policies alone, not with the ones in force.")
@click.option("--json", "as_json", is_flag=True)
@client_options
@handle_errors
def policy_test(file: Path, job_file: Path, nodes: tuple[str, ...], domain: str, params: tuple[str, ...],
                only: bool, as_json: bool, url: str | None, token: str | None) -> None:
    """Evaluate the policies in FILE (with those in force, FILE's shadowing same-named ones) against
    a job and nodes, and print each decision with its reason. Nothing is submitted."""
    try:
        workflow = yaml.safe_load(job_file.read_text())
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"{job_file} is not valid YAML: {exc}", param_hint="--job") from None
    values: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not k=v", param_hint="--param")
        values[key] = value
    body = {"policies": _documents(file), "workflow": workflow, "params": values, "domain": domain,
            "nodes": list(nodes) or None, "include_current": not only}
    with open_client(url, token) as client:
        emit(client.post("/v1/policies/test", body), as_json, _render_test)


def policy_lines(info: dict[str, Any] | None, *, limit: int = 10) -> list[str]:
    """What `job show` and `task show` print of policies: the versions that admitted the job and
    allowed its placements, dry-run denies, and the offers nodes declined (with their reasons)."""
    if not info:
        return []
    lines = []
    if info.get("admitted_by"):
        lines.append(f"Admitted:   by policies {', '.join(info['admitted_by'])}")
    placements = info.get("placements") or []
    if placements:
        counts: dict[str, int] = {}
        for p in placements:
            key = ", ".join(p["allowed_by"]) or "no policy"
            counts[key] = counts.get(key, 0) + 1
        lines.append("Placed:     " + "; ".join(f"{n} placement(s) allowed by {k}" for k, n in counts.items()))
    for d in (info.get("dry_run") or [])[:limit]:
        lines.append(f"Dry-run:    {d['scope']} policy {d['policy']} would deny {d.get('task_id') or 'the job'} "
                     f"on {d.get('node_id') or '-'}: {d['reason']}")
    declines = info.get("declines") or []
    if declines:
        lines.append(f"Declined:   {len(declines)} offer(s)")
        for d in declines[:limit]:
            lines.append(f"  {d['task_id']} attempt {d['attempt']} by node {d['node_id']}"
                         + (f" (policy {d['policy']})" if d.get("policy") else "") + f": {d['reason']}")
    return lines
