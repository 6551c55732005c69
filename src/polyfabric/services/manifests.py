"""Signed result manifests: checked and stored when a node reports a result; exported per job.

The node signs (security/manifests.py); the coordinator checks the signature against the node's
registered key and the result it reported, stores the manifest with its verdict, and audits a
manifest that does not check. `bundle()` is what `job verify` and `job export` download: the
finished tasks with their results, their manifests and the keys of the nodes that signed them,
so that anyone can check them again without trusting the coordinator.
"""

from __future__ import annotations

from typing import Any

from polyfabric.domain.access import Principal, authorize
from polyfabric.domain.errors import NotFound
from polyfabric.security.keys import b64e
from polyfabric.security.manifests import check_manifest, verify_bundle
from polyfabric.services.context import ServiceContext
from polyfabric.services.ports import AuditEntry

__all__ = ["ManifestService"]

_FINISHED = ("succeeded", "failed")


def manifest_row(event: dict[str, Any], *, node_id: str, public_key: bytes | None, job_id: str,
                 now: float) -> tuple[dict[str, Any], AuditEntry | None]:
    """The stored form of a `finished` event's manifest, with the coordinator's verdict, and the audit
    entry of a manifest that does not check out (the runtime stages both into its group commit)."""
    manifest = dict(event["manifest"])
    problem = (check_manifest(manifest, public_key, node_id=node_id, task_id=event["task_id"],
                              attempt=event["attempt"], result=event.get("result"), job_id=job_id)
               if public_key is not None else f"node {node_id}'s key is unknown")
    signature = str(manifest.pop("signature", ""))[:100]
    row = {"task_id": event["task_id"], "attempt": event["attempt"], "job_id": job_id, "node_id": node_id,
           "manifest": manifest, "signature": signature, "verified": problem is None, "problem": problem,
           "received_at": now}
    audit = None if problem is None else AuditEntry(
        actor=f"node:{node_id}", action="task.manifest_invalid", subject=f"task:{event['task_id']}", cause=problem,
        details={"attempt": event["attempt"], "job": job_id})
    return row, audit


class ManifestService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def bundle(self, principal: Principal, job_id: str) -> dict[str, Any]:
        with self._ctx.store.unit_of_work(readonly=True) as uow:
            job = uow.jobs.get_job(job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            authorize(principal, "job.read", job["domain"])
            manifests = uow.manifests.of_job(job_id)
            tasks, node_ids = [], set()
            for row in uow.jobs.tasks_of(job_id):
                if row["is_group"] or row["status"] not in _FINISHED or not row["node_id"]:
                    continue
                stored = manifests.get((row["id"], row["attempt"]))
                manifest = None
                if stored is not None:
                    manifest = {**stored["manifest"], "signature": stored["signature"]}
                tasks.append({"task_id": row["id"], "key": row["key"], "attempt": row["attempt"],
                              "status": row["status"], "node_id": row["node_id"], "result": row["result"],
                              "manifest": manifest,
                              "coordinator_verified": stored["verified"] if stored else None})
                node_ids.add(row["node_id"])
            nodes = {}
            for node_id in sorted(node_ids):
                node = uow.nodes.get(node_id)
                if node is not None:
                    nodes[node_id] = b64e(node.public_key)
        return {"format": "polyfabric-job-manifests/1", "job_id": job_id, "name": job["name"],
                "domain": job["domain"], "status": job["status"], "exported_at": self._ctx.clock.now(),
                "nodes": nodes, "tasks": tasks}

    def verify(self, principal: Principal, job_id: str) -> dict[str, Any]:
        """The coordinator's own check of a job (the CLI checks the bundle itself)."""
        return verify_bundle(self.bundle(principal, job_id))
