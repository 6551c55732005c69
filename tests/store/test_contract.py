"""The SQL store's contract, on SQLite and PostgreSQL (no processes): migrations, repository round
trips, transactions, and the two places where concurrent writers must not break invariants — the
audit chain (one line of consecutive seqs) and join token use counts (atomic)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from polyfabric.coordinator.bootstrap import UuidIds
from polyfabric.domain import audit as chain
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.errors import Conflict, NotAuthenticated
from polyfabric.domain.node_states import NodeState
from polyfabric.domain.nodes import Node
from polyfabric.domain.resources import Resources
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.security.signing import sign_bytes
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.nodes import Registration
from polyfabric.services.ports import ApiTokenRow, AuditEntry, AuditQuery, JoinTokenRow
from polyfabric.store import migrate
from polyfabric.store.engine import create_engine
from polyfabric.store.tables import metadata
from polyfabric.store.unit_of_work import SqlStore
from polyfabric.testing import FakeClock
from polyfabric.testing.signer import TestSigner

NOW = 1_800_000_000.0
ADMIN = Principal("token", "at-admin", "admin", Role.ADMIN, ("*",))


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    store = SqlStore(db_url)
    migrate.upgrade(store.engine)
    yield store
    store.close()


def _race(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(i) in `count` threads released together; results (or exceptions) by index."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[index] = work(index)
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a writer is stuck"
    return results


def _node(node_id: str = "n-aaaaaaaaaaaaaaaaaaaa", name: str = "node-1", **changes: Any) -> Node:
    node = Node(id=node_id, name=name, domain="d1", public_key=bytes(range(32)),
                labels={"zone": "a"}, capacity=Resources(cpu_millis=2000, memory_bytes=1 << 30, slots=2),
                state=NodeState.PENDING, state_since=NOW, registered_at=NOW, agent_version="1.0")
    return node.with_changes(**changes)


def _join_row(token_id: str = "jt-1", token_hash: str = "h" * 64, uses_allowed: int | None = 1,
              **changes: Any) -> JoinTokenRow:
    row = JoinTokenRow(id=token_id, token_hash=token_hash, prefix="pfj_abcdefgh", domain="d1", description="",
                       created_at=NOW, created_by="token:admin", expires_at=None, uses_allowed=uses_allowed,
                       uses=0, revoked_at=None)
    return JoinTokenRow(**{**{f: getattr(row, f) for f in row.__slots__}, **changes})


def _seed_domain(store: SqlStore, name: str = "d1") -> None:
    with store.unit_of_work() as uow:
        uow.domains.add(name, "a domain", NOW, "token:admin")
        uow.commit()


# -- migrations --------------------------------------------------------------------------------


def test_migrations_bring_an_empty_database_to_head_and_match_the_tables(db_url: str):
    engine = create_engine(db_url)
    try:
        assert migrate.current_revision(engine) is None
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(context, metadata)
        assert diffs == [], f"the migrated schema differs from polyfabric.store.tables: {diffs}"
        migrate.upgrade(engine)  # a second run (every coordinator start) is a no-op
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()


def _downgrade(store: SqlStore, revision: str) -> None:
    """Migrate the store's database down to `revision` (the test upgrades it again after)."""
    from alembic import command

    config = migrate._config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def test_the_finding_sets_migration_goes_back_without_losing_a_decisions_findings(store: SqlStore):
    """Downgrading 0014 puts each decision's findings back inline; upgrading again reads them."""
    import sqlalchemy as sa

    findings = [{"scope": "network", "policy": "eu-only", "version": 3, "allowed": True}]
    with store.unit_of_work() as uow:
        uow.policies.add_decisions([_decision("j-down", findings, task_id="t-1", attempt=1)])
        uow.commit()
    _downgrade(store, "0013")
    try:
        with store.engine.connect() as conn:
            assert "policy_finding_sets" not in sa.inspect(conn).get_table_names()
            inline = conn.execute(sa.text("SELECT findings FROM policy_decisions WHERE job_id = 'j-down'")).scalar()
        assert (json.loads(inline) if isinstance(inline, str) else inline) == findings
    finally:
        migrate.upgrade(store.engine)
    with store.unit_of_work(readonly=True) as uow:
        assert uow.policies.decisions(job_id="j-down")[0]["findings"] == findings


