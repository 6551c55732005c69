"""The node owner's policy on the agent (agent/policy.py): answers to offers, the signed decline,
reloads, and running attempts a reloaded policy no longer allows."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography.exceptions import InvalidSignature

from polyfabric.agent.policy import Negotiator
from polyfabric.domain.errors import ValidationError
from polyfabric.domain.policy import answer_bytes
from polyfabric.security.keys import b64d, generate_private_key

NODE = {"id": "n-1", "name": "picky", "domain": "lab", "labels": {}, "state": "active", "cpu": 4000,
        "memory": 1 << 30, "gpus": 0, "slots": 2}


def offer(domain: str, cpu: int = 1000) -> dict:
    return {"task_id": "t-1", "attempt": 1,
            "offer": {"job": {"id": "j-1", "name": "wf", "domain": domain, "labels": {}},
                      "task": {"name": "a", "labels": {}, "cpu": cpu}}}


def negotiator(tmp_path: Path, doc: dict) -> tuple[Negotiator, Path, object]:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    key = generate_private_key()
    return Negotiator(path, lambda: NODE, "n-1", key.sign, clock=lambda: 1_790_000_000.0), path, key


def test_declines_are_signed_and_accepts_are_remembered(tmp_path):
    neg, _path, key = negotiator(tmp_path, {"accept": {"domains": ["lab"]}, "reason": "lab only"})
    assert neg.answer(offer("lab"), ("t-1", 1)) is None
    declined = neg.answer(offer("ops"), ("t-2", 1))
    assert declined is not None and "domain 'ops'" in declined["reason"] and "lab only" in declined["reason"]
    assert declined["policy"] == {"name": "owner", "version": 1}
    answer = declined["answer"]
    assert (answer["node_id"], answer["decision"]) == ("n-1", "decline")
    key.public_key().verify(b64d(declined["signature"]), answer_bytes(answer))  # raises if forged
    with pytest.raises(InvalidSignature):
        key.public_key().verify(b64d(declined["signature"]), answer_bytes({**answer, "reason": "other"}))


def test_reload_changes_new_answers_and_finds_what_it_no_longer_allows(tmp_path):
    neg, path, _key = negotiator(tmp_path, {"accept": {"domains": ["lab", "ops"]}, "on_change": "stop"})
    assert neg.answer(offer("ops"), ("t-1", 1)) is None
    path.write_text(yaml.safe_dump({"accept": {"domains": ["lab"]}, "on_change": "stop"}))
    policy, error = neg.reload()
    assert error is None and policy.version == 2
    stale = neg.no_longer_allowed()
    assert [ident for ident, _ in stale] == [("t-1", 1)] and "v2 no longer allows" in stale[0][1]
    assert neg.answer(offer("ops"), ("t-3", 1)) is not None
    neg.forget(("t-1", 1))
    assert neg.no_longer_allowed() == []


def test_a_bad_file_is_refused_at_start_and_kept_out_on_reload(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("accept: {hours: lunchtime}\n")
    with pytest.raises(ValidationError, match="hours"):
        Negotiator(path, lambda: NODE, "n-1", generate_private_key().sign)
    neg, good, _key = negotiator(tmp_path, {"accept": {"domains": ["lab"]}})
    good.write_text("accept: {domains: lab}\n")
    policy, error = neg.reload()
    assert error is not None and "domains" in error and policy.version == 1


def test_foreign_cpu_share_counts_accepted_offers(tmp_path):
    neg, _path, _key = negotiator(tmp_path, {"accept": {"max_cpu_share": 0.5}})
    assert neg.answer(offer("ops", 1500), ("t-1", 1)) is None
    assert "at most 0.5" in neg.answer(offer("ops", 1000), ("t-2", 1))["reason"]
    assert neg.answer(offer("lab", 3000), ("t-3", 1)) is None  # the node's own domain is not capped
