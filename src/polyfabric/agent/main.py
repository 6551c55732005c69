"""The agent's composition root and main loop: join (or reconnect), then heartbeat and run tasks until stopped.

Start-up: load or create the node key; detect capacity; if this data dir has joined before, say
hello (a restarted agent is the same node and needs no join token); otherwise register with the
join token. Then heartbeat every interval (jittered) with telemetry and the latest health check
results; health checks run on their own thread so a slow owner script never delays a heartbeat.
Next to the heartbeat, the task runner (polyfabric.agent.runner) takes leases and reports on its
own two threads and connections. When the coordinator is unreachable the agent keeps trying
(backoff up to 2 s), running tasks go on, and it resumes by itself. Given several coordinators
(`--coordinator URL1,URL2,...`, one PostgreSQL), each of the three connections fails over between
them and follows the leader's address that the others answer with; the node is the same whichever
coordinator it talks to (its identity is its key, the nodes table is shared).

Stopping (SIGTERM/SIGINT): no new leases are taken; running tasks get `stop_grace_s` to finish,
then are stopped (process group SIGTERM, SIGKILL after `kill_grace_s`) and handed back; pending
reports are delivered (up to `report_flush_s`); heartbeats go on meanwhile so the node does not
look dead while it drains. A second signal skips what is left of the grace.

Exit codes: 0 stopped by a signal, 2 refused at join (bad token, name taken), 3 revoked.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from polyfabric import __version__
from polyfabric.agent import fingerprint, health, telemetry
from polyfabric.agent.config import ConfigApplier
from polyfabric.agent.identity import NodeIdentity, load_or_create
from polyfabric.agent.policy import Negotiator, load_owner_policy
from polyfabric.agent.probes import EchoServer, Prober, parse_address
from polyfabric.agent.runner import Outbox, Sync, TaskRunner
from polyfabric.agent.runner.artifacts import ArtifactAgent
from polyfabric.agent.runner.checkpoints import CheckpointAgent
from polyfabric.agent.secrets import SecretOpener, manifest_signer
from polyfabric.agent.settings import AgentSettings
from polyfabric.client import AgentClient, ApiError, CoordinatorUnreachable
from polyfabric.domain.policy import OwnerPolicy
from polyfabric.domain.resources import Resources
from polyfabric.observability import configure_logging
from polyfabric.observability.metrics import AgentMetrics, agent_registry, serve_agent_metrics

__all__ = ["Agent", "AgentRefused", "run"]

log = logging.getLogger("polyfabric.agent")

_STATE_FILE = "agent.json"
_CALL_TIMEOUT_S = 5.0


class AgentRefused(Exception):
    """The coordinator refused this node for good (exit code attached)."""

    def __init__(self, message: str, exit_code: int, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.retryable = retryable  # "try again later" (503: overloaded, a leader being elected)


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.identity: NodeIdentity = load_or_create(settings.data_dir)
        # Heartbeats are answered at once: a call that hangs (a paused or cut-off coordinator) is
        # given up after a few seconds and tried at the next coordinator, well within the Down bound.
        self.client = AgentClient(settings.coordinator, self.identity.sign_headers, timeout=_CALL_TIMEOUT_S)
        self.stop_event = threading.Event()
        self.interval = settings.heartbeat_interval_s or 2.0
        self.state = "unknown"
        self._health: list[dict[str, Any]] | None = None
        self._health_lock = threading.Lock()
        self._rng = random.Random()
        self.capacity: Resources | None = None
        self.runner: TaskRunner | None = None
        self.sync: Sync | None = None
        self._task_clients: list[AgentClient] = []
        self._drained = threading.Event()  # set once the tasks are drained after a stop
        self._abort = False  # stopping because of an error: do not wait for tasks
        # Topology (issue 7): coordinates measured by heartbeats and, with an echo endpoint, peers.
        self.echo: EchoServer | None = None
        self.prober = Prober(interval_s=settings.probe_interval_s)
        self.metrics = AgentMetrics()  # served on --metrics-port (off by default)
        self.node_domain, self.node_name = "", settings.name
        self._owner_policy: OwnerPolicy | None = None
        if settings.policy_file is not None:
            # A bad policy file stops the agent at start, naming the field.
            self._owner_policy = load_owner_policy(settings.policy_file)

    # -- joining ----------------------------------------------------------------------------

    def declaration(self) -> dict[str, Any]:
        detected = fingerprint.detect(self.settings.data_dir, self.settings.overrides)
        self.capacity = Resources.from_dict(detected["capacity"])
        facts: dict[str, Any] = {"network": detected.get("network", {}), "platform": detected.get("platform", {})}
        advertised = self.advertised_policy()
        if advertised is not None:
            facts["owner_policy"] = advertised
        return {
            "name": self.settings.name,
            "labels": self.settings.labels,
            "capacity": detected["capacity"],
            "facts": facts,
            "agent_version": __version__,
        }

    def advertised_policy(self) -> dict[str, Any] | None:
        """What the owner's policy lets the coordinator know (issue 6): its accept rules, so that
        the scheduler offers this node only what it would accept; None without a policy or with
        `advertise: false`. The agent still answers every offer itself."""
        negotiator = self.runner.negotiator if self.runner is not None else None
        policy = negotiator.policy if negotiator is not None else self._owner_policy
        return policy.advertised() if policy is not None else None

    def join(self) -> dict[str, Any]:
        decl = self.declaration()
        state_path = self.settings.data_dir / _STATE_FILE
        if state_path.exists():
            try:
                reply = self.client.post("/v1/agent/hello", {"node": decl})
                self._joined(reply)
                return reply
            except ApiError as exc:
                if exc.status != 404 or not self.settings.join_token:
                    raise self._refusal(exc) from None
                log.warning("the coordinator does not know this node any more; joining again")
        if not self.settings.join_token:
            raise AgentRefused(
                f"node {self.identity.node_id} has not joined yet: start it with --join-token "
                "(make one with 'polyfabric token create --domain NAME')", 2)
        try:
            reply = self.client.post("/v1/agent/register", {
                "join_token": self.settings.join_token,
                "public_key": self.identity.public_key_b64,
                "node": decl,
            }, idempotent=False)
        except ApiError as exc:
            raise self._refusal(exc) from None
        state = {"node_id": reply["node_id"], "coordinator": self.settings.coordinator,
                 "domain": reply["domain"], "joined_at": time.time()}
        _write_json(state_path, state)
        self._joined(reply)
        return reply

    def _joined(self, reply: dict[str, Any]) -> None:
        self.state = reply["state"]
        self.node_domain, self.node_name = reply["domain"], reply["name"]
        if self.settings.heartbeat_interval_s is None:
            self.interval = float(reply.get("heartbeat_interval_s", self.interval))
        log.info("node %s (%s) joined domain %s as %s; heartbeat every %.1fs", reply["node_id"],
                 reply["name"], reply["domain"], reply["state"], self.interval)

    def _node_variables(self) -> dict[str, Any]:
        cap = self.capacity or Resources(slots=1)
        return {"id": self.identity.node_id, "name": self.node_name, "domain": self.node_domain,
                "labels": dict(self.settings.labels), "state": self.state, "cpu": cap.cpu_millis,
                "memory": cap.memory_bytes, "gpus": cap.gpus, "slots": cap.slots}

    def reload_policy(self) -> None:
        """SIGHUP / `polyfabric agent reload`: new offers follow the file as it is now; running
        attempts it no longer allows are asked to checkpoint and stop, stopped after the policy's
        `checkpoint_grace`, and handed back if it says `on_change: stop`."""
        runner = self.runner
        negotiator = runner.negotiator if runner is not None else None
        if negotiator is None:
            log.warning("reload: this agent runs without --policy; nothing to reload")
            return
        policy, error = negotiator.reload()
        if error is not None:
            return
        self._advertise_policy()
        for ident, reason in negotiator.no_longer_allowed():
            if runner is not None and runner.hand_back(ident, reason, policy.checkpoint_grace_s):
                log.info("stopping %s attempt %d (checkpoint grace %gs): %s", ident[0], ident[1],
                         policy.checkpoint_grace_s, reason)

    def _advertise_policy(self) -> None:
        """Tell the coordinator what the reloaded policy accepts (a `hello` with the new facts);
        until it lands, offers the new policy declines are declined, as always."""
        config = getattr(self, "config", None)
        try:
            if config is None or not config.redeclare():
                self.client.post("/v1/agent/hello", {"node": self.declaration()})
        except Exception as exc:  # the next redeclaration carries it
            log.warning("could not advertise the reloaded node policy: %s", exc)

    def _refusal(self, exc: ApiError) -> AgentRefused:
        # Only this node's own revocation is exit 3 (a revoked *join token* is a refusal like any other).
        if exc.status in (401, 403) and f"node {self.identity.node_id} was revoked" in exc.message:
            return AgentRefused(f"this node was revoked: {exc.message}", 3)
        if exc.status in (401, 403, 404, 409, 400, 422):
            return AgentRefused(f"the coordinator refused this node: {exc.message}", 2)
        return AgentRefused(f"the coordinator failed: {exc.message}", 1, retryable=exc.is_retryable)

    # -- running ----------------------------------------------------------------------------

    def _health_loop(self) -> None:
        while not self.stop_event.is_set():
            results = health.run_checks(self.settings.data_dir, self.settings.health_script,
                                        self.settings.health_timeout_s)
            with self._health_lock:
                self._health = results
            failed = [r for r in results if not r["ok"]]
            if failed:
                log.warning("health checks failing: %s", "; ".join(f"{r['name']}: {r['message']}" for r in failed))
            self.stop_event.wait(self.settings.health_interval_s)

    def heartbeat_once(self, seq: int) -> dict[str, Any]:
        with self._health_lock:
            results = self._health
        payload = {"telemetry": telemetry.sample(self.settings.data_dir), "health": results, "seq": seq,
                   **self.prober.heartbeat_fields()}
        started = time.perf_counter()
        try:
            reply = self.client.post("/v1/agent/heartbeat", payload)
        except Exception:
            self.metrics.heartbeat_failures.inc()
            raise
        self.metrics.heartbeat_seconds.observe(time.perf_counter() - started)
        # The heartbeat is the coordinator probe: its time on the wire (signing and encoding left out).
        self.prober.on_heartbeat(reply, self.client.last_elapsed or (time.perf_counter() - started))
        if reply["state"] != self.state:
            log.info("node state: %s -> %s", self.state, reply["state"])
            self.state = reply["state"]
        return reply

    def join_with_retry(self) -> None:
        """Join, waiting for the coordinator if it is not up yet (agents may start first), or
        answers "try again later" (several coordinators: a leader is being elected)."""
        failures = 0
        while True:
            try:
                self.join()
                return
            except (CoordinatorUnreachable, AgentRefused) as exc:
                if isinstance(exc, AgentRefused) and not exc.retryable:
                    raise
                failures += 1
                if failures == 1:
                    log.warning("%s; waiting for it", exc.message if isinstance(exc, CoordinatorUnreachable) else exc)
                if self.stop_event.wait(min(0.25 * 2 ** min(failures, 4), 2.0)):
                    raise

    # -- tasks -----------------------------------------------------------------------------

    def start_tasks(self) -> None:
        """Start the task runner and its lease and report loops (after joining: capacity is known)."""
        capacity = self.capacity or Resources(slots=1)
        outbox = Outbox()
        self.runner = TaskRunner(data_dir=self.settings.data_dir, slots=capacity.slots, capacity=capacity,
                                 outbox=outbox, pythonpath=self.settings.pythonpath,
                                 kill_grace_s=self.settings.kill_grace_s).start()
        sign = self.identity.sign_headers
        lease_client = AgentClient(self.settings.coordinator, sign, timeout=self.settings.lease_wait_s + 10.0)
        report_client = AgentClient(self.settings.coordinator, sign)
        self._task_clients = [lease_client, report_client]
        # Checkpoints: tasks save them through a local socket, the agent uploads them on its own connection.
        self._checkpoint_client = AgentClient(self.settings.coordinator, sign, timeout=30.0)
        self.runner.checkpoints = CheckpointAgent(self._checkpoint_client).start(self.settings.data_dir)
        self.runner.artifacts = ArtifactAgent(self._checkpoint_client)  # uploaded when an attempt ends
        if self.settings.policy_file is not None:  # the owner's policy answers every offer (issue 6)
            self.runner.negotiator = Negotiator(self.settings.policy_file, self._node_variables,
                                                self.identity.node_id, self.identity.private_key.sign)
        # Issue 6: sealed secrets are opened and result manifests signed with the node's key; the
        # node's configuration is fetched, applied and acknowledged on its own connection.
        self.runner.secret_opener = SecretOpener(self.identity.node_id, self.identity.private_key)
        self.runner.signer = manifest_signer(self.identity.node_id, self.identity.private_key)
        self._config_client = AgentClient(self.settings.coordinator, sign)
        self.config = ConfigApplier(self, self._config_client, interval_s=min(self.interval, 2.0)).start()
        self.sync = Sync(self.runner, outbox, lease_client, report_client,
                         lease_wait_s=self.settings.lease_wait_s).start()
        threading.Thread(target=self._drain_when_stopped, name="pf-drain", daemon=True).start()
        log.info("running tasks in %d slot(s)", capacity.slots)

    def _drain_when_stopped(self) -> None:
        self.stop_event.wait()
        try:
            self.drain_tasks()
        except Exception:
            log.exception("stopping the tasks failed")
        finally:
            self._drained.set()

    def hurry(self) -> None:
        """Stop running tasks now instead of after the grace (a second signal)."""
        self._abort = True
        if self.runner is not None:
            self.runner.interrupt_all()

    def drain_tasks(self) -> None:
        """Take no more leases, let running tasks finish (or stop them), deliver the reports, clean up."""
        runner, sync = self.runner, self.sync
        if runner is None or sync is None:
            return
        runner.stop_accepting()
        sync.stop_leasing()
        grace = 0.0 if self._abort else self.settings.stop_grace_s
        busy = len(runner.running())
        if busy and grace > 0:
            log.info("waiting up to %.1fs for %d running task(s) to finish", grace, busy)
        if not runner.wait_idle(grace):
            stopped = runner.interrupt_all()
            log.info("stopping %d running task(s) (they go back to the queue)", stopped)
            runner.wait_idle(self.settings.kill_grace_s + 5.0)
        flush = 1.0 if self._abort else self.settings.report_flush_s
        if not sync.flush(flush):
            log.warning("could not deliver every report before stopping")
        sync.stop()
        runner.close()
        if runner.checkpoints is not None:
            runner.checkpoints.close()
            self._checkpoint_client.close()
        config = getattr(self, "config", None)
        if config is not None:  # the configuration loop stops with stop_event; then its connection goes
            config.join(1.0)
        sync.poller.join(0.2)
        lease_client, report_client = self._task_clients
        report_client.close()
        if not sync.poller.alive:  # else it is inside a long-poll: the process exit ends that
            lease_client.close()

    # -- metrics ---------------------------------------------------------------------------

    def _metrics_snapshot(self) -> dict[str, Any]:
        runner = self.runner
        running = len(runner.running()) if runner is not None else 0
        return {"scalars": {
            "polyfabric_agent_tasks_running": ("Attempts running on this node now.", running),
            "polyfabric_agent_slots": ("Task slots of this node.", runner.slots if runner is not None else 0),
            "polyfabric_agent_slots_free": ("Task slots free now.", runner.free_slots() if runner is not None else 0),
            "polyfabric_agent_outbox_pending": ("Reports (events, log chunks) not yet delivered.",
                                                len(runner.outbox) if runner is not None else 0),
        }, "labelled": {
            "polyfabric_agent_node_state": ("This node's state as the coordinator last said (1: current).",
                                            ["state"], [((self.state,), 1)]),
        }}

    def serve_metrics(self, port: int, addr: str) -> None:
        """`--metrics-port`: this agent's own metrics at http://ADDR:PORT/metrics (no token)."""
        try:
            serve_agent_metrics(agent_registry(self.metrics, self._metrics_snapshot), port, addr)
        except OSError as exc:
            raise AgentRefused(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}", 2) from None
        log.info("serving metrics at http://%s:%d/metrics", addr, port)

    # -- the main loop ---------------------------------------------------------------------

    def start_echo(self) -> None:
        """The echo endpoint (if asked for) and the peer probe thread (topology, issue 7)."""
        if self.settings.echo_listen:
            host, port = parse_address(self.settings.echo_listen)
            self.echo = EchoServer(host, port).start()
            advertise = self.settings.echo_advertise
            if not advertise:
                shown = host if host not in ("0.0.0.0", "::") else socket.gethostname()
                advertise = f"{shown}:{self.echo.port}"
            self.prober.echo_advertise = advertise
            self.prober.source = host
            log.info("echo endpoint on %s:%d, advertised as %s", host, self.echo.port, advertise)
        threading.Thread(target=self.prober.run, args=(self.stop_event,), name="pf-probe", daemon=True).start()

    def run(self) -> int:
        if self.settings.metrics_port is not None:  # first: a port that is taken fails the start at once
            self.serve_metrics(self.settings.metrics_port, self.settings.metrics_addr)
        self.join_with_retry()
        threading.Thread(target=self._health_loop, name="pf-health", daemon=True).start()
        self.start_tasks()
        self.start_echo()
        try:
            self._heartbeat_loop()
        except BaseException:
            self._abort = True
            raise
        finally:
            self.stop_event.set()
            self._drained.wait(self.settings.stop_grace_s + self.settings.kill_grace_s
                               + self.settings.report_flush_s + 15.0)
            self.client.close()
        return 0

    def _heartbeat_loop(self) -> None:
        """Heartbeat until the tasks are drained after a stop (so the node stays alive while it drains)."""
        seq = 0
        failures = 0
        next_beat = time.monotonic()
        while not self._drained.is_set():
            seq += 1
            try:
                self.heartbeat_once(seq)
                if failures:
                    log.info("coordinator reachable again after %d failed heartbeats", failures)
                failures = 0
                delay = self.interval * self._rng.uniform(0.9, 1.0)
            except CoordinatorUnreachable as exc:
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning("%s (retrying)", exc.message)
                delay = min(0.25 * 2 ** min(failures, 4), 2.0)
            except ApiError as exc:
                if exc.status == 404 and self.settings.join_token:
                    self.join()
                    continue
                # 409: the node changed under this heartbeat (an operator acted at the same moment);
                # the next heartbeat settles on the fresh state.
                if not (exc.is_retryable or exc.status in (409, 500)):
                    raise self._refusal(exc) from None
                failures += 1
                delay = min(0.25 * 2 ** min(failures, 4), 2.0)
            next_beat = max(next_beat + delay, time.monotonic())
            self._drained.wait(max(0.0, next_beat - time.monotonic()))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def run(settings: AgentSettings, *, log_level: str = "info") -> int:
    configure_logging(log_level)
    try:
        agent = Agent(settings)
    except Exception as exc:  # a bad key file or data dir: say what, exit non-zero
        print(f"polyfabric agent: {exc}", file=sys.stderr)
        return 2

    def _stop(signum: int, _frame: object) -> None:
        if agent.stop_event.is_set():
            log.info("signal %d again: stopping running tasks now", signum)
            agent.hurry()
            return
        log.info("signal %d: stopping", signum)
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # SIGHUP reloads the owner's policy (issue 6); `polyfabric agent reload` finds us by the pid file.
    signal.signal(signal.SIGHUP, lambda _signum, _frame: threading.Thread(
        target=agent.reload_policy, name="pf-policy-reload", daemon=True).start())
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / "agent.pid").write_text(f"{os.getpid()}\n")
    except OSError as exc:
        log.warning("could not write the pid file: %s", exc)
    try:
        return agent.run()
    except AgentRefused as exc:
        print(f"polyfabric agent: {exc}", file=sys.stderr)
        return exc.exit_code
    except CoordinatorUnreachable as exc:
        print(f"polyfabric agent: {exc.message}", file=sys.stderr)
        return 1
