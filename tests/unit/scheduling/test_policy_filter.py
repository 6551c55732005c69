"""The policy plugins in the scheduler (scheduling/filters/policy.py): placement policies and the
job's `requires` as a CLASS filter, CPU share as a CYCLE filter, `rank` as a scorer; explanations
count nodes by policy and version."""

from __future__ import annotations

import dataclasses
import random

from polyfabric.domain.policy import compile_rule, job_context, parse_policy, task_context
from polyfabric.scheduling import default_profile, schedule
from polyfabric.scheduling.filters.policy import PolicyAttributes
from polyfabric.scheduling.registry import with_policies

from .builders import node, res, task, view

RESIDENCY = parse_policy({"name": "residency-eu", "kind": "placement",
                          "when": '"residency" in task.labels', "allow": 'node.labels.region == "eu"',
                          "reason": "EU only"}, version=3)


def attrs(labels=None, requires=None, rank=None, domain="acme", cpu=1000):
    t = task_context(name="w", labels=labels or {}, cpu=cpu, domain=domain)
    return PolicyAttributes(job=job_context(id="j", name="wf", domain=domain, tasks=[t]), task=t,
                            requires=compile_rule(requires, "requires") if requires else None,
                            rank=compile_rule(rank, "rank") if rank else None)


def with_attrs(t, a, cls="c"):
    return dataclasses.replace(t, policy_class=cls, attributes=a)


def nodes(n_eu=2, n_us=5):
    return [node(f"eu{i}", labels={"region": "eu"}) for i in range(n_eu)] + \
        [node(f"us{i}", labels={"region": "us"}) for i in range(n_us)]


def test_a_placement_policy_keeps_resident_tasks_on_eu_nodes_and_is_counted_in_explanations():
    profile = with_policies(default_profile(), [RESIDENCY])
    tasks = [with_attrs(task(f"t{i}", seq=i), attrs({"residency": "eu"})) for i in range(20)]
    plan = schedule(view(*nodes()), tasks, profile, random.Random(1))
    assert plan.placements and all(p.node_id.startswith("eu") for p in plan.placements)
    assert plan.unplaced  # 2 EU nodes x 4 cpu cannot hold 20 tasks of 1 cpu
    summary = plan.unplaced[0].reason_summary
    assert summary.get("policy residency-eu v3 (network)") == 5, summary
    flt = next(f for f in profile.filters if f.name == "policy")
    assert [f.ref for f in flt.decision(tasks[0], plan.placements[0].node_id)] == ["residency-eu v3"]


def test_tasks_the_policy_does_not_apply_to_go_anywhere():
    profile = with_policies(default_profile(), [RESIDENCY])
    tasks = [with_attrs(task(f"t{i}", seq=i), attrs()) for i in range(20)]
    plan = schedule(view(*nodes()), tasks, profile, random.Random(1))
    assert len(plan.placements) == 20 and any(p.node_id.startswith("us") for p in plan.placements)


def test_requires_is_a_hard_requirement_and_rank_a_preference():
    profile = with_policies(default_profile(), [])
    t = [with_attrs(task("a"), attrs(requires='node.labels.region == "us"'))]
    plan = schedule(view(*nodes()), t, profile, random.Random(2))
    assert plan.placements[0].node_id.startswith("us")
    none = schedule(view(*nodes(n_us=0)), t, profile, random.Random(2))
    assert not none.placements and "requirement not met" in next(iter(none.unplaced[0].reason_summary))
    ranked = [with_attrs(task("b"), attrs(rank='node.labels.region == "eu" ? 100 : 0'), "r")]
    for seed in range(5):
        plan = schedule(view(*nodes()), ranked, with_policies(default_profile(), [], rank_weight=10.0),
                        random.Random(seed), max_candidates=7)  # rank orders the candidates compared
        assert plan.placements[0].node_id.startswith("eu")


def test_dry_run_places_and_remembers_what_it_would_have_denied():
    dry = parse_policy({**RESIDENCY.document, "mode": "dry-run"}, version=4)
    profile = with_policies(default_profile(), [dry])
    t = with_attrs(task("a"), attrs({"residency": "eu"}))
    plan = schedule(view(*nodes(n_eu=0)), [t], profile, random.Random(1))
    assert len(plan.placements) == 1
    flt = next(f for f in profile.filters if f.name == "policy")
    found = flt.decision(t, plan.placements[0].node_id)
    assert [(f.ref, f.allowed, f.dry_run) for f in found] == [("residency-eu v4", False, True)]


def test_cpu_share_counts_what_this_pass_placed():
    share = parse_policy({"name": "share", "kind": "limits", "limits": {"max_cpu_share": 0.5}}, version=1)
    profile = with_policies(default_profile(), [share])
    foreign = [with_attrs(task(f"f{i}", seq=i, domain="ops", resources=res(1, 1)), attrs(domain="ops"), "ops")
               for i in range(4)]
    plan = schedule(view(node("n", cpu=4, domain="acme")), foreign, profile, random.Random(1))
    assert len(plan.placements) == 2  # half of 4 cpu
    assert any("cpu share" in k for k in plan.unplaced[0].reason_summary)


def test_no_attributes_no_cost():
    profile = with_policies(default_profile(), [RESIDENCY])
    plan = schedule(view(*nodes()), [task("a")], profile, random.Random(1))
    assert len(plan.placements) == 1


def test_a_blocking_remediation_policy_keeps_new_tasks_off_nodes_that_violate_it():
    block = parse_policy({"name": "must-be-eu", "kind": "remediation", "action": "block",
                          "allow": 'node.labels.region == "eu"'}, version=2)
    profile = with_policies(default_profile(), [block])
    t = with_attrs(task("a"), attrs())
    plan = schedule(view(*nodes(n_eu=1, n_us=3)), [t], profile, random.Random(1))
    assert plan.placements[0].node_id == "eu0"
    none = schedule(view(*nodes(n_eu=0)), [t], profile, random.Random(1))
    assert "policy must-be-eu v2 (network)" in none.unplaced[0].reason_summary
