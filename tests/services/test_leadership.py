"""The leader election as a use case: `Leadership` over a real store, driven by FakeClocks.

Each "coordinator" here is a Leadership (its holder id, its URL) with its own clock, so a test can
pause one (its clock stands still, as for a SIGSTOPped process) while time goes on for the others.
Both backends run the logic; the row-lock interleaving (a takeover waits for a fenced transaction
in flight) needs PostgreSQL's FOR SHARE / FOR UPDATE and runs there only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from polyfabric.controllers.leadership import LeaderElector, RoleKeeper
from polyfabric.coordinator.bootstrap import UuidIds
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.errors import NotLeader, Unavailable
from polyfabric.domain.node_states import NodeState
from polyfabric.domain.resources import Resources
from polyfabric.security.keys import generate_private_key, public_key_raw
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.leadership import Leadership
from polyfabric.services.nodes import Registration
from polyfabric.store import migrate
from polyfabric.store.tables import jobs as job_table
from polyfabric.store.tables import leadership as lease_table
from polyfabric.store.unit_of_work import SqlStore
from polyfabric.testing import FakeClock
from polyfabric.testing.signer import TestSigner

TTL = 5.0
ADMIN = Principal("token", "at-admin", "admin", Role.ADMIN, ("*",))
DOC = {"name": "one", "tasks": {"a": {"command": ["true"]}}}


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    store = SqlStore(db_url)
    migrate.upgrade(store.engine)
    yield store
    store.close()


def coordinator(store: SqlStore, name: str, clock: FakeClock) -> Leadership:
    return Leadership(store, clock, holder=f"c-{name}", url=f"http://{name}:7340", ttl=TTL)


def lease_row(store: SqlStore) -> dict:
    with store.engine.connect() as conn:
        return dict(conn.execute(sa.select(lease_table)).mappings().one())


# -- the election ---------------------------------------------------------------------------------


def test_the_first_coordinator_on_a_fresh_store_leads_at_once_with_epoch_one(store):
    clock = FakeClock()
    a = coordinator(store, "a", clock)
    assert a.role() == "follower" and a.epoch is None
    assert a.tick() == "promoting"  # elected; the coordinator has not rebuilt its state yet
    assert a.epoch == 1 and a.is_leader() and not a.serving()
    a.set_ready(1)
    assert a.serving() and a.role() == "leader" and a.hint() == "http://a:7340"
    row = lease_row(store)
    assert (row["holder"], row["epoch"], row["leader_url"]) == ("c-a", 1, "http://a:7340")
    assert row["expires_at"] == clock.now() + TTL


def test_renewals_keep_the_lease_and_the_others_follow_with_the_leaders_url(store):
    clock = FakeClock()
    a, b, c = (coordinator(store, n, clock) for n in "abc")
    a.tick()
    for _ in range(40):  # 20 s: the leader renews every second, the others look every half second
        clock.advance(0.5)
        b.tick()
        c.tick()
        if clock.now() % 1.0 == 0:
            a.tick()
        assert a.is_leader() and not b.is_leader() and not c.is_leader()
    assert lease_row(store)["epoch"] == 1
    assert b.role() == "follower" and b.hint() == "http://a:7340" and b.status()["epoch"] == 1


def test_an_expired_lease_is_taken_over_with_the_next_epoch_and_the_old_leader_stood_down_first(store):
    clock = FakeClock()
    a, b = coordinator(store, "a", clock), coordinator(store, "b", clock)
    a.tick()
    b.tick()
    clock.advance(TTL - a.margin + 0.01)  # a cannot renew (dead, paused, cut off from the store)
    assert not a.is_leader() and a.epoch is None  # by its own clock, before anyone can take over
    assert b.tick() == "follower"  # the lease itself has not expired yet
    clock.advance(a.margin)
    assert b.tick() == "promoting" and b.epoch == 2
    assert lease_row(store)["holder"] == "c-b"
    assert a.tick() == "follower"  # a comes back: it follows, and sends clients to b
    assert a.epoch is None and a.hint() == "http://b:7340"


def test_epochs_only_grow_across_many_changes_of_leader(store):
    clock = FakeClock()
    coordinators = [coordinator(store, n, clock) for n in "abc"]
    seen = []
    for turn in range(6):
        leader = coordinators[turn % 3]
        clock.advance(TTL + 0.1)  # whoever led last is gone
        assert leader.tick() == "promoting"
        seen.append(leader.epoch)
    assert seen == [1, 2, 3, 4, 5, 6]


def test_a_coordinator_restarted_on_its_data_dir_takes_its_own_lease_back_at_once_with_a_new_epoch(store):
    clock = FakeClock()
    before = coordinator(store, "a", clock)
    before.tick()
    after = coordinator(store, "a", clock)  # same key id (holder), a new process: no epoch yet
    assert after.tick() == "promoting" and after.epoch == 2  # no waiting for its own lease
    other = coordinator(store, "b", clock)
    assert other.tick() == "follower"


def test_a_released_lease_is_taken_over_on_the_next_pass(store):
    clock = FakeClock()
    a, b = coordinator(store, "a", clock), coordinator(store, "b", clock)
    a.tick()
    b.tick()
    a.release()
    assert not a.is_leader()
    assert b.tick() == "promoting" and b.epoch == 2


def test_an_unreachable_store_keeps_the_lease_only_until_it_runs_out(store):
    clock = FakeClock()
    a = coordinator(store, "a", clock)
    a.tick()
    store.engine.dispose()
    good_url = store.engine.url
    store.engine = sa.create_engine("sqlite:////nonexistent/dir/x.db")  # every connection fails
    try:
        clock.advance(2.0)
        assert a.tick() == "promoting" and a.failures == 1  # still within its lease
        clock.advance(2.0)
        assert a.tick() == "follower"  # 4 s after the last renewal: it stands down by itself
    finally:
        store.engine.dispose()
        store.engine = sa.create_engine(good_url)


# -- the fence --------------------------------------------------------------------------------------


@dataclass
class Coordinator:
    leadership: Leadership
    clock: FakeClock
    services: Services


def open_coordinator(url: str, name: str, clock: FakeClock) -> Coordinator:
    store = SqlStore(url)
    leadership = Leadership(store, clock, holder=f"c-{name}", url=f"http://{name}:7340", ttl=TTL)
    ctx = ServiceContext(store=store, clock=clock, ids=UuidIds(), signer=TestSigner(), leadership=leadership)
    return Coordinator(leadership, clock, Services.build(ctx))


def job_count(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(job_table)).scalar_one())


def test_a_stale_leaders_writes_are_refused_by_the_epoch_even_when_its_own_clock_says_it_leads(db_url, store):
    a = open_coordinator(db_url, "a", FakeClock())
    b = open_coordinator(db_url, "b", FakeClock())
    try:
        a.services.tokens.create_join(ADMIN, domain="lab", ttl_s=None, uses=None)
        a.leadership.tick()
        a.services.runtime.rebuild()
        first = a.services.runtime.submit(ADMIN, DOC, {}, "lab")["id"]
        node = a.services.nodes.register(Registration(public_key=public_key_raw(generate_private_key()),
                                                      name="n1", labels={}, capacity=Resources(slots=1)),
                                         a.services.tokens.create_join(ADMIN, domain="lab", ttl_s=None,
                                                                       uses=None).token)

        # `a` is paused: its clock stands still, so by its own reckoning it still leads. Time goes
        # on for `b`, which takes the expired lease over and rebuilds the state from the store.
        b.clock.advance(TTL + 0.1)
        assert b.leadership.tick() == "promoting" and b.leadership.epoch == 2
        assert b.services.runtime.rebuild() == 1
        assert a.leadership.is_leader()

        # `a` resumes and writes: the group commit's fence reads epoch 2 and refuses.
        with pytest.raises(Unavailable):
            a.services.runtime.submit(ADMIN, DOC, {}, "lab")
        assert not a.leadership.is_leader() and a.leadership.role() == "follower"
        assert job_count(store) == 1 and a.services.runtime.rebuild() == 1  # nothing of it landed
        # ... and so do its failure detector's verdicts and operator actions.
        with pytest.raises(NotLeader):
            a.services.nodes.mark_down(node.id, 99.0)
        with pytest.raises(NotLeader):
            a.services.nodes.act(ADMIN, node.id, "cordon", "stale")
        assert b.services.nodes.get(ADMIN, node.id)[0].state == NodeState.PENDING

        # The new leader's writes go through.
        b.leadership.set_ready(2)
        second = b.services.runtime.submit(ADMIN, DOC, {}, "lab")["id"]
        assert job_count(store) == 2 and second != first
    finally:
        for c in (a, b):
            c.services.ctx.store.close()


def test_a_leader_whose_lease_ran_out_by_its_clock_writes_nothing_even_before_anyone_took_over(db_url, store):
    clock = FakeClock()
    a = open_coordinator(db_url, "a", clock)
    try:
        a.services.tokens.create_join(ADMIN, domain="lab", ttl_s=None, uses=None)
        a.leadership.tick()
        clock.advance(TTL)  # no renewal for the whole lease
        with pytest.raises(Unavailable, match="not the leader"):
            a.services.runtime.submit(ADMIN, DOC, {}, "lab")
        assert job_count(store) == 0
        # Nobody took over: it leads again, but as a new epoch (an epoch never comes back once it
        # lapsed here, so the role keeper always rebuilds after a gap).
        assert a.leadership.tick() == "promoting"
        assert a.leadership.epoch == 2
    finally:
        a.services.ctx.store.close()


def test_a_takeover_waits_for_the_fenced_transaction_in_flight_and_fences_the_next_one(db_url, store, backend):
    if backend != "postgresql":
        pytest.skip("row locks (FOR SHARE / FOR UPDATE) are PostgreSQL's")
    slow, fast = FakeClock(), FakeClock()
    a, b = coordinator(store, "a", slow), coordinator(store, "b", fast)
    b.lock_wait = 30.0  # here: wait for the row as long as it takes (see the next test for the bound)
    a.tick()
    fast.advance(TTL + 1)
    done = threading.Event()
    outcome: list[str] = []
    with store.unit_of_work() as uow:
        a.fence(uow)  # a's transaction is in flight, share-locking the lease row
        thread = threading.Thread(target=lambda: (outcome.append(b.tick()), done.set()))
        thread.start()
        assert not done.wait(0.5), "the takeover did not wait for the fenced transaction"
        uow.commit()
    assert done.wait(10) and outcome == ["promoting"] and b.epoch == 2
    thread.join()
    with store.unit_of_work() as uow, pytest.raises(NotLeader):
        a.fence(uow)


def test_a_leader_paused_inside_a_fenced_transaction_is_evicted_and_the_lease_taken_over(db_url, backend):
    """A coordinator SIGSTOPped while psycopg pipelines an executemany holds its transaction's
    locks and PostgreSQL's idle-in-transaction timer never starts (the session is not idle, it
    waits for the rest of the pipeline). Here a's fenced transaction disarms that timer to stand
    for it: b must not wait for it forever, but end a's sessions once a's lease has expired."""
    if backend != "postgresql":
        pytest.skip("row locks and sessions are PostgreSQL's")
    stores = {name: SqlStore(db_url, owner=f"c-{name}") for name in "ab"}
    migrate.upgrade(stores["a"].engine)
    try:
        slow, fast = FakeClock(), FakeClock()
        a, b = coordinator(stores["a"], "a", slow), coordinator(stores["b"], "b", fast)
        assert a.tick() == "promoting" and a.epoch == 1
        conn = stores["a"].engine.connect()  # a's group commit, fenced as `Leadership.fence` does
        try:
            conn.begin()
            assert conn.exec_driver_sql("SELECT epoch FROM leadership WHERE id = 1 FOR SHARE").scalar() == 1
            conn.exec_driver_sql("SELECT set_config('idle_in_transaction_session_timeout', '0', true)")
            assert b.tick() == "follower", "a live lease is never taken, nor its holder evicted"
            fast.advance(TTL + 1)
            started = time.monotonic()
            assert b.tick() == "follower"  # held up past lock_wait: a's sessions are ended
            assert time.monotonic() - started < b.lock_wait + 3
            assert b.tick() == "promoting" and b.epoch == 2
            with pytest.raises(sa.exc.OperationalError):  # a's transaction is gone with its session
                conn.exec_driver_sql("UPDATE jobs SET status = 'failed'")
        finally:
            conn.close()
        with stores["a"].unit_of_work() as fresh, pytest.raises(NotLeader):
            a.fence(fresh)  # a reconnects by itself and finds itself fenced
    finally:
        for store in stores.values():
            store.close()


# -- the role keeper ----------------------------------------------------------------------------------


def test_the_role_keeper_promotes_once_per_epoch_and_demotes_when_the_lease_is_lost(store):
    clock = FakeClock()
    a, b = coordinator(store, "a", clock), coordinator(store, "b", clock)
    calls: list[object] = []
    keeper = RoleKeeper(a, promote=lambda epoch: calls.append(epoch), demote=lambda: calls.append("demote"))
    elector = LeaderElector(a)
    assert elector.period == a.poll_every == 0.5  # a follower looks twice a second
    keeper.run_once()
    assert calls == []
    elector.run_once()
    assert elector.period == a.renew_every == 1.0  # the leader renews every second
    keeper.run_once()
    keeper.run_once()
    assert calls == [1] and keeper.promoted == 1
    clock.advance(TTL + 0.1)
    keeper.run_once()  # by a's own clock the lease ran out: stand down at once
    assert calls == [1, "demote"] and keeper.promoted is None
    b.tick()
    elector.run_once()
    keeper.run_once()
    assert calls == [1, "demote"]
    clock.advance(TTL + 0.1)
    elector.run_once()  # b is gone too: a leads again, with a new epoch, and is promoted again
    keeper.run_once()
    assert calls == [1, "demote", 3]


def test_a_lease_that_lapsed_only_by_the_leaders_clock_comes_back_as_a_new_epoch_and_a_new_promotion(store):
    clock = FakeClock()
    a = coordinator(store, "a", clock)
    calls: list[object] = []
    keeper = RoleKeeper(a, promote=lambda epoch: calls.append(epoch), demote=lambda: calls.append("demote"))
    a.tick()
    keeper.run_once()
    clock.advance(TTL - a.margin + 0.01)  # the store was slow: no renewal in time; nobody else is there
    assert a.tick() == "promoting" and a.epoch == 2  # taken again, not renewed: the gap is visible
    keeper.run_once()  # even though the keeper did not look during the gap, it rebuilds
    assert calls == [1, "demote", 2]


def test_a_failed_promotion_is_retried_on_the_next_pass(store):
    clock = FakeClock()
    a = coordinator(store, "a", clock)
    a.tick()
    attempts: list[int] = []

    def promote(epoch: int) -> None:
        attempts.append(epoch)
        if len(attempts) == 1:
            raise RuntimeError("store hiccup")

    keeper = RoleKeeper(a, promote=promote, demote=lambda: None)
    with pytest.raises(RuntimeError):
        keeper.run_once()
    assert keeper.promoted is None
    keeper.run_once()
    assert attempts == [1, 1] and keeper.promoted == 1


def test_solo_leadership_always_leads_and_fences_nothing():
    solo = Leadership.single("http://only:7340")
    assert solo.is_leader() and solo.serving() and solo.role() == "leader"
    solo.fence(None)  # type: ignore[arg-type]  # never touches the store
    assert solo.status() == {"role": "leader", "leader": "http://only:7340", "epoch": 0}
