"""The audit chain, end to end: `polyfabric audit verify` against a live coordinator whose database
is tampered with by hand (SQL), offline verification of an export, and `audit ls` filters.

Each tampering test restores the rows it touched, so the chain is intact again for the next one.
The offline test stops the coordinator and so runs last.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from polyfabric.store.tables import audit_records
from polyfabric.testing import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def history(fabric) -> dict:
    """Some history worth auditing: tokens, a node that joins and is cordoned and uncordoned."""
    fabric.api_token("viewer", ["test"], name="auditor")
    token = fabric.join_token(uses=2)
    agent = fabric.agent("audit-node", join_token=token["token"])
    node_id = fabric.wait_state(agent, "active")["id"]
    fabric.admin.post(f"/v1/nodes/{node_id}/cordon", {"reason": "audit test"})
    fabric.admin.post(f"/v1/nodes/{node_id}/uncordon", {"reason": "audit test done"})
    fabric.admin.post("/v1/domains", {"name": "other", "description": "a second domain"})
    fabric.join_token("other")
    return {"node_id": node_id, "token_id": token["id"]}


def _verify(fabric, *args: str) -> tuple[int, dict]:
    result = fabric.cli("audit", "verify", "--json", *args)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, (json.loads(result.stdout) if result.stdout.strip() else {})


def _rows(fabric, *seqs: int) -> list[dict]:
    with fabric.engine.connect() as conn:
        rows = conn.execute(sa.select(audit_records).where(audit_records.c.seq.in_(seqs))).mappings().all()
    return [dict(r) for r in rows]


def _middle(fabric) -> int:
    tip = fabric.audit_tip()
    assert tip >= 8, f"the chain is too short to tamper with: {tip}"
    return tip // 2


@pytest.fixture
def restore(fabric) -> Iterator[list[dict]]:
    """Rows a test saves here are put back exactly as they were; then the chain must verify again."""
    saved: list[dict] = []
    yield saved
    if saved:
        seqs = sorted({r["seq"] for r in saved} | {-1})
        with fabric.engine.begin() as conn:
            conn.execute(audit_records.delete().where(audit_records.c.seq.in_(seqs)))
            conn.execute(audit_records.insert(), saved)
    code, report = _verify(fabric)
    assert code == 0 and report["ok"], report


def test_verify_exits_0_on_an_intact_chain(fabric, history):
    # Wait for the coordinator to sign a head, so the signatures are checked too.
    wait_until(lambda: fabric.admin.get("/v1/audit/verify")["heads_checked"] >= 1, timeout=15,
               message="a signed audit head")
    code, report = _verify(fabric)
    assert code == 0, report
    assert report["ok"] is True and report["first_bad_seq"] is None and report["problem"] is None
    assert report["records_checked"] >= 8 and report["heads_checked"] >= 1

    plain = fabric.cli("audit", "verify")
    assert plain.returncode == 0 and plain.stdout.startswith("audit chain intact: "), plain.stdout


def test_a_record_edited_in_the_database_is_named_by_seq(fabric, history, restore):
    seq = _middle(fabric)
    restore.extend(_rows(fabric, seq))
    with fabric.engine.begin() as conn:
        updated = conn.execute(sa.text("UPDATE audit_records SET cause = 'forged' WHERE seq = :seq"), {"seq": seq})
        assert updated.rowcount == 1

    code, report = _verify(fabric)
    assert code == 1
    assert report["ok"] is False and report["first_bad_seq"] == seq
    assert report["problem"] == f"record {seq}: hash does not match its contents (altered)"

    plain = fabric.cli("audit", "verify")
    assert plain.returncode == 1
    assert plain.stdout.strip().startswith(f"audit chain BROKEN at record {seq}: ")
    # The coordinator's own check agrees.
    server = fabric.admin.get("/v1/audit/verify")
    assert server["ok"] is False and server["first_bad_seq"] == seq


def test_a_deleted_middle_record_is_detected(fabric, history, restore):
    seq = _middle(fabric)
    restore.extend(_rows(fabric, seq))
    with fabric.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_records WHERE seq = :seq"), {"seq": seq})

    code, report = _verify(fabric)
    assert code == 1 and report["first_bad_seq"] == seq
    assert f"expected seq {seq}, found {seq + 1}" in report["problem"]


def test_two_records_with_swapped_seq_are_detected(fabric, history, restore):
    first = _middle(fabric)
    second = first + 1
    restore.extend(_rows(fabric, first, second))
    with fabric.engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_records SET seq = -1 WHERE seq = :s"), {"s": first})
        conn.execute(sa.text("UPDATE audit_records SET seq = :a WHERE seq = :b"), {"a": first, "b": second})
        conn.execute(sa.text("UPDATE audit_records SET seq = :b WHERE seq = -1"), {"b": second})

    code, report = _verify(fabric)
    assert code == 1 and report["first_bad_seq"] == first, report
    assert report["problem"].startswith(f"record {first}: ")


def test_audit_ls_filters(fabric, history):
    node_id = history["node_id"]
    everything = fabric.cli_json("audit", "ls", "--limit", "10000")
    assert [r["seq"] for r in everything] == list(range(1, len(everything) + 1))

    about_node = fabric.cli_json("audit", "ls", "--node", node_id)
    assert about_node and {r["subject"] for r in about_node} == {f"node:{node_id}"}
    assert {"node.registered", "node.transition"} <= {r["action"] for r in about_node}

    transitions = fabric.cli_json("audit", "ls", "--node", node_id, "--kind", "node.transition")
    assert [(r["details"]["from"], r["details"]["to"]) for r in transitions][:3] == [
        ("pending", "active"), ("active", "cordoned"), ("cordoned", "active")]
    assert transitions[1]["actor"] == "token:admin" and transitions[1]["cause"] == "audit test"

    tokens = fabric.cli_json("audit", "ls", "--kind", "token.created", "--limit", "10000")
    assert tokens and {r["action"] for r in tokens} == {"token.created"}
    family = fabric.cli_json("audit", "ls", "--kind", "node", "--limit", "10000")
    assert {r["action"].split(".")[0] for r in family} == {"node"}
    assert {"node.registered", "node.transition"} <= {r["action"] for r in family}

    # --since: a duration, and an ISO time between two records.
    assert len(fabric.cli_json("audit", "ls", "--since", "1h", "--limit", "10000")) >= len(everything)
    before = fabric.audit_tip()
    cut = time.time()
    wait_until(lambda: time.time() > cut + 0.01, timeout=1, interval=0.005, message="the clock to move")
    fabric.admin.post("/v1/domains", {"name": fabric.unique("since"), "description": ""})
    iso = datetime.datetime.fromtimestamp(cut).isoformat()
    recent = fabric.cli_json("audit", "ls", "--since", iso, "--limit", "10000")
    assert recent and all(r["seq"] > before and r["at"] >= cut for r in recent)
    assert "domain.created" in {r["action"] for r in recent}

    # The table form and a bad --since are readable too.
    table = fabric.cli("audit", "ls", "--node", node_id, "--kind", "node.transition")
    assert table.returncode == 0 and "active -> cordoned (operator)" in table.stdout
    bad = fabric.cli("audit", "ls", "--since", "yesterday-ish")
    assert bad.returncode != 0 and "--since" in bad.stderr and "Traceback" not in bad.stderr


def test_export_verifies_offline_after_the_coordinator_is_stopped(fabric, history, tmp_path: Path):
    export = tmp_path / "chain.jsonl"
    wait_until(lambda: fabric.admin.get("/v1/audit/verify")["heads_checked"] >= 1, timeout=15,
               message="a signed audit head")
    result = fabric.cli("audit", "export", "-o", str(export))
    assert result.returncode == 0, result.stderr
    lines = export.read_bytes().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "polyfabric-audit/1" and header["public_key"]
    assert any(json.loads(line).get("type") == "head" for line in lines[1:])

    # No coordinator from here on: verification needs only the file.
    fabric.coordinator.stop()
    assert not fabric.coordinator.alive()

    code, report = _verify_offline(fabric, export)
    assert code == 0, report
    assert report["ok"] and report["records_checked"] == sum(b'"type":"record"' in line for line in lines)
    assert report["heads_checked"] >= 1

    # One byte changed inside a record's cause: the file is still valid JSON, the chain is not.
    index, target = next((i, line) for i, line in enumerate(lines) if b'"cause":"audit test"' in line)
    seq = json.loads(target)["seq"]
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(b"\n".join([*lines[:index], target.replace(b'"cause":"audit test"', b'"cause":"audit Test"'),
                                   *lines[index + 1:]]) + b"\n")
    code, report = _verify_offline(fabric, edited)
    assert code == 1 and report["first_bad_seq"] == seq, report
    assert report["problem"] == f"record {seq}: hash does not match its contents (altered)"

    # A record line removed from the middle is detected as well.
    records = [i for i, line in enumerate(lines) if b'"type":"record"' in line]
    cut_index = records[len(records) // 2]
    cut_seq = json.loads(lines[cut_index])["seq"]
    shortened = tmp_path / "shortened.jsonl"
    shortened.write_bytes(b"\n".join(lines[:cut_index] + lines[cut_index + 1:]) + b"\n")
    code, report = _verify_offline(fabric, shortened)
    assert code == 1 and report["first_bad_seq"] == cut_seq, report

    # Garbage is a malformed export (exit 2), reported in one line.
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(lines[0] + b"\n{not json\n")
    result = fabric.cli("audit", "verify", "--file", str(garbage), token=None, url=None)
    assert result.returncode == 2 and "the export is malformed: line 2" in result.stderr
    assert "Traceback" not in result.stderr


def _verify_offline(fabric, path: Path) -> tuple[int, dict]:
    result = fabric.cli("audit", "verify", "--file", str(path), "--json", token=None, url=None)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, (json.loads(result.stdout) if result.stdout.strip() else {})
