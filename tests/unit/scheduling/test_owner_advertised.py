"""Two-sided matchmaking (issue 6): a node's owner policy, as its agent advertises it
(`NodeView.owner`), keeps the scheduler from offering the node what the owner would decline:
the `policy` filter asks its static rules (domains, hours, labels, `when`, a task too big for the
share), `policy_share` the CPU share over what other domains already hold. The agent still
answers every offer; these tests show the coordinator predicts its answer."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from polyfabric.domain.policy import advertised_owner_policy, job_context, parse_owner_policy, task_context
from polyfabric.scheduling import default_profile, schedule
from polyfabric.scheduling.filters.policy import PolicyAttributes, node_variables
from polyfabric.scheduling.framework import CycleState, Status
from polyfabric.scheduling.registry import with_owner_rank, with_policies

from .builders import node, res, running, task, view

NOON = 1_790_000_000.0 - 1_790_000_000.0 % 86400 + 12 * 3600


def owner(doc):
    """What the coordinator holds: the agent's policy as advertised, parsed again."""
    return advertised_owner_policy(parse_owner_policy(doc).advertised())


def offer(name, domain="ops", cpu=1, labels=None, job_labels=None, seq=0):
    t = task_context(name="w", labels=labels or {}, cpu=int(cpu * 1000), domain=domain)
    attrs = PolicyAttributes(job=job_context(id=f"j-{name}", name="wf", domain=domain, labels=job_labels or {},
                                             tasks=[t]), task=t)
    return dataclasses.replace(task(name, seq=seq, domain=domain, resources=res(cpu, 1)), attributes=attrs)


def classify(profile, tasks, cluster):
    flt = next(f for f in profile.filters if f.name == "policy")
    flt.consider_owners([n.owner for n in cluster.nodes if n.owner is not None])
    return [dataclasses.replace(t, policy_class=flt.policy_class(t.attributes, t.task_id)) for t in tasks]


def test_the_scheduler_does_not_offer_a_node_what_its_owner_declines_and_says_why():
    picky = dataclasses.replace(node("picky", cpu=8, domain="lab"), owner=owner({"accept": {"domains": ["lab"]}}))
    easy = node("easy", cpu=2, domain="lab")
    cluster = view(picky, easy)
    profile = with_policies(default_profile(), [])
    tasks = classify(profile, [offer(f"o{i}", seq=i) for i in range(3)] + [offer("l", domain="lab", seq=9)],
                     cluster)
    plan = schedule(cluster, tasks, profile, random.Random(1), now=NOON)
    where = {p.task_id: p.node_id for p in plan.placements}
    # binpack would put the ops tasks on the big node; its owner takes only lab jobs
    assert where == {"o0": "easy", "o1": "easy", "l": "picky"}
    [left] = plan.unplaced
    assert left.reason_summary.get("policy owner v1 (node)") == 1, left.reason_summary


def test_the_owners_cpu_share_counts_what_other_domains_hold_and_what_the_pass_placed():
    shared = dataclasses.replace(
        node("shared", cpu=8, domain="lab", running=[running("r0", "shared", domain="ops", resources=res(2, 1))]),
        owner=owner({"accept": {"max_cpu_share": 0.5}}))
    cluster = view(shared)
    profile = with_policies(default_profile(), [])
    tasks = classify(profile, [offer(f"o{i}", seq=i) for i in range(4)] + [offer("l", domain="lab", seq=9)],
                     cluster)
    plan = schedule(cluster, tasks, profile, random.Random(1), now=NOON)
    placed = {p.task_id for p in plan.placements}
    assert placed == {"o0", "o1", "l"}  # 2 running + 2 placed = half of 8 for other domains; lab is its own
    assert any(k == "policy owner v1 (node): cpu share" for u in plan.unplaced for k in u.reason_summary)
    assert all(u.status is Status.NOT_NOW for u in plan.unplaced)  # the share frees up later


def test_tasks_that_differ_only_in_what_the_owner_reads_get_their_own_answers():
    """The policy class covers the fields owners read (job labels here), not only what the
    network's policies read, so cached answers are never shared across them."""
    labelled = dataclasses.replace(node("ml", cpu=8), owner=owner({"accept": {"require_labels": {"team": "ml"}}}))
    cluster = view(labelled)
    profile = with_policies(default_profile(), [])
    tasks = classify(profile, [offer("web", job_labels={"team": "web"}, seq=0),
                               offer("ml", job_labels={"team": "ml"}, seq=1)], cluster)
    plan = schedule(cluster, tasks, profile, random.Random(1), now=NOON)
    assert [p.task_id for p in plan.placements] == ["ml"]
    assert "policy owner v1 (node)" in plan.unplaced[0].reason_summary


