"""`polyfabric`: the entry point. Programs (server, agent, up) and client nouns (node, token, ...)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from polyfabric import __version__
from polyfabric.cli.artifacts import job_artifacts, task_artifact
from polyfabric.cli.audit import audit
from polyfabric.cli.checkpoint import checkpoint
from polyfabric.cli.configdocs import config
from polyfabric.cli.gc import gc
from polyfabric.cli.jobs import job
from polyfabric.cli.limits import limits
from polyfabric.cli.nodes import node
from polyfabric.cli.policies import policy
from polyfabric.cli.pools import pool
from polyfabric.cli.run import run
from polyfabric.cli.schedules import schedule
from polyfabric.cli.secrets import secret
from polyfabric.cli.semaphores import semaphore
from polyfabric.cli.tasks import task
from polyfabric.cli.tokens import domain, token
from polyfabric.cli.topology import topology
from polyfabric.cli.triggers import trigger
from polyfabric.cli.up import up
from polyfabric.cli.usage import usage
from polyfabric.coordinator.gc_settings import DEFAULT_GC_THRESHOLD

__all__ = ["cli", "main"]


def _labels(value: str | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--labels")
        labels[key.strip()] = val.strip()
    return labels


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="polyfabric")
def cli() -> None:
    """polyfabric: a polycentric compute fabric.

    Start a local fabric with `polyfabric up`; run a coordinator with `polyfabric server` and
    join nodes with `polyfabric agent`. Client commands find the coordinator through --url /
    POLYFABRIC_URL and the token through --token / POLYFABRIC_TOKEN, or the file `up` writes.
    """


@cli.command()
@click.option("--db", "db_url", default=None,
              help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB (default: SQLite in the data dir).")
@click.option("--listen", default="127.0.0.1:7340", show_default=True, help="HOST:PORT to serve on.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".polyfabric/coordinator"),
              show_default=True, help="Keys, the admin token and (by default) the SQLite database.")
@click.option("--advertise", default=None, metavar="URL",
              help="The URL other coordinators send clients and agents to while this one leads "
                   "(several coordinators on one PostgreSQL; default: http://HOST:PORT of --listen).")
@click.option("--lease-ttl", type=click.FloatRange(min=1.0), default=5.0, show_default=True,
              help="Seconds the leader's lease lasts unrenewed (PostgreSQL): a dead leader is replaced "
                   "within about this long.")
@click.option("--heartbeat-interval", type=float, default=2.0, show_default=True,
              help="Seconds between agent heartbeats (told to agents).")
@click.option("--unreachable-after", type=float, default=5.0, show_default=True,
              help="Seconds of silence before a node is Unreachable.")
@click.option("--down-after", type=float, default=8.0, show_default=True,
              help="Seconds of silence before a node is Down.")
@click.option("--quarantine-failures", type=click.IntRange(min=0), default=3, show_default=True,
              help="Quarantine a node after this many task failures on it that then succeeded elsewhere (0: never).")
@click.option("--quarantine-window", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Seconds over which those failures are counted.")
@click.option("--quarantine-ratio", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="...and only if at least this share of the attempts that ended on the node failed.")
@click.option("--quarantine-degraded-after", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Quarantine a node whose health checks fail continuously for longer (0: never).")
@click.option("--quarantine-flapping/--no-quarantine-flapping", default=True, show_default=True,
              help="Quarantine a node that goes Down 3 times within 10 minutes (the Flapping condition).")
@click.option("--probation", type=click.FloatRange(min=0), default=900.0, show_default=True,
              help="An automatic quarantine ends after this many seconds of health (0: only `node resume`).")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where task checkpoints are kept (default: DATA_DIR/checkpoints; several coordinators "
                   "must share one).")
@click.option("--drain-checkpoint-grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="After a drain deadline, seconds a running task has to checkpoint before it is moved "
                   "anyway (0: move at once, without asking for a checkpoint).")
@click.option("--metrics-public", is_flag=True, default=False,
              help="Serve GET /metrics without a token (default: a viewer token for all domains '*').")
@click.option("--telemetry-interval", type=click.FloatRange(1, 60), default=10.0, show_default=True,
              help="Seconds between raw points of the per-node telemetry history (kept 1 h; then 1 min "
                   "means for 24 h, 10 min means for 30 days).")
@click.option("--fair-share/--no-fair-share", default=False, show_default=True,
              help="Order ready tasks of equal priority by their domain's contributed/consumed balance.")
@click.option("--fair-share-window", type=click.FloatRange(min=60), default=7 * 86400.0, show_default=True,
              help="Seconds of ledger history fair share weighs.")
@click.option("--offer-timeout", default="30s", show_default=True, metavar="DURATION",
              help="An offer (a lease) the node neither starts nor declines within this long counts as a "
                   "decline: the task is offered to another node (e.g. 30s, 2m).")
@click.option("--gc-threshold", type=click.IntRange(min=0), default=DEFAULT_GC_THRESHOLD, show_default=True,
              help="Allocations between young garbage collections in this process (0: CPython's 700); "
                   "higher spends less CPU collecting during scheduling passes.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def server(db_url: str | None, listen: str, data_dir: Path, heartbeat_interval: float,
           unreachable_after: float, down_after: float, quarantine_failures: int, quarantine_window: float,
           quarantine_ratio: float, quarantine_degraded_after: float, quarantine_flapping: bool,
           probation: float, log_level: str, advertise: str | None, lease_ttl: float,
           checkpoint_dir: Path | None = None, drain_checkpoint_grace: float = 10.0,
           metrics_public: bool = False, telemetry_interval: float = 10.0, fair_share: bool = False,
           fair_share_window: float = 7 * 86400.0, offer_timeout: str = "30s",
           gc_threshold: int = DEFAULT_GC_THRESHOLD) -> None:
    """Run a coordinator: the API, the failure detector and the other controllers.

    Several coordinators may share one PostgreSQL database (--db): all serve the API, one at a time
    is elected leader and runs the controllers; give each its own --data-dir and --advertise URL."""
    from polyfabric.coordinator.server import serve
    from polyfabric.coordinator.settings import CoordinatorSettings
    from polyfabric.domain.conditions import DetectorSettings
    from polyfabric.domain.errors import DomainError
    from polyfabric.domain.quarantine import QuarantinePolicy

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen")
    if not (0 < heartbeat_interval < unreachable_after < down_after):
        raise click.BadParameter("need 0 < --heartbeat-interval < --unreachable-after < --down-after")
    if advertise is not None and not advertise.startswith(("http://", "https://")):
        raise click.BadParameter(f"{advertise!r} is not an http:// or https:// URL", param_hint="--advertise")
    from polyfabric.domain.jobs import parse_duration

    try:
        offer_timeout_s = parse_duration(offer_timeout)
    except DomainError as exc:
        raise click.BadParameter(exc.message, param_hint="--offer-timeout") from None
    if offer_timeout_s <= 0:
        raise click.BadParameter("must be more than 0 (e.g. 30s)", param_hint="--offer-timeout")
    data_dir = data_dir.resolve()
    settings = CoordinatorSettings(
        db_url=db_url or f"sqlite:///{data_dir / 'polyfabric.db'}", data_dir=data_dir, host=host,
        port=int(port), log_level=log_level, advertise_url=advertise, lease_ttl_s=lease_ttl,
        detector=DetectorSettings(heartbeat_interval=heartbeat_interval, unreachable_after=unreachable_after,
                                  down_after=down_after, check_interval=min(0.5, heartbeat_interval / 2)),
        quarantine=QuarantinePolicy(min_failures=quarantine_failures, failure_window=quarantine_window,
                                    min_failure_ratio=quarantine_ratio, degraded_after=quarantine_degraded_after,
                                    flapping=quarantine_flapping, probation=probation),
        checkpoint_dir=checkpoint_dir.resolve() if checkpoint_dir is not None else None,
        drain_checkpoint_grace_s=drain_checkpoint_grace,
        metrics_public=metrics_public, telemetry_interval_s=telemetry_interval, fair_share=fair_share,
        fair_share_window_s=fair_share_window, offer_timeout_s=offer_timeout_s, gc_threshold=gc_threshold,
    )
    try:
        sys.exit(serve(settings))
    except DomainError as exc:
        raise click.ClickException(exc.message) from None


@cli.group(invoke_without_command=True)
@click.option("--coordinator", required=False, envvar="POLYFABRIC_URL",
              help="The coordinator's URL, or several comma-separated (coordinators on one PostgreSQL): "
                   "the agent fails over between them and follows the leader.")
@click.option("--join-token", default=None, envvar="POLYFABRIC_JOIN_TOKEN",
              help="Join token (needed only the first time this data dir joins).")
@click.option("--name", default=None, help="Node name (default: the host name).")
@click.option("--labels", default=None, help="k=v,k=v; region, zone and rack place the node in the topology.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".polyfabric/agent"),
              show_default=True, help="The node's key and state: same dir, same node.")
@click.option("--cpu", default=None, help="Declare this CPU instead of the detected one (e.g. 2, 500m).")
@click.option("--memory", default=None, help="Declare this memory (e.g. 4Gi).")
@click.option("--disk", default=None, help="Declare this disk (e.g. 100Gi).")
@click.option("--gpus", default=None, help="Declare this many GPUs (0 hides detected ones).")
@click.option("--slots", default=None, help="Task slots (default: the number of cores).")
@click.option("--health-script", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Owner's health check: exit 0 = healthy; its last output line is the message.")
@click.option("--health-interval", type=float, default=10.0, show_default=True)
@click.option("--heartbeat-interval", type=float, default=None, help="Override the coordinator's interval.")
@click.option("--pythonpath", "pythonpath", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A directory function tasks are imported from (repeatable; searched in order, first).")
@click.option("--kill-grace", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL when a task is stopped (timeout, cancel, shutdown).")
@click.option("--stop-grace", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="On SIGTERM, seconds running tasks may go on before they are stopped and handed back.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve this agent's Prometheus metrics on this port (off by default; no token: bind it "
                   "where only your scraper reaches).")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True, help="The address --metrics-port binds.")
@click.option("--echo-port", type=click.IntRange(0, 65535), default=None,
              help="Expose a TCP echo endpoint on this port (all addresses) so peers can measure their round "
                   "trip to this node (off by default; see docs/topology.md).")
@click.option("--echo-listen", default=None, metavar="HOST:PORT",
              help="Like --echo-port, on one address; peer probes leave from the same host.")
@click.option("--echo-advertise", default=None, metavar="HOST:PORT",
              help="The echo address peers are told (default: the listen address).")
@click.option("--probe-interval", type=click.FloatRange(min=0.05), default=5.0, show_default=True,
              help="Seconds between probes of a peer's echo endpoint.")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The owner's policy (YAML): which offers this node accepts; reload with SIGHUP or "
                   "'polyfabric agent reload'. See docs/policy.md.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@click.pass_context
def agent(ctx: click.Context, coordinator: str | None, policy_file: Path | None, join_token: str | None,
          name: str | None, labels: str | None, data_dir: Path,
          cpu: str | None, memory: str | None, disk: str | None, gpus: str | None, slots: str | None,
          health_script: Path | None, health_interval: float, heartbeat_interval: float | None,
          pythonpath: tuple[Path, ...], kill_grace: float, stop_grace: float, log_level: str,
          metrics_port: int | None = None, metrics_addr: str = "127.0.0.1", **extra: Any) -> None:
    """Run a node agent: join the fabric with this machine's own key, report its health and run tasks."""
    if ctx.invoked_subcommand is not None:
        return
    if not coordinator:
        raise click.UsageError("Missing option '--coordinator' (or POLYFABRIC_URL).")
    from polyfabric.agent.main import run
    from polyfabric.agent.settings import AgentSettings

    overrides = {k: v for k, v in {"cpu": cpu, "memory": memory, "disk": disk, "gpus": gpus,
                                   "slots": slots}.items() if v is not None}
    settings = AgentSettings(coordinator=coordinator, data_dir=data_dir.resolve(), join_token=join_token,
                             labels=_labels(labels), overrides=overrides, health_script=health_script,
                             health_interval_s=health_interval, heartbeat_interval_s=heartbeat_interval,
                             pythonpath=[p.resolve() for p in pythonpath], kill_grace_s=kill_grace,
                             stop_grace_s=stop_grace, metrics_port=metrics_port, metrics_addr=metrics_addr)
    settings.policy_file = policy_file.resolve() if policy_file is not None else None
    if name:
        settings.name = name
    echo = extra.get("echo_listen") or (f"0.0.0.0:{extra['echo_port']}" if extra.get("echo_port") is not None
                                        else None)
    if echo is not None:
        from polyfabric.agent.probes import parse_address

        try:
            parse_address(echo)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--echo-listen") from None
    settings.echo_listen, settings.echo_advertise = echo, extra.get("echo_advertise")
    settings.probe_interval_s = float(extra.get("probe_interval") or 5.0)
    sys.exit(run(settings, log_level=log_level))