def _job_with_tasks(uow: Any, job_id: str, task_ids: list[str], seq: int) -> None:
    """A job and its task rows, as the runtime writes them (what attempts hang on)."""
    import sqlalchemy as sa

    from polyfabric.store.tables import domains

    conn = uow._conn
    if conn.execute(sa.select(domains.c.name).where(domains.c.name == "d1")).first() is None:
        conn.execute(domains.insert().values(name="d1", description="", created_at=NOW, created_by="test"))
    uow.jobs.add_job({"id": job_id, "seq": seq, "name": job_id, "domain": "d1",
                      "status": "running", "priority": 0, "document": {}, "params": {}, "flags": {},
                      "submitted_by": "test", "submitted_at": NOW})
    uow.jobs.insert_tasks([{"id": t, "job_id": job_id, "key": t, "task": t, "item_index": None, "is_group": False,
                            "item": None, "status": "leased", "attempt": 1, "failures": 0, "preemptions": 0,
                            "not_before": None, "priority": 0, "queue_seq": i, "payload": None, "node_id": None,
                            "result": None, "error": None, "exit_code": None, "started_at": None,
                            "finished_at": None} for i, t in enumerate(task_ids)])


def _attempt(task_id: str, attempt: int, node_id: str, at: float, findings: Any) -> dict[str, Any]:
    return {"task_id": task_id, "attempt": attempt, "node_id": node_id, "status": "leased", "leased_at": at,
            "started_at": None, "finished_at": None, "exit_code": None, "error": None, "preempted_by": None,
            "findings_set": findings}


def test_a_placements_findings_live_on_its_attempt_and_read_with_the_jobs_other_decisions(store: SqlStore):
    """Since revision 0015 a placement names its findings on the attempt row (no decision row per
    placement): the job's decisions read them back with its admission and the offers declined, in
    time order, equal lists sharing one set with the decisions'."""
    import sqlalchemy as sa

    from polyfabric.store.tables import policy_decisions, policy_finding_sets

    allow = [{"scope": "network", "policy": "eu-only", "version": 3, "allowed": True}]
    dry = [*allow, {"scope": "domain:d1", "policy": "dry", "version": 1, "allowed": False, "dry_run": True,
                    "reason": "would deny"}]
    with store.unit_of_work() as uow:
        _job_with_tasks(uow, "j-a", ["t-a1", "t-a2", "t-a3"], seq=1)
        uow.policies.add_decisions([_decision("j-a", allow, kind="admission")])  # at NOW
        rows = [_attempt("t-a1", 1, "n-1", NOW + 1, allow), _attempt("t-a2", 1, "n-2", NOW + 1, [dict(allow[0])]),
                _attempt("t-a3", 1, "n-1", NOW + 1, None)]  # no policy applied to t-a3's placement
        ids = uow.policies.finding_set_ids([r["findings_set"] for r in rows if r["findings_set"]])
        uow.jobs.add_attempts(rows, ids)
        uow.commit()
    with store.unit_of_work() as uow:  # t-a1 declined by n-1, placed again on n-2 with other findings
        declined = [{"scope": "node", "policy": "owner", "version": 2, "allowed": False, "reason": "busy"}]
        uow.policies.add_decisions([{**_decision("j-a", declined, kind="offer", task_id="t-a1", attempt=1,
                                                 node_id="n-1"), "allowed": False, "at": NOW + 2}])
        uow.jobs.add_attempts([_attempt("t-a1", 2, "n-2", NOW + 3, dry)],
                              uow.policies.finding_set_ids([dry]))
        uow.commit()
    with store.unit_of_work(readonly=True) as uow:
        every = uow.policies.decisions(job_id="j-a")
        only = uow.policies.decisions(job_id="j-a", task_id="t-a1")
        first_two = uow.policies.decisions(job_id="j-a", limit=2)
        sets = uow._conn.execute(sa.select(sa.func.count()).select_from(policy_finding_sets)).scalar()
        rows_here = uow._conn.execute(sa.select(sa.func.count()).select_from(policy_decisions)).scalar()
    assert [(r["kind"], r["task_id"], r["attempt"], r["node_id"], r["allowed"], r["findings"]) for r in every] == [
        ("admission", None, None, None, True, allow),
        ("placement", "t-a1", 1, "n-1", True, allow),
        ("placement", "t-a2", 1, "n-2", True, allow),
        ("offer", "t-a1", 1, "n-1", False, declined),
        ("placement", "t-a1", 2, "n-2", True, dry),
    ]
    assert [(r["kind"], r["attempt"]) for r in only] == [("placement", 1), ("offer", 1), ("placement", 2)]
    assert [r["kind"] for r in first_two] == ["admission", "placement"]
    assert (sets, rows_here) == (3, 2)  # allow, dry, declined; only the admission and the offer are rows


