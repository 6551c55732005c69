"""Signed result manifests: what a node attests about one attempt it ran, and how anyone checks it.

The agent builds the manifest when an attempt ends and signs its canonical JSON (sorted keys, no
spaces, UTF-8) with the node's Ed25519 key; it travels with the `finished` event. The coordinator
checks it and stores it next to the result; `polyfabric job verify` checks every one of a job again
on the client, from the API or offline from `job export`. Node ids are derived from node keys
(`n-` + base32 of SHA-256), so a bundle cannot swap a node's key without changing its id.

Fields: v, job_id, task_id, key, attempt, node_id, status, exit_code, inputs_sha256 (of the lease:
command, function, args, env, workdir and the names of its secrets), result_sha256 (of the result
JSON), started_at, finished_at.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.ids import node_id_from_public_key
from polyfabric.security.keys import Ed25519PrivateKey, b64d, b64e
from polyfabric.security.signing import sign_bytes, verify_bytes

__all__ = ["canonical", "check_manifest", "inputs_digest", "make_manifest", "result_digest", "verify_bundle"]

FIELDS = ("v", "job_id", "task_id", "key", "attempt", "node_id", "status", "exit_code", "inputs_sha256",
          "result_sha256", "started_at", "finished_at")


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def result_digest(result: Any) -> str:
    return hashlib.sha256(canonical(result)).hexdigest()


def inputs_digest(command: Any, function: Any, args: Any, env: Any, workdir: Any, secret_names: Any = ()) -> str:
    return hashlib.sha256(canonical({"command": list(command) if command is not None else None,
                                     "function": function, "args": args or {}, "env": env or {},
                                     "workdir": workdir, "secrets": sorted(secret_names or ())})).hexdigest()


def make_manifest(private_key: Ed25519PrivateKey, **fields: Any) -> dict[str, Any]:
    """The manifest with its signature (`signature`: base64url) added."""
    body = {"v": 1, **{k: fields.get(k) for k in FIELDS if k != "v"}}
    return {**body, "signature": b64e(sign_bytes(private_key, canonical(body)))}


def check_manifest(manifest: Any, public_key_raw: bytes, *, node_id: str, task_id: str, attempt: int,
                   result: Any, job_id: str | None = None) -> str | None:
    """None when the manifest is signed by that node and matches the attempt and result; else why not."""
    if not isinstance(manifest, dict):
        return "no signed manifest"
    body = {k: manifest.get(k) for k in FIELDS}
    try:
        signature = b64d(str(manifest.get("signature") or ""))
    except ValidationError:
        return "the signature is not base64url"
    if not verify_bytes(public_key_raw, canonical(body), signature):
        return f"the signature does not verify under node {node_id}'s key (manifest altered or forged)"
    if body["node_id"] != node_id:
        return f"signed by node {node_id} but names node {body['node_id']}"
    if body["task_id"] != task_id or body["attempt"] != attempt:
        return f"it is for task {body['task_id']} attempt {body['attempt']}, not {task_id} attempt {attempt}"
    if job_id is not None and body["job_id"] != job_id:
        return f"it is for job {body['job_id']}, not {job_id}"
    if body["result_sha256"] != result_digest(result):
        return "the stored result does not match the signed result hash (result altered)"
    return None


def verify_bundle(bundle: dict[str, Any]) -> dict[str, Any]:
    """Check a job's export (GET /v1/jobs/{id}/manifests): every finished task's final attempt has a
    manifest signed by the node that ran it, matching its stored result. Pure apart from crypto."""
    keys: dict[str, bytes] = {}
    problems: list[dict[str, Any]] = []
    for node_id, key_b64 in (bundle.get("nodes") or {}).items():
        try:
            raw = b64d(key_b64)
            if node_id_from_public_key(raw) != node_id:
                problems.append({"node_id": node_id, "problem": "the key in the bundle is not this node's key"})
                continue
            keys[node_id] = raw
        except ValidationError as exc:
            problems.append({"node_id": node_id, "problem": f"malformed key: {exc.message}"})
    checked = 0
    for task in bundle.get("tasks") or []:
        node_id = task.get("node_id")
        where = {"task_id": task.get("task_id"), "key": task.get("key"), "attempt": task.get("attempt"),
                 "node_id": node_id}
        if task.get("manifest") is None:
            problems.append({**where, "problem": "no signed manifest for this result"})
            continue
        checked += 1
        raw = keys.get(node_id or "")
        if raw is None:
            problems.append({**where, "problem": f"the key of node {node_id} is not in the bundle"})
            continue
        problem = check_manifest(task["manifest"], raw, node_id=node_id, task_id=task.get("task_id"),
                                 attempt=task.get("attempt"), result=task.get("result"),
                                 job_id=bundle.get("job_id"))
        if problem is not None:
            problems.append({**where, "problem": problem})
    return {"ok": not problems, "job_id": bundle.get("job_id"), "checked": checked,
            "tasks": len(bundle.get("tasks") or []), "problems": problems}