@agent.command("reload")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".polyfabric/agent"),
              show_default=True, help="The running agent's data dir.")
def agent_reload(data_dir: Path) -> None:
    """Make the running agent read its --policy file again (sends it SIGHUP)."""
    import os
    import signal

    pid_file = data_dir / "agent.pid"
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"no running agent found through {pid_file}: {exc}") from None
    click.echo(f"asked agent {pid} to reload its policy")


cli.add_command(up)
cli.add_command(token)
cli.add_command(domain)
cli.add_command(node)
cli.add_command(topology)
cli.add_command(limits)
cli.add_command(audit)
cli.add_command(run)
cli.add_command(job)
cli.add_command(task)
job.add_command(job_artifacts)  # `job artifacts ID`, `task artifact TASK PATH` (cli/artifacts.py)
task.add_command(task_artifact)
cli.add_command(semaphore)
cli.add_command(pool)
cli.add_command(config)  # issue 6: configuration manager
cli.add_command(secret)  # issue 6: secrets
cli.add_command(schedule)  # issue 7: triggers and garbage collection
cli.add_command(trigger)
cli.add_command(gc)
cli.add_command(usage)  # issue 7: the contribution ledger
cli.add_command(checkpoint)
cli.add_command(policy)  # issue 6: policies


def main() -> None:
    cli()
