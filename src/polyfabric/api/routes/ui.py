"""The web UI: static files under /ui, and the one read the UI needs that the API lacked.

The UI is a set of plain ES modules (src/polyfabric/ui/static) that call the public /v1 API with
the token a person signs in with, so it shows only what that token may see. The files themselves
hold no data and are served without authentication, with a strict Content-Security-Policy (no
inline scripts or styles, no other origins).

`GET /v1/jobs/{id}/graph` is the workflow's DAG by task (a foreach task is one step with its items
counted by status), so a 10,000-task workflow is drawn from a few dozen rows, not 10,000;
`GET /v1/nodes/{ref}/tasks` is what a node runs now, for its page;
`GET /v1/telemetry/recent?node=...` is the recent CPU and memory of one page of nodes (the nodes
table's sparklines: one read per page, not one per node); `GET /v1/topology/latency?level=zone` is
the median estimated round trip between the nodes of each pair of regions, zones or racks, from a
bounded sample of each group's network coordinates.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal, authorize
from polyfabric.domain.errors import NotFound, ValidationError
from polyfabric.domain.topology import LATENCY_SAMPLE, LEVELS, latency_matrix
from polyfabric.services.runtime import job_out

__all__ = ["STATIC_DIR", "router"]

STATIC_DIR = (Path(__file__).resolve().parents[2] / "ui" / "static").resolve()

_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_HEADERS = {"content-security-policy": _CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
            "cache-control": "no-cache"}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml",
          ".json": "application/json"}

# How the statuses of a step's instances add up to one status for the step (first match wins).
_ORDER = ("failed", "running", "leased", "preempted", "ready", "waiting", "cancelled", "succeeded", "skipped")

router = APIRouter(tags=["ui"])


@router.get("/ui", include_in_schema=False)
async def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/{path:path}", include_in_schema=False)
async def ui_file(path: str) -> Response:
    """A static file; any other path is the single page (it routes on the URL's #fragment)."""
    target = (STATIC_DIR / path).resolve() if path else STATIC_DIR / "index.html"
    if not target.is_relative_to(STATIC_DIR) or not target.is_file():
        if "." in path.rsplit("/", 1)[-1]:
            return Response("not found", status_code=404, media_type="text/plain", headers=_HEADERS)
        target = STATIC_DIR / "index.html"
    return FileResponse(target, media_type=_TYPES.get(target.suffix, "application/octet-stream"), headers=_HEADERS)


def _depends(body: Any) -> list[str]:
    deps = body.get("depends_on", []) if isinstance(body, dict) else []
    if isinstance(deps, str):
        return [deps]
    return [str(d) for d in deps] if isinstance(deps, list) else []


def step_status(counts: dict[str, int], group_status: str | None) -> str:
    """One status for a step: the group record's own status when it is final, else the most
    telling of its items' (a failure, then anything running, then waiting ones)."""
    if group_status in ("succeeded", "failed", "cancelled", "skipped"):
        return group_status
    for status in _ORDER:
        if counts.get(status):
            return status
    return group_status or "waiting"


def job_graph(services: Any, caller: Principal, job_id: str) -> dict[str, Any]:
    with services.ctx.store.unit_of_work(readonly=True) as uow:
        row = uow.jobs.get_job(job_id)
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        authorize(caller, "job.read", row["domain"])
        document = row["document"]
        # The events seq first: a change after it is in the events a reader follows from there (and
        # may be in the counts too: applying it twice is harmless); none is lost between the two.
        events_next = uow.jobs.last_event_seq(job_id)
        own_rows, count_rows = uow.jobs.step_counts(job_id)
    counts: dict[str, Counter[str]] = {}
    own = {t["task"]: t for t in own_rows}
    for c in count_rows:
        counts.setdefault(c["task"], Counter())[c["status"]] += c["count"]
    raw = document.get("tasks") if isinstance(document, dict) else None
    names = list(raw) if isinstance(raw, dict) else sorted(set(counts) | set(own))
    steps = []
    for name in names:
        body = raw.get(name) if isinstance(raw, dict) else None
        record = own.get(name)
        by_status = dict(counts.get(name, {}))
        is_foreach = bool(record["is_group"]) if record else bool(isinstance(body, dict) and body.get("foreach"))
        steps.append({
            "name": name, "depends_on": _depends(body), "foreach": is_foreach,
            "items": sum(by_status.values()) if is_foreach else None, "counts": by_status,
            "status": step_status(by_status, record["status"] if record else None),
            "task_id": record["id"] if record and not record["is_group"] else None,
        })
    total: Counter[str] = Counter()
    for by in counts.values():
        total.update(by)
    return {"job": job_out(row, dict(total)), "steps": steps, "events_next": events_next}


@router.get("/v1/jobs/{job_id}/graph", tags=["jobs"])
async def get_job_graph(job_id: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    """The workflow's DAG by task: each step's dependencies, whether it fans out, its instances
    counted by status, and one status for the step (for drawing; no per-item rows); `events_next`:
    follow `/v1/jobs/{id}/events?after=` from there to keep it current."""
    return await run_in_threadpool(job_graph, request.app.state.services, caller, job_id)


@router.get("/v1/nodes/{ref}/tasks", tags=["nodes"])
def node_tasks(ref: str, request: Request, caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    """The attempts the node holds now (leased or running), limited to jobs of the caller's domains.
    Read from the leading coordinator's memory: another coordinator answers an empty list."""
    services = request.app.state.services
    node, _ = services.nodes.get(caller, ref)
    authorize(caller, "job.read")
    held = [a for a in services.runtime.assignments_on(node.id) if caller.has_domain(a["domain"])]
    return sorted(held, key=lambda a: (a["job_id"], a["key"]))


# -- the nodes table's sparklines -------------------------------------------------------------------

@router.get("/v1/telemetry/recent", tags=["nodes"])
def telemetry_recent(request: Request, node: list[str] = Query(default=[]), since: str | None = None,
                     caller: Principal = Depends(principal)) -> dict[str, Any]:
    """Recent CPU and memory of up to 100 nodes (`?node=ID&node=ID...`; since: a duration back,
    default 15m, at most 24h): per node at most 30 `[at, cpu_percent, memory_percent]` rows, the
    means of the newest 120 stored points at most. Nodes outside the caller's domains, or unknown,
    are left out, as the nodes listing leaves them out."""
    history = request.app.state.services.telemetry_history
    if history is None:
        raise NotFound("this coordinator keeps no telemetry history")
    return history.recent(caller, node, since)


# -- latency between regions, zones and racks --------------------------------------------------------

@router.get("/v1/topology/latency", tags=["topology"])
async def topology_latency(request: Request, level: str = "zone", domain: str | None = None,
                           sample: int = Query(default=LATENCY_SAMPLE, ge=2, le=32),
                           caller: Principal = Depends(principal)) -> dict[str, Any]:
    """The median round trip the network coordinates estimate between the nodes of each pair of
    groups (`level`: region, zone or rack; a zone is named region/zone), from `sample` nodes a group
    and the 30 groups with most nodes. Nodes that have not reported coordinates are not counted."""
    services = request.app.state.services

    def compute() -> dict[str, Any]:
        if level not in LEVELS:
            raise ValidationError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
        rows = services.topology.coordinates(caller, domain=domain)
        return latency_matrix(rows, level, sample)

    return await run_in_threadpool(compute)