def test_the_placement_findings_migration_goes_back_to_a_decision_row_per_placement(store: SqlStore):
    """Downgrading 0015 writes each attempt's findings as the placement decision 0014 kept."""
    findings = [{"scope": "network", "policy": "eu-only", "version": 3, "allowed": True}]
    with store.unit_of_work() as uow:
        _job_with_tasks(uow, "j-back", ["t-b1", "t-b2"], seq=2)
        rows = [_attempt("t-b1", 1, "n-1", NOW + 5, findings), _attempt("t-b2", 1, "n-1", NOW + 6, None)]
        uow.jobs.add_attempts(rows, uow.policies.finding_set_ids([findings]))
        uow.commit()
    with store.unit_of_work(readonly=True) as uow:
        before = uow.policies.decisions(job_id="j-back")
    _downgrade(store, "0014")
    try:
        with store.engine.connect() as conn:
            kept = conn.exec_driver_sql("SELECT task_id, attempt, node_id, kind, at FROM policy_decisions "
                                        "WHERE job_id = 'j-back'").fetchall()
        assert [tuple(r) for r in kept] == [("t-b1", 1, "n-1", "placement", NOW + 5)]
    finally:
        migrate.upgrade(store.engine)
    with store.unit_of_work(readonly=True) as uow:  # read from the decision row now, the same
        after = uow.policies.decisions(job_id="j-back")
    assert [(r["task_id"], r["findings"]) for r in after] == [(r["task_id"], r["findings"]) for r in before] \
        == [("t-b1", findings)]


def test_collecting_a_job_removes_its_decisions_with_its_attempts(store: SqlStore):
    """A job collected whole (gc) leaves no decision behind: its admission and declined offers
    (rows by job id) and its placements (on the attempts) all go; another job's stay."""
    findings = [{"scope": "network", "policy": "eu-only", "version": 3, "allowed": True}]
    with store.unit_of_work() as uow:
        for seq, job_id in enumerate(("j-gone", "j-kept"), start=10):
            _job_with_tasks(uow, job_id, [f"t-{job_id}"], seq=seq)
            uow.policies.add_decisions([_decision(job_id, findings, kind="admission")])
            uow.jobs.add_attempts([_attempt(f"t-{job_id}", 1, "n-1", NOW + 1, findings)],
                                  uow.policies.finding_set_ids([findings]))
        uow.commit()
    with store.unit_of_work() as uow:
        uow.retention.delete_tasks(["t-j-gone"])
        uow.retention.delete_job("j-gone")
        uow.commit()
    with store.unit_of_work(readonly=True) as uow:
        assert uow.policies.decisions(job_id="j-gone") == []
        assert [r["kind"] for r in uow.policies.decisions(job_id="j-kept")] == ["admission", "placement"]


# -- round trips -------------------------------------------------------------------------------