def test_hours_are_followed_by_the_minute():
    nightly = dataclasses.replace(node("n", cpu=8), owner=owner({"accept": {"hours": "20:00-06:00"}}))
    cluster = view(nightly)
    profile = with_policies(default_profile(), [])
    [t] = classify(profile, [offer("a")], cluster)
    assert not schedule(cluster, [t], profile, random.Random(1), now=NOON).placements
    assert schedule(cluster, [t], profile, random.Random(1), now=NOON + 9 * 3600).placements  # 21:00 UTC


OWNER_DOCS = st.fixed_dictionaries({}, optional={
    "domains": st.lists(st.sampled_from(["lab", "ops", "web"]), min_size=1, max_size=2, unique=True),
    "hours": st.sampled_from(["08:00-18:00", "22:00-06:00"]),
    "max_cpu_share": st.sampled_from([0.25, 0.5, 1.0]),
    "require_labels": st.sampled_from([{"team": "ml"}, {"tier": "gold"}]),
    "when": st.sampled_from(["job.priority >= 3", 'task.cpu <= 2000 || node.domain == "lab"', "now.hour < 12"]),
    "reason": st.sampled_from(["lab machine", ""]),
})


@settings(max_examples=150, deadline=None)
@given(doc=OWNER_DOCS, domain=st.sampled_from(["lab", "ops", "web"]), cpu=st.sampled_from([1, 2, 4]),
       priority=st.integers(0, 5), labels=st.sampled_from([{}, {"team": "ml"}, {"tier": "gold"}]),
       held=st.integers(0, 6), hour=st.integers(0, 23))
def test_the_coordinator_predicts_the_agents_answer(doc, domain, cpu, priority, labels, held, hour):
    """What the scheduler's filters decide from the advertised policy is what the agent's own
    `decide` answers (the agent counts the same foreign CPU)."""
    mine = parse_owner_policy(doc)
    n = dataclasses.replace(
        node("n", cpu=8, domain="lab", running=[running(f"r{i}", "n", domain="ops", resources=res(1, 1))
                                                for i in range(held)]),
        owner=advertised_owner_policy(mine.advertised()))
    cluster = view(n)
    now = NOON - 12 * 3600 + hour * 3600
    t = task_context(name="w", labels=labels, cpu=cpu * 1000, domain=domain)
    j = job_context(id="j", name="wf", domain=domain, priority=priority, tasks=[t])
    request = dataclasses.replace(task("t", domain=domain, resources=res(cpu, 1)),
                                  attributes=PolicyAttributes(job=j, task=t))
    profile = with_policies(default_profile(), [])
    [request] = classify(profile, [request], cluster)
    cycle = CycleState(cluster, now=now)
    passes = all(f.check(request, n, cycle).status is Status.PASS for f in profile.filters
                 if f.name in ("policy", "policy_share"))
    agent = mine.decide(j, t, node_variables(n), now, foreign_cpu=held * 1000)
    assert passes == agent.allowed, (doc, agent)


def test_advertising_can_be_turned_off_and_says_every_rule():
    assert parse_owner_policy({"accept": {"domains": ["lab"]}, "advertise": False}).advertised() is None
    full = parse_owner_policy({"accept": {"domains": ["lab"], "hours": "08:00-18:00", "max_cpu_share": 0.5,
                                          "require_labels": {"team": "ml"}, "when": "job.priority >= 3"},
                               "rank": "job.priority", "reason": "mine", "on_change": "stop"}, version=4)
    doc = full.advertised()
    assert doc == {"name": "owner", "version": 4, "domains": ["lab"], "hours": "08:00-18:00", "max_cpu_share": 0.5,
                   "require_labels": {"team": "ml"}, "when": "job.priority >= 3", "rank": "job.priority",
                   "reason": "mine"}
    again = advertised_owner_policy(doc)
    assert (again.domains, again.hours, again.version, again.reason) == (full.domains, full.hours, 4, "mine")
    assert advertised_owner_policy({"domains": "not a list"}) is None  # unreadable: the agent still decides


def test_an_owners_rank_prefers_the_tasks_it_likes_and_leaves_the_others_to_neutral_nodes():
    """The owner's `rank` over jobs (HTCondor's machine RANK): with nothing else between two nodes,
    a task its owner ranks high goes to it, one it ranks low to the node without a preference."""
    keen = dataclasses.replace(node("keen"), owner=owner({"rank": 'job.labels.team == "ml" ? 100 : 0'}))
    cluster = view(keen, node("plain"))
    profile = with_owner_rank(with_policies(default_profile(), []))
    for seed in range(8):
        tasks = classify(profile, [offer("ml", job_labels={"team": "ml"}), offer("web", job_labels={"team": "web"})],
                         cluster)
        for t in tasks:
            plan = schedule(cluster, [t], profile, random.Random(seed), now=NOON)
            assert [p.node_id for p in plan.placements] == ["keen" if t.task_id == "ml" else "plain"], seed
