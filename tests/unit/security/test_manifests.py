"""Signed result manifests: a manifest checks against its node's key and result; any change is named."""

from __future__ import annotations

import copy

from polyfabric.domain.ids import node_id_from_public_key
from polyfabric.security.keys import b64e, generate_private_key, public_key_raw
from polyfabric.security.manifests import check_manifest, inputs_digest, make_manifest, result_digest, verify_bundle


def _bundle():
    key = generate_private_key()
    raw = public_key_raw(key)
    node = node_id_from_public_key(raw)
    result = {"mean": 1.5, "items": [1, 2], "name": "ünïcode"}
    manifest = make_manifest(key, job_id="j-1", task_id="t-1", key="work[0]", attempt=1, node_id=node,
                             status="succeeded", exit_code=0,
                             inputs_sha256=inputs_digest(["python3"], None, {}, {"A": "1"}, None, ["k"]),
                             result_sha256=result_digest(result), started_at=1.0, finished_at=2.0)
    bundle = {"job_id": "j-1", "nodes": {node: b64e(raw)},
              "tasks": [{"task_id": "t-1", "key": "work[0]", "attempt": 1, "node_id": node, "result": result,
                         "manifest": manifest}]}
    return bundle, raw, node


def test_a_genuine_bundle_verifies():
    bundle, raw, node = _bundle()
    assert verify_bundle(bundle) == {"ok": True, "job_id": "j-1", "checked": 1, "tasks": 1, "problems": []}
    task = bundle["tasks"][0]
    assert check_manifest(task["manifest"], raw, node_id=node, task_id="t-1", attempt=1, result=task["result"]) is None


def test_a_changed_result_or_manifest_or_key_is_detected_and_named():
    bundle, _, node = _bundle()
    cases = {
        "result altered": lambda b: b["tasks"][0]["result"].update(mean=2.5),
        "manifest altered or forged": lambda b: b["tasks"][0]["manifest"].update(finished_at=3.0),
        "not this node's key": lambda b: b["nodes"].update({node: b64e(public_key_raw(generate_private_key()))}),
        "no signed manifest": lambda b: b["tasks"][0].update(manifest=None),
    }
    for expected, change in cases.items():
        broken = copy.deepcopy(bundle)
        change(broken)
        report = verify_bundle(broken)
        assert not report["ok"], expected
        assert any(expected in p["problem"] for p in report["problems"]), (expected, report)
        assert all(p.get("key") in ("work[0]", None) for p in report["problems"])


def test_a_manifest_for_another_attempt_does_not_pass():
    bundle, raw, node = _bundle()
    task = bundle["tasks"][0]
    problem = check_manifest(task["manifest"], raw, node_id=node, task_id="t-1", attempt=2, result=task["result"])
    assert problem is not None and "attempt" in problem