def test_domains_and_tokens_round_trip(store: SqlStore):
    _seed_domain(store)
    api = ApiTokenRow(id="at-1", token_hash="a" * 64, prefix="pfa_abcdefgh", name="alice", role="operator",
                      domains=("d1", "d2"), created_at=NOW, created_by="token:admin", expires_at=NOW + 60,
                      revoked_at=None)
    with store.unit_of_work() as uow:
        uow.tokens.add_join(_join_row(uses_allowed=2, description="two nodes", expires_at=NOW + 3600))
        uow.tokens.add_api(api)
        uow.commit()

    with store.unit_of_work(readonly=True) as uow:
        assert uow.domains.get("d1") == {"name": "d1", "description": "a domain", "created_at": NOW,
                                         "created_by": "token:admin"}
        assert uow.domains.get("nope") is None
        assert [d["name"] for d in uow.domains.list()] == ["d1"]
        assert uow.tokens.join_by_hash("h" * 64) == _join_row(uses_allowed=2, description="two nodes",
                                                              expires_at=NOW + 3600)
        assert uow.tokens.join_by_hash("x" * 64) is None
        assert uow.tokens.api_by_hash("a" * 64) == api
        assert [t.id for t in uow.tokens.list_join(None)] == ["jt-1"]
        assert uow.tokens.list_join(("other",)) == []
        assert uow.tokens.list_api() == [api]
        assert uow.tokens.count_api() == 1

    with store.unit_of_work() as uow:
        assert uow.tokens.consume_join("jt-1") is True
        assert uow.tokens.consume_join("jt-1") is True
        assert uow.tokens.consume_join("jt-1") is False  # two uses allowed
        assert uow.tokens.revoke("at-1", NOW + 1) == "api"
        assert uow.tokens.revoke("at-1", NOW + 2) == "api"  # again: still known, first time kept
        assert uow.tokens.revoke("jt-nope", NOW) is None
        uow.commit()
    with store.unit_of_work(readonly=True) as uow:
        assert uow.tokens.join_by_hash("h" * 64).uses == 2
        assert uow.tokens.api_by_hash("a" * 64).revoked_at == NOW + 1


def test_nodes_round_trip_with_optimistic_versions(store: SqlStore):
    _seed_domain(store)
    _seed_domain(store, "d2")
    node = _node(telemetry={"cpu_percent": 1.5}, conditions=[{"type": "Ready", "status": False, "reason": "x"}])
    with store.unit_of_work() as uow:
        uow.nodes.add(node, {"platform": {"os": "linux"}}, "jt-1")
        uow.nodes.add(_node("n-bbbbbbbbbbbbbbbbbbbb", "node-2", domain="d2", state=NodeState.ACTIVE), {}, "jt-2")
        uow.commit()

    with store.unit_of_work(readonly=True) as uow:
        assert uow.nodes.get(node.id) == node
        assert uow.nodes.by_name("node-1") == node
        assert uow.nodes.get("n-cccccccccccccccccccc") is None
        assert uow.nodes.facts(node.id) == {"platform": {"os": "linux"}}
        assert [n.name for n in uow.nodes.list()] == ["node-1", "node-2"]
        assert [n.name for n in uow.nodes.list(state="active")] == ["node-2"]
        assert [n.name for n in uow.nodes.list(domain="d1")] == ["node-1"]
        assert [n.name for n in uow.nodes.list(domains=("d2",))] == ["node-2"]
        assert [n.name for n in uow.nodes.list(after="node-1")] == ["node-2"]
        assert [n.name for n in uow.nodes.list(limit=1)] == ["node-1"]
        assert uow.nodes.public_keys()[node.id] == (bytes(range(32)), False)

    with store.unit_of_work() as uow:
        changed = node.with_changes(state=NodeState.ACTIVE, state_since=NOW + 1, labels={"zone": "b"})
        uow.nodes.update(changed, expected_version=1)
        with pytest.raises(Conflict, match="changed by someone else"):
            uow.nodes.update(changed.with_changes(state=NodeState.CORDONED), expected_version=1)
        uow.nodes.set_facts(node.id, {"new": True})
        uow.nodes.set_down_times(node.id, [NOW, NOW + 5])
        uow.nodes.set_conditions(node.id, [{"type": "Ready", "status": True, "reason": "ok"}],
                                 [{"name": "script", "ok": True}])
        uow.nodes.record_liveness([(node.id, NOW + 9, {"cpu_percent": 50.0})])
        uow.commit()

    with store.unit_of_work(readonly=True) as uow:
        got = uow.nodes.get(node.id)
        assert got.state == NodeState.ACTIVE and got.labels == {"zone": "b"}
        assert got.version == 2  # observations (conditions, liveness, facts) do not bump it
        assert got.conditions == [{"type": "Ready", "status": True, "reason": "ok"}]
        assert got.health == [{"name": "script", "ok": True}]
        assert (got.last_heartbeat_at, got.telemetry) == (NOW + 9, {"cpu_percent": 50.0})
        assert uow.nodes.facts(node.id) == {"new": True}
        assert uow.nodes.down_times(node.id) == [NOW, NOW + 5]
        assert uow.nodes.owner_policies() == {}

    owner = {"name": "owner", "version": 2, "domains": ["d1"], "require_labels": {"team": "ml"}}
    with store.unit_of_work() as uow:
        uow.nodes.set_facts(node.id, {"platform": {"os": "linux"}, "owner_policy": owner})
        uow.commit()
    with store.unit_of_work(readonly=True) as uow:  # only the advertised policies, read in SQL
        assert uow.nodes.owner_policies() == {node.id: owner}


