"""GET /metrics (Prometheus text format) and GET /v1/nodes/{ref}/metrics (telemetry history).

/metrics needs a token with role viewer or higher *for all domains* (`*`): it shows every node and
every domain. `polyfabric server --metrics-public` serves it without a token instead (for a
scraper on a trusted network). Every coordinator answers with its own figures; only the leader
has live scheduling state (`polyfabric_coordinator_leader` says which one it is).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from polyfabric.api.auth import principal
from polyfabric.domain.access import ALL_DOMAINS, Principal, authorize
from polyfabric.observability.metrics import CONTENT_TYPE_LATEST, coordinator_registry, render
from polyfabric.services.container import Services

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


def _snapshot(services: Services) -> dict[str, Any]:
    """The live state as gauges: read at scrape time only, nothing is kept up to date for it."""
    stats = services.runtime.stats()
    now = time.time()
    states: dict[str, int] = {}
    per_node: dict[str, list[tuple[tuple[str, str], Any]]] = {
        "cpu_percent": [], "memory_percent": [], "memory_used_bytes": [], "disk_percent": [], "load1": [],
        "heartbeat_age_seconds": [], "attempts": [],
    }
    held = stats["by_node"]
    for entry in services.ctx.liveness.entries():
        states[entry.state.value] = states.get(entry.state.value, 0) + 1
        if entry.revoked:
            continue
        labels = (entry.node_id, entry.domain)
        telemetry = entry.telemetry or {}
        for name in ("cpu_percent", "memory_percent", "memory_used_bytes", "disk_percent", "load1"):
            value = telemetry.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                per_node[name].append((labels, value))
        if entry.heartbeats:
            per_node["heartbeat_age_seconds"].append((labels, max(0.0, now - entry.last_seen)))
        per_node["attempts"].append((labels, held.get(entry.node_id, 0)))
    helps = {
        "cpu_percent": "CPU use of the node (percent), from its last heartbeat.",
        "memory_percent": "Memory use of the node (percent), from its last heartbeat.",
        "memory_used_bytes": "Memory in use on the node (bytes), from its last heartbeat.",
        "disk_percent": "Disk use of the node's data dir (percent), from its last heartbeat.",
        "load1": "One-minute load average of the node, from its last heartbeat.",
        "heartbeat_age_seconds": "Seconds since the node's last heartbeat.",
        "attempts": "Attempts the node holds (leased or running).",
    }
    labelled: dict[str, tuple[str, list[str], list[tuple[tuple[str, ...], Any]]]] = {
        f"polyfabric_node_{name}": (helps[name], ["node", "domain"], samples) for name, samples in per_node.items()
    }
    labelled["polyfabric_nodes"] = ("Nodes by lifecycle state.", ["state"],
                                    [((state,), count) for state, count in sorted(states.items())])
    return {
        "scalars": {
            "polyfabric_queue_depth": ("Ready tasks waiting for a node (the leader's queue).", stats["queued"]),
            "polyfabric_queue_unschedulable": ("Queued tasks no node may take as things stand (policies, labels, "
                                               "node states): planned again when those change.",
                                               stats["unschedulable"]),
            "polyfabric_attempts_assigned": ("Attempts leased or running on nodes.", stats["assigned"]),
            "polyfabric_attempts_running": ("Attempts reported running.", stats["running"]),
            "polyfabric_jobs_active": ("Jobs not finished, held in memory by the leader.", stats["jobs"]),
            "polyfabric_coordinator_leader": ("1 if this coordinator leads (runs the controllers).",
                                              1 if services.ctx.leadership.is_leader() else 0),
        },
        "labelled": labelled,
    }


def _registry(request: Request):  # type: ignore[no-untyped-def]
    registry = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        services = request.app.state.services
        registry = request.app.state.metrics_registry = coordinator_registry(lambda: _snapshot(services))
    return registry


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text format 0.0.4)."""
    if not getattr(request.app.state, "metrics_public", False):
        caller = await principal(request)
        authorize(caller, "metrics.read", ALL_DOMAINS)
    body = await run_in_threadpool(render, _registry(request))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/nodes/{ref}/metrics", tags=["nodes"])
def node_metrics(ref: str, request: Request, since: str | None = None,
                 resolution: int | None = Query(default=None, ge=1),
                 limit: int = Query(default=10_000, ge=1, le=100_000),
                 caller: Principal = Depends(principal)) -> dict[str, Any]:
    """A node's telemetry history: `since` is a duration back (90s, 15m, 1h, 7d; default 1h) or unix
    seconds; the resolution is the finest kept that far back unless given (docs/observability.md)."""
    history = request.app.state.services.telemetry_history
    return history.query(caller, ref, since=since, resolution=resolution, limit=limit)  # type: ignore[no-any-return]
