"""Prometheus metrics of the coordinator and the agent (`prometheus-client`, text format).

Two kinds: *event* metrics, counted where the event happens (a heartbeat, a scheduling pass, an
API request, a commit) and cheap enough for hot paths (one lock, one add), and *state* metrics,
read from the live state only when scraped (queue depth, attempts, per-node telemetry), so that
nothing is written on every change. Event metrics live once per process and are registered in
each registry built here; a registry is built per coordinator app or agent, with its own state
collector. Like the rest of `observability`, this module imports nothing of polyfabric.

Names are listed in docs/observability.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

__all__ = [
    "API_REQUEST_SECONDS",
    "CONTENT_TYPE_LATEST",
    "HEARTBEATS_RECEIVED",
    "LEDGER_ROWS",
    "RUNTIME_COMMIT_SECONDS",
    "SCHEDULING_PASS_SECONDS",
    "SCHEDULING_PLACEMENTS",
    "STORE_COMMIT_SECONDS",
    "TASK_OUTCOMES",
    "TELEMETRY_POINTS",
    "AgentMetrics",
    "StateCollector",
    "agent_registry",
    "coordinator_registry",
    "render",
    "serve_agent_metrics",
]

# Latencies from 0.5 ms to 10 s: a scheduling pass, a commit (fsync) and most requests fall in here.
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- coordinator event metrics (one set per process) --------------------------------------------

HEARTBEATS_RECEIVED = Counter("polyfabric_heartbeats_received", "Agent heartbeats received.", registry=None)
SCHEDULING_PASS_SECONDS = Histogram(
    "polyfabric_scheduling_pass_seconds",
    "Time of one scheduling pass with work to plan (cluster view, filters, scorers, preemption).",
    buckets=_LATENCY, registry=None)
SCHEDULING_PLACEMENTS = Counter("polyfabric_scheduling_placements", "Attempts placed on nodes.", registry=None)
TASK_OUTCOMES = Counter("polyfabric_task_outcomes", "Attempts that ended, by outcome.", ["status"],
                        registry=None)
API_REQUEST_SECONDS = Histogram(
    "polyfabric_api_request_seconds", "API request latency, by method, route template and status code.",
    ["method", "route", "status"], buckets=_LATENCY, registry=None)
STORE_COMMIT_SECONDS = Histogram("polyfabric_store_commit_seconds",
                                 "Time of one store transaction commit (the fsync included).",
                                 buckets=_LATENCY, registry=None)
RUNTIME_COMMIT_SECONDS = Histogram(
    "polyfabric_runtime_group_commit_seconds",
    "Time of one group commit of the job runtime (every write of the batch, in one transaction).",
    buckets=_LATENCY, registry=None)
TELEMETRY_POINTS = Counter("polyfabric_telemetry_points_written",
                           "Telemetry history points written, by resolution (seconds).", ["resolution"],
                           registry=None)
LEDGER_ROWS = Counter("polyfabric_ledger_rows", "Usage ledger rows recorded (finished attempts measured).",
                      registry=None)

_COORDINATOR_EVENTS: tuple[Collector, ...] = (
    HEARTBEATS_RECEIVED, SCHEDULING_PASS_SECONDS, SCHEDULING_PLACEMENTS, TASK_OUTCOMES, API_REQUEST_SECONDS,
    STORE_COMMIT_SECONDS, RUNTIME_COMMIT_SECONDS, TELEMETRY_POINTS, LEDGER_ROWS,
)


class StateCollector(Collector):
    """Gauges read at scrape time from `snapshot()`, a dict of:

    scalars: {name: (help, value)}             -> one gauge each
    labelled: {name: (help, [label names], [(label values, value), ...])}
    """

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        data = self._snapshot()
        for name, (text, value) in sorted(data.get("scalars", {}).items()):
            if value is not None:
                yield GaugeMetricFamily(name, text, value=float(value))
        for name, (text, labels, samples) in sorted(data.get("labelled", {}).items()):
            family = GaugeMetricFamily(name, text, labels=list(labels))
            for values, value in samples:
                if value is not None:
                    family.add_metric([str(v) for v in values], float(value))
            yield family
        for name, (text, labels, samples) in sorted(data.get("counters", {}).items()):
            counter = CounterMetricFamily(name, text, labels=list(labels))
            for values, value in samples:
                counter.add_metric([str(v) for v in values], float(value))
            yield counter

    def describe(self) -> Iterable[Metric]:
        return []  # names depend on the snapshot: never checked for clashes at registration


def _registry(events: Iterable[Collector], snapshot: Callable[[], dict[str, Any]] | None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for metric in events:
        registry.register(metric)
    ProcessCollector(namespace="polyfabric", registry=registry)
    if snapshot is not None:
        registry.register(StateCollector(snapshot))
    return registry


def coordinator_registry(snapshot: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """The registry a coordinator's /metrics renders: event metrics, process metrics, live state."""
    return _registry(_COORDINATOR_EVENTS, snapshot)


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


# -- the agent ---------------------------------------------------------------------------------


class AgentMetrics:
    """An agent's own event metrics (one set per agent object, so tests may run several in one process)."""

    def __init__(self) -> None:
        self.heartbeat_seconds = Histogram("polyfabric_agent_heartbeat_seconds",
                                           "Round trip of a heartbeat to the coordinator.", buckets=_LATENCY,
                                           registry=None)
        self.heartbeat_failures = Counter("polyfabric_agent_heartbeat_failures",
                                          "Heartbeats that got no answer or an error.", registry=None)

    def events(self) -> tuple[Collector, ...]:
        return (self.heartbeat_seconds, self.heartbeat_failures)


def agent_registry(metrics: AgentMetrics, snapshot: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    return _registry(metrics.events(), snapshot)


def serve_agent_metrics(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve `registry` at http://ADDR:PORT/metrics from a daemon thread; returns the server."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server