def test_a_unit_of_work_without_commit_changes_nothing(store: SqlStore):
    with store.unit_of_work() as uow:
        uow.domains.add("gone", "", NOW, "x")
        uow.audit.append([AuditEntry("x", "domain.created", "domain:gone", "test")], NOW)
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.domains.add("gone-too", "", NOW, "x")
        raise RuntimeError("fail inside the transaction")
    with store.unit_of_work(readonly=True) as uow:
        assert uow.domains.list() == []
        assert uow.audit.tip() == (0, chain.GENESIS)
        assert list(uow.audit.iter_all()) == []


def test_audit_round_trip(store: SqlStore):
    entries = [AuditEntry(f"token:t{i}", "node.transition" if i % 2 else "token.created",
                          f"node:n{i % 3}", f"cause {i}", "d1", {"i": i, "tuple": (1, 2)}) for i in range(7)]
    with store.unit_of_work() as uow:
        first = uow.audit.append(entries[:3], NOW)
        uow.audit.append([], NOW)  # nothing to add: no-op
        rest = uow.audit.append(entries[3:], NOW + 10)
        uow.audit.add_coordinator_key("c-1", "pub1", NOW)
        uow.audit.add_coordinator_key("c-1", "pub1", NOW + 1)  # idempotent
        uow.audit.add_coordinator_key("c-2", "pub2", NOW)
        uow.commit()
    records = first + rest
    assert [r.seq for r in records] == list(range(1, 8))
    assert records[0].details == {"i": 0, "tuple": [1, 2]}

    with store.unit_of_work(readonly=True) as uow:
        assert list(uow.audit.iter_all(batch=2)) == records
        assert uow.audit.tip() == (7, records[-1].hash)
        assert chain.verify_chain(uow.audit.iter_all()).ok
        assert [r.seq for r in uow.audit.query(AuditQuery(subject="node:n1"))] == [2, 5]
        assert [r.seq for r in uow.audit.query(AuditQuery(action="node.transition"))] == [2, 4, 6]
        assert [r.seq for r in uow.audit.query(AuditQuery(action="token"))] == [1, 3, 5, 7]
        assert [r.seq for r in uow.audit.query(AuditQuery(action="node.*"))] == [2, 4, 6]
        assert [r.seq for r in uow.audit.query(AuditQuery(since=NOW + 5))] == [4, 5, 6, 7]
        assert [r.seq for r in uow.audit.query(AuditQuery(after_seq=5, limit=1))] == [6]
        assert uow.audit.coordinator_keys() == {"c-1": "pub1", "c-2": "pub2"}
        assert uow.audit.heads() == [] and uow.audit.last_head() is None

    key = generate_private_key()
    heads = [chain.sign_head(records[i], at=NOW + 20 + i, key_id="c-1", sign=lambda m: sign_bytes(key, m))
             for i in (2, 6)]
    with store.unit_of_work() as uow:
        for head in heads:
            uow.audit.add_head(head)
        uow.commit()
    with store.unit_of_work(readonly=True) as uow:
        assert uow.audit.heads() == heads
        assert uow.audit.last_head() == heads[-1]
        report = chain.verify_chain(uow.audit.iter_all(), heads=uow.audit.heads())
        assert report.ok and report.heads_checked == 2


