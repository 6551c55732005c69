"""Per-node telemetry history, downsampled, with bounded retention.

Heartbeats are hot (services/liveness.py): nothing here runs per heartbeat. A pass every
`interval_s` (10 s by default; the leader's observability controller) reads each node's latest
telemetry from the in-memory liveness table and writes, in batched inserts:

    tier      point covers     kept for        what a point is
    raw       interval_s       1 hour          the node's last heartbeat telemetry at the pass
    1 min     60 s             24 hours        the mean of the raw samples in that minute
    10 min    600 s            30 days         the mean of the raw samples in those ten minutes

Raw points are written at every pass; the coarser ones when their bucket closes (their running
means are kept in memory meanwhile). A pass writes in transactions of at most 2,000 rows (one for
up to 2,000 nodes), so that the job runtime's commits never queue behind one long insert on
SQLite's single writer. Points older than their tier's retention are deleted once a minute. Only
nodes heard from since the previous pass get points: a silent node's history has a gap, not
repeated stale values. A coordinator that stops leading loses the open coarse buckets (at most
10 minutes of the coarsest tier); the raw points are already stored.

Values per point: cpu_percent, memory_percent, memory_used_bytes, disk_percent, load1,
gpu_percent (mean over the node's GPUs) and gpu_memory_used_bytes (sum).
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from polyfabric.domain.access import Principal, authorize
from polyfabric.domain.errors import NotFound, ValidationError
from polyfabric.domain.ids import NODE_ID_RE
from polyfabric.observability import metrics as obs
from polyfabric.services.context import ServiceContext

__all__ = ["METRICS", "Tier", "TelemetryHistory", "downsample", "extract", "parse_since"]

WRITE_BATCH = 2000  # rows per transaction

METRICS = ("cpu_percent", "memory_percent", "memory_used_bytes", "disk_percent", "load1", "gpu_percent",
           "gpu_memory_used_bytes")


@dataclass(frozen=True, slots=True)
class Tier:
    resolution: int  # seconds one point covers
    retention_s: float  # how long its points are kept


def default_tiers(interval_s: float = 10.0) -> tuple[Tier, ...]:
    raw = max(1, round(interval_s))
    return (Tier(raw, 3600.0), Tier(60, 86400.0), Tier(600, 30 * 86400.0))


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def extract(telemetry: dict[str, Any]) -> dict[str, float | None]:
    """The history's values from one heartbeat's telemetry (agent/telemetry.py); None where absent."""
    out: dict[str, float | None] = {name: _finite(telemetry.get(name)) for name in METRICS[:5]}
    gpus = [g for g in telemetry.get("gpus") or [] if isinstance(g, dict)]
    utils = [u for u in (_finite(g.get("util_percent")) for g in gpus) if u is not None]
    memory = [m for m in (_finite(g.get("memory_used_bytes")) for g in gpus) if m is not None]
    out["gpu_percent"] = sum(utils) / len(utils) if utils else None
    out["gpu_memory_used_bytes"] = sum(memory) if memory else None
    return out


_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str | float | None, now: float, default_s: float = 3600.0) -> float:
    """`since` as an absolute time: a duration back from now ("90s", "15m", "1h", "7d") or
    unix seconds (a number larger than ten years)."""
    if value is None or value == "":
        return now - default_s
    if isinstance(value, int | float):
        number = float(value)
        unit = ""
    else:
        match = _SINCE.match(value)
        if match is None:
            raise ValidationError(f"since {value!r} is neither a duration (30s, 15m, 1h, 7d) nor unix seconds")
        number, unit = float(match.group(1)), match.group(2)
    if not unit and number > 10 * 365 * 86400:
        return number  # an absolute time
    return now - number * _UNITS[unit]


# What `recent` (the UI nodes table's sparklines) reads and answers, at most:
RECENT_NODES = 100  # ids one read may name (the table shows 50 a page)
RECENT_ROWS = 120  # stored points read per node at most: the newest ones
RECENT_POINTS = 30  # points per node in the answer (means of consecutive stored points)
RECENT_SPAN_S = 86400.0


def downsample(points: list[dict[str, Any]], keys: tuple[str, ...], most: int) -> list[list[float | None]]:
    """`[at, key1, key2, ...]` rows, at most `most` of them: consecutive points averaged together
    (a key's mean over the points that have it; None where none has), values to 0.1."""
    if not points:
        return []
    size = math.ceil(len(points) / most)
    out: list[list[float | None]] = []
    for first in range(0, len(points), size):
        chunk = points[first:first + size]
        row: list[float | None] = [chunk[-1]["at"]]
        for key in keys:
            values = [p[key] for p in chunk if isinstance(p.get(key), int | float)]
            row.append(round(sum(values) / len(values), 1) if values else None)
        out.append(row)
    return out


@dataclass
class _Bucket:
    start: int
    samples: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, values: dict[str, float | None]) -> None:
        self.samples += 1
        for name, value in values.items():
            if value is not None:
                self.sums[name] = self.sums.get(name, 0.0) + value
                self.counts[name] = self.counts.get(name, 0) + 1

    def point(self, node_id: str, resolution: int) -> dict[str, Any]:
        row: dict[str, Any] = {"node_id": node_id, "resolution": resolution, "at": self.start,
                               "samples": self.samples}
        for name in METRICS:
            count = self.counts.get(name, 0)
            row[name] = self.sums[name] / count if count else None
        return row


