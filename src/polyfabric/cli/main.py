"""`polyfabric`: the entry point. Programs (server, agent, up) and client nouns (node, token, ...)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from polyfabric import __version__
from polyfabric.cli.audit import audit
from polyfabric.cli.jobs import job
from polyfabric.cli.limits import limits
from polyfabric.cli.nodes import node
from polyfabric.cli.run import run
from polyfabric.cli.semaphores import semaphore
from polyfabric.cli.tasks import task
from polyfabric.cli.tokens import domain, token
from polyfabric.cli.up import up

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
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def server(db_url: str | None, listen: str, data_dir: Path, heartbeat_interval: float,
           unreachable_after: float, down_after: float, quarantine_failures: int, quarantine_window: float,
           quarantine_ratio: float, quarantine_degraded_after: float, quarantine_flapping: bool,
           probation: float, log_level: str, advertise: str | None, lease_ttl: float) -> None:
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
    data_dir = data_dir.resolve()
    settings = CoordinatorSettings(
        db_url=db_url or f"sqlite:///{data_dir / 'polyfabric.db'}", data_dir=data_dir, host=host,
        port=int(port), log_level=log_level, advertise_url=advertise, lease_ttl_s=lease_ttl,
        detector=DetectorSettings(heartbeat_interval=heartbeat_interval, unreachable_after=unreachable_after,
                                  down_after=down_after, check_interval=min(0.5, heartbeat_interval / 2)),
        quarantine=QuarantinePolicy(min_failures=quarantine_failures, failure_window=quarantine_window,
                                    min_failure_ratio=quarantine_ratio, degraded_after=quarantine_degraded_after,
                                    flapping=quarantine_flapping, probation=probation),
    )
    try:
        sys.exit(serve(settings))
    except DomainError as exc:
        raise click.ClickException(exc.message) from None


@cli.command()
@click.option("--coordinator", required=True, envvar="POLYFABRIC_URL",
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
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def agent(coordinator: str, join_token: str | None, name: str | None, labels: str | None, data_dir: Path,
          cpu: str | None, memory: str | None, disk: str | None, gpus: str | None, slots: str | None,
          health_script: Path | None, health_interval: float, heartbeat_interval: float | None,
          pythonpath: tuple[Path, ...], kill_grace: float, stop_grace: float, log_level: str) -> None:
    """Run a node agent: join the fabric with this machine's own key, report its health and run tasks."""
    from polyfabric.agent.main import run
    from polyfabric.agent.settings import AgentSettings

    overrides = {k: v for k, v in {"cpu": cpu, "memory": memory, "disk": disk, "gpus": gpus,
                                   "slots": slots}.items() if v is not None}
    settings = AgentSettings(coordinator=coordinator, data_dir=data_dir.resolve(), join_token=join_token,
                             labels=_labels(labels), overrides=overrides, health_script=health_script,
                             health_interval_s=health_interval, heartbeat_interval_s=heartbeat_interval,
                             pythonpath=[p.resolve() for p in pythonpath], kill_grace_s=kill_grace,
                             stop_grace_s=stop_grace)
    if name:
        settings.name = name
    sys.exit(run(settings, log_level=log_level))


cli.add_command(up)
cli.add_command(token)
cli.add_command(domain)
cli.add_command(node)
cli.add_command(limits)
cli.add_command(audit)
cli.add_command(run)
cli.add_command(job)
cli.add_command(task)
cli.add_command(semaphore)


def main() -> None:
    cli()