def test_json_columns_round_trip_what_orjson_refuses_and_keys_that_are_not_strings(store: SqlStore):
    """JSON columns are written with orjson and fall back to json for what it refuses (an integer
    past 64 bits); keys that are not strings are written as strings, as json.dumps wrote them."""
    findings = [{"big": 2**70, "text": "z\u00fcrich \u2713", 3: "an int key", "nested": {"t": (1, 2.5), "none": None}}]
    with store.unit_of_work() as uow:
        uow.policies.add_decisions([{"job_id": "j-1", "task_id": None, "attempt": None, "node_id": None,
                                     "kind": "admission", "allowed": True, "findings": findings, "at": NOW}])
        uow.commit()
    with store.unit_of_work(readonly=True) as uow:
        [row] = uow.policies.decisions(job_id="j-1")
    assert row["findings"] == [{"big": 2**70, "text": "z\u00fcrich \u2713", "3": "an int key",
                                "nested": {"t": [1, 2.5], "none": None}}]


def _decision(job_id: str, findings: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"job_id": job_id, "task_id": extra.get("task_id"), "attempt": extra.get("attempt"),
            "node_id": extra.get("node_id"), "kind": extra.get("kind", "placement"), "allowed": True,
            "findings": findings, "at": NOW}


def test_decisions_with_the_same_findings_share_one_stored_set_and_inline_rows_still_read(store: SqlStore):
    """A pass writes one decision per placement, most with the same findings: each distinct list is
    stored once (by digest, across transactions), and rows from before the sets (findings inline)
    still read back."""
    import sqlalchemy as sa

    from polyfabric.store.tables import policy_decisions, policy_finding_sets

    allow = [{"scope": "network", "policy": "eu-only", "version": 2, "allowed": True}]
    dry = [{"scope": "network", "policy": "big", "version": 1, "allowed": False, "reason": "too big",
            "dry_run": True}]
    with store.unit_of_work() as uow:
        uow.policies.add_decisions([_decision("j-1", allow, task_id="t-1", attempt=1, node_id="n-1"),
                                    _decision("j-1", [dict(allow[0])], task_id="t-2", attempt=1, node_id="n-2"),
                                    _decision("j-1", dry, task_id="t-3", attempt=2, node_id="n-1")])
        uow.commit()
    with store.unit_of_work() as uow:  # a later pass: the same findings again, no new set
        uow.policies.add_decisions([_decision("j-2", [dict(allow[0])], task_id="t-9", attempt=1)])
        uow._conn.execute(policy_decisions.insert().values(  # a row written before revision 0014
            job_id="j-1", task_id="t-0", attempt=1, node_id="n-0", kind="placement", allowed=True,
            findings=dry, findings_set=None, at=NOW - 1))
        uow.commit()
    with store.unit_of_work(readonly=True) as uow:
        assert uow._conn.execute(sa.select(sa.func.count()).select_from(policy_finding_sets)).scalar() == 2
        rows = uow.policies.decisions(job_id="j-1")
        only_t2 = uow.policies.decisions(job_id="j-1", task_id="t-2")
        later = uow.policies.decisions(job_id="j-2")
    assert [(r["task_id"], r["attempt"], r["node_id"], r["findings"]) for r in rows] == [
        ("t-1", 1, "n-1", allow), ("t-2", 1, "n-2", allow), ("t-3", 2, "n-1", dry), ("t-0", 1, "n-0", dry)]
    assert [r["task_id"] for r in only_t2] == ["t-2"] and later[0]["findings"] == allow
    assert all(r["allowed"] is True and r["kind"] == "placement" and "findings_set" not in r for r in rows)