class TelemetryHistory:
    def __init__(self, ctx: ServiceContext, interval_s: float = 10.0, tiers: tuple[Tier, ...] | None = None) -> None:
        self._ctx = ctx
        self.interval_s = interval_s
        self.tiers = tiers or default_tiers(interval_s)
        self._lock = threading.Lock()
        self._open: dict[tuple[int, str], _Bucket] = {}  # (resolution, node) -> the coarse bucket filling up
        self._seen: dict[str, float] = {}  # node -> the last_seen its previous point was taken at
        self._pruned_at = -math.inf

    def configure(self, interval_s: float) -> None:
        """Set the raw interval (the coordinator's --telemetry-interval) before the first pass."""
        with self._lock:
            self.interval_s = interval_s
            self.tiers = default_tiers(interval_s)
            self._open.clear()

    # -- writing ---------------------------------------------------------------------------

    def record(self, now: float | None = None) -> int:
        """One pass: sample every node heard from since the last pass, close the coarse buckets that
        ended, write it all in one transaction; prune expired points once a minute. Returns the
        number of points written."""
        now = self._ctx.clock.now() if now is None else now
        rows: list[dict[str, Any]] = []
        with self._lock:
            raw, coarse = self.tiers[0], self.tiers[1:]
            for entry in self._ctx.liveness.entries():
                if entry.heartbeats == 0 or entry.revoked or self._seen.get(entry.node_id) == entry.last_seen:
                    continue
                self._seen[entry.node_id] = entry.last_seen
                values = extract(entry.telemetry or {})
                rows.append({"node_id": entry.node_id, "resolution": raw.resolution,
                             "at": int(now // raw.resolution) * raw.resolution, "samples": 1, **values})
                for tier in coarse:
                    start = int(now // tier.resolution) * tier.resolution
                    key = (tier.resolution, entry.node_id)
                    bucket = self._open.get(key)
                    if bucket is not None and bucket.start != start:
                        rows.append(bucket.point(entry.node_id, tier.resolution))
                        bucket = None
                    if bucket is None:
                        bucket = self._open[key] = _Bucket(start)
                    bucket.add(values)
            for (resolution, node_id), bucket in list(self._open.items()):  # silent nodes' buckets end too
                if bucket.start + resolution <= now:
                    rows.append(bucket.point(node_id, resolution))
                    del self._open[(resolution, node_id)]
            prune = now - self._pruned_at >= 60.0
            if prune:
                self._pruned_at = now
            tiers = self.tiers
        # Several transactions of at most WRITE_BATCH rows: on SQLite a writer holds the one write
        # lock, and the job runtime's group commits should not wait behind 10,000 inserts.
        for first in range(0, len(rows), WRITE_BATCH):
            with self._ctx.store.unit_of_work() as uow:
                uow.telemetry.add_points(rows[first:first + WRITE_BATCH])
                uow.commit()
        if prune:
            with self._ctx.store.unit_of_work() as uow:
                for tier in tiers:
                    uow.telemetry.prune(tier.resolution, now - tier.retention_s)
                uow.commit()
            for row in rows:
                obs.TELEMETRY_POINTS.labels(str(row["resolution"])).inc()
        return len(rows)

    # -- reading ---------------------------------------------------------------------------

    def resolution_for(self, span_s: float) -> int:
        """The finest tier whose retention covers the span asked for."""
        for tier in self.tiers:
            if span_s <= tier.retention_s:
                return tier.resolution
        return self.tiers[-1].resolution

    def query(self, principal: Principal, ref: str, *, since: str | float | None = None,
              resolution: int | None = None, limit: int = 10_000) -> dict[str, Any]:
        """A node's history from `since` (default: the last hour) at `resolution` (default: the
        finest tier that keeps that far back)."""
        now = self._ctx.clock.now()
        start = parse_since(since, now)
        known = {t.resolution for t in self.tiers}
        if resolution is not None and resolution not in known:
            raise ValidationError(f"resolution {resolution}s is not kept; resolutions: "
                                  f"{', '.join(str(r) for r in sorted(known))}")
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            node = uow.nodes.get(ref) if NODE_ID_RE.match(ref) else None
            node = node or uow.nodes.by_name(ref)
            if node is None:
                raise NotFound(f"no node with id or name {ref!r}")
            authorize(principal, "node.read", node.domain)
            chosen = resolution or self.resolution_for(now - start)
            points = uow.telemetry.points(node.id, chosen, start, limit)
        return {"node_id": node.id, "name": node.name, "resolution_s": chosen, "since": start,
                "retention": [{"resolution_s": t.resolution, "kept_s": t.retention_s} for t in self.tiers],
                "points": [{k: v for k, v in p.items() if k not in ("node_id", "resolution")} for p in points]}

    def recent(self, principal: Principal, ids: list[str], since: str | None) -> dict[str, Any]:
        """Recent CPU and memory of one page of nodes (the UI's nodes table): per node at most
        RECENT_POINTS `[at, cpu_percent, memory_percent]` rows, the means of its newest RECENT_ROWS
        stored points. Nodes outside the caller's domains, or unknown, are left out, as the nodes
        listing leaves them out."""
        authorize(principal, "node.read")
        if len(ids) > RECENT_NODES:
            raise ValidationError(f"at most {RECENT_NODES} nodes a read, got {len(ids)}")
        wanted = list(dict.fromkeys(ids))
        bad = [i for i in wanted if not NODE_ID_RE.match(i)]
        if bad:
            raise ValidationError(f"not a node id: {bad[0][:80]!r}")
        now = self._ctx.clock.now()
        start = max(parse_since(since or "15m", now), now - RECENT_SPAN_S)
        resolution = self.resolution_for(now - start)
        start = max(start, now - RECENT_ROWS * resolution)  # the newest RECENT_ROWS points at most
        keys = ("cpu_percent", "memory_percent")
        nodes: dict[str, Any] = {}
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            for node_id in wanted:
                node = uow.nodes.get(node_id)
                if node is None or not principal.has_domain(node.domain):
                    continue
                points = uow.telemetry.points(node_id, resolution, start, RECENT_ROWS + 1)
                nodes[node_id] = downsample(points, keys, RECENT_POINTS)
        return {"since": start, "resolution_s": resolution, "fields": ["at", *keys], "nodes": nodes}
