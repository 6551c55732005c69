"""`polyfabric up`: a whole fabric on this machine — a coordinator on SQLite and local agents.

Everything lives under one data dir (default ./.polyfabric): the coordinator's database, keys
and admin token, each agent's key, and client.json for the CLI. Ctrl-C stops it all; running it
again continues from the kept state (the agents are the same nodes).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import httpx

from polyfabric.cli.config import write_config
from polyfabric.client import ApiClient

__all__ = ["up"]

_DEFAULT_AGENTS = [("node-a1", "region=local,zone=a"), ("node-a2", "region=local,zone=a"),
                   ("node-b1", "region=local,zone=b")]


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"the coordinator exited with code {proc.returncode}; see its log")
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise click.ClickException(f"the coordinator did not answer at {url} within {timeout:.0f}s")


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".polyfabric"),
              show_default=True)
@click.option("--port", type=int, default=7340, show_default=True)
@click.option("--agents", type=int, default=3, show_default=True, help="How many local agents.")
@click.option("--detach", is_flag=True, help="Start everything and return (stop with 'kill' of the pids "
              "in DATA_DIR/pids).")
@click.option("--run", "workflow", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Once the fabric is up, run this workflow, follow it and print its result.")
@click.option("-p", "--param", "params", multiple=True, help="k=v parameter for --run (repeat).")
def up(data_dir: Path, port: int, agents: int, detach: bool, workflow: str | None, params: tuple[str, ...]) -> None:
    """Run a local fabric: a coordinator on SQLite and local agents (zone=a, zone=a, zone=b, ...)."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    exe = [sys.executable, "-m", "polyfabric"]
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = (logs / log_name).open("ab")
        proc = subprocess.Popen([*exe, *args], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        return proc

    if not detach:  # from here on, a stop signal stops what this command started, as Ctrl-C does
        signal.signal(signal.SIGTERM, _interrupt)
    coordinator_dir = data_dir / "coordinator"
    coordinator = start(["server", "--listen", f"127.0.0.1:{port}", "--data-dir", str(coordinator_dir)],
                        "coordinator.log")
    try:
        _wait_healthy(url, coordinator, 30)
        token_file = coordinator_dir / "admin.token"
        write_config(data_dir / "client.json", url, token_file)
        admin = token_file.read_text().strip()
        specs = [_DEFAULT_AGENTS[i] if i < len(_DEFAULT_AGENTS) else
                 (f"node-{i + 1}", f"region=local,zone={'ab'[i % 2]}") for i in range(agents)]
        need_join = [name for name, _ in specs if not (data_dir / "agents" / name / "agent.json").exists()]
        join_token = None
        if need_join:
            with ApiClient(url, admin) as client:
                join_token = client.post("/v1/tokens/join", {"domain": "local", "uses": len(need_join),
                                                             "ttl_s": 600,
                                                             "description": "polyfabric up"})["token"]
        for name, labels in specs:
            args = ["agent", "--coordinator", url, "--name", name, "--labels", labels,
                    "--data-dir", str(data_dir / "agents" / name)]
            env_token = ["--join-token", join_token] if name in need_join and join_token else []
            start([*args, *env_token], f"{name}.log")
        (data_dir / "pids").write_text("\n".join(str(p.pid) for p in procs) + "\n")
        _wait_nodes(url, admin, [name for name, _ in specs], procs)
        click.echo(f"polyfabric is up: coordinator {url} with {agents} agents")
        click.echo(f"  admin token: {token_file}")
        click.echo(f"  client config: {data_dir / 'client.json'} (the CLI finds it from this directory)")
        click.echo(f"  API docs: {url}/docs    logs: {logs}")
        click.echo(f"  web UI: {url}/ui/  (sign in with: {_ui_token(url, admin)})")
        click.echo("  try: polyfabric node ls")
        if workflow is not None:
            _run_workflow(url, admin, workflow, params)
        if detach:
            return
        _wait_forever(procs)
    finally:
        if not detach:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the stop short
            _stop_all(procs)


def _run_workflow(url: str, admin: str, path: str, params: tuple[str, ...]) -> None:
    """Submit a workflow to the fresh fabric, print each task as it finishes, then the result."""
    from polyfabric.cli.run import load_workflow_file, parse_params
    from polyfabric.client.jobs import JobsClient

    document = load_workflow_file(path)
    with JobsClient(url, admin) as client:
        job = client.submit(document, parse_params(params), domain="local")
        click.echo(f"\nrunning workflow {document.get('name')} as job {job['id']} ...")
        names: dict[str, str] = {}

        def show(event: dict[str, object]) -> None:
            if event["status"] in ("succeeded", "failed", "skipped", "cancelled"):
                node = names.get(str(event.get("node_id")), event.get("node_id") or "-")
                click.echo(f"  {event['key']:<14} {event['status']:<10} on {node}")

        names.update({n["id"]: n["name"] for n in client.get("/v1/nodes")})
        final = client.wait(job["id"], timeout=600, on_event=show)
        result = client.result(job["id"])
    click.echo(f"job {job['id']} {final['status']} ({final['total']} tasks)")
    click.echo("result: " + json.dumps(result["result"], indent=2, sort_keys=True))
    click.echo(f"see it again with: polyfabric job show {job['id']}")


def _ui_token(url: str, admin: str) -> str:
    """A fresh operator token (12 h) to sign in to the web UI with; the admin token stays in its file."""
    with ApiClient(url, admin) as client:
        reply = client.post("/v1/tokens/api", {"name": f"ui-{int(time.time())}", "role": "operator",
                                               "domains": ["*"], "ttl_s": 12 * 3600})
    return str(reply["token"])


def _wait_nodes(url: str, admin: str, names: list[str], procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 30
    with ApiClient(url, admin) as client:
        while time.monotonic() < deadline:
            nodes = {n["name"]: n for n in client.get("/v1/nodes")}
            if all(nodes.get(n, {}).get("state") == "active" for n in names):
                return
            for proc in procs[1:]:
                if proc.poll() is not None:
                    raise click.ClickException(f"an agent exited with code {proc.returncode}; see the logs")
            time.sleep(0.2)
    raise click.ClickException("the agents did not become active within 30s; see the logs")


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM: leave the way Ctrl-C does, through `up`'s finally, which stops the coordinator and
    the agents (they run in sessions of their own: nothing else would stop them)."""
    raise KeyboardInterrupt


def _wait_forever(procs: list[subprocess.Popen[bytes]]) -> None:
    try:
        # Printed inside the try: once it shows, Ctrl-C or SIGTERM ends in a clean stop (exit 0).
        click.echo("Ctrl-C stops the fabric; its state is kept for the next 'polyfabric up'.")
        while procs[0].poll() is None:
            time.sleep(0.5)
        click.echo(f"the coordinator exited with code {procs[0].returncode}", err=True)
        return
    except KeyboardInterrupt:
        pass
    click.echo("\nstopping...")


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