def test_concurrent_writers_of_a_new_finding_set_share_it(store: SqlStore):
    import sqlalchemy as sa

    from polyfabric.store.tables import policy_finding_sets

    findings = [{"scope": "domain:acme", "policy": "raced", "version": 7, "allowed": True}]

    def write(i: int) -> None:
        with store.unit_of_work() as uow:
            uow.policies.add_decisions([_decision(f"j-race-{i}", findings, task_id=f"t-{i}")])
            uow.commit()

    results = _race(4, write)
    assert results == [None] * 4, results
    with store.unit_of_work(readonly=True) as uow:
        assert uow._conn.execute(sa.select(sa.func.count()).select_from(policy_finding_sets)).scalar() == 1
        assert all(uow.policies.decisions(job_id=f"j-race-{i}")[0]["findings"] == findings for i in range(4))


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_audit_appends_keep_one_chain(store: SqlStore):
    with store.unit_of_work() as uow:  # the chain's first record (the coordinator's bootstrap writes one)
        uow.audit.append([AuditEntry("system:test", "test.start", "test", "seed")], NOW)
        uow.commit()
    writers, rounds = 8, 6

    def write(index: int) -> int:
        for round_ in range(rounds):
            with store.unit_of_work() as uow:
                batch = [AuditEntry(f"writer:{index}", "test.append", f"writer:{index}", f"round {round_}",
                                    details={"part": part}) for part in range(1 + round_ % 2)]
                uow.audit.append(batch, NOW + round_)
                uow.commit()
        return index

    results = _race(writers, write)
    assert results == list(range(writers)), results
    with store.unit_of_work(readonly=True) as uow:
        records = list(uow.audit.iter_all())
        tip = uow.audit.tip()
        report = chain.verify_chain(uow.audit.iter_all())
    expected = 1 + writers * sum(1 + r % 2 for r in range(rounds))
    assert [r.seq for r in records] == list(range(1, expected + 1))
    assert tip == (expected, records[-1].hash)
    assert report.ok, report.problem
    # Each writer's records kept their order within the one chain.
    for index in range(writers):
        mine = [r.cause for r in records if r.actor == f"writer:{index}"]
        assert mine == [f"round {r}" for r in range(rounds) for _ in range(1 + r % 2)]


def test_join_token_consumption_is_atomic(store: SqlStore):
    _seed_domain(store)
    with store.unit_of_work() as uow:
        uow.tokens.add_join(_join_row("jt-one", "1" * 64, uses_allowed=1))
        uow.tokens.add_join(_join_row("jt-three", "3" * 64, uses_allowed=3))
        uow.commit()

    def consume(token_id: str) -> Callable[[int], bool]:
        def work(_: int) -> bool:
            with store.unit_of_work() as uow:
                won = uow.tokens.consume_join(token_id)
                uow.commit()
            return won
        return work

    assert sorted(_race(8, consume("jt-one"))) == [False] * 7 + [True]
    assert sorted(_race(8, consume("jt-three"))) == [False] * 5 + [True] * 3
    with store.unit_of_work(readonly=True) as uow:
        assert uow.tokens.join_by_hash("1" * 64).uses == 1
        assert uow.tokens.join_by_hash("3" * 64).uses == 3


def test_concurrent_registrations_on_a_single_use_token_have_exactly_one_winner(store: SqlStore):
    services = Services.build(ServiceContext(store=store, clock=FakeClock(NOW), ids=UuidIds(), signer=TestSigner()))
    issued = services.tokens.create_join(ADMIN, domain="race", ttl_s=None, uses=1)
    keys = [public_key_raw(generate_private_key()) for _ in range(8)]

    def register(index: int) -> Node:
        return services.nodes.register(Registration(public_key=keys[index], name=f"racer-{index}", labels={},
                                                    capacity=Resources(cpu_millis=1000)), issued.token)

    results = _race(len(keys), register)
    winners = [r for r in results if isinstance(r, Node)]
    losers = [r for r in results if not isinstance(r, Node)]
    assert len(winners) == 1, results
    assert all(isinstance(r, NotAuthenticated) and "is used up" in r.message for r in losers), losers
    with store.unit_of_work(readonly=True) as uow:
        assert [n.id for n in uow.nodes.list()] == [winners[0].id]
        assert uow.tokens.join_by_hash(issued.row.token_hash).uses == 1
        registered = uow.audit.query(AuditQuery(action="node.registered"))
        assert [r.subject for r in registered] == [f"node:{winners[0].id}"]
        assert chain.verify_chain(uow.audit.iter_all()).ok
