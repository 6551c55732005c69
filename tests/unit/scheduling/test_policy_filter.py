"""The policy plugins in the scheduler (scheduling/filters/policy.py): placement policies and the
job's `requires` as a CLASS filter, CPU share as a CYCLE filter, `rank` as a scorer; explanations
count nodes by policy and version."""

from __future__ import annotations

import dataclasses
import random

from polyfabric.domain.policy import compile_rule, job_context, parse_policy, placement, task_context
from polyfabric.scheduling import default_profile, schedule
from polyfabric.scheduling.filters.policy import PolicyAttributes, PolicyFilter, PolicyShareFilter, node_variables
from polyfabric.scheduling.framework import CycleState, Status
from polyfabric.scheduling.registry import with_policies

from .builders import node, res, running, task, view

NOON = 1_790_000_000.0 - 1_790_000_000.0 % 86400 + 12 * 3600

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


def test_a_cpu_share_limit_with_foreign_only_false_counts_every_domains_cpu():
    """`foreign_only: false`: the cap holds for the node's own domain too, and counts all the CPU
    held on the node (running and placed by this pass), not only other domains'."""
    share = parse_policy({"name": "share-all", "kind": "limits",
                          "limits": {"max_cpu_share": 0.5, "foreign_only": False}}, version=1)
    profile = with_policies(default_profile(), [share])
    busy = node("n", cpu=8, domain="acme", running=[running("r0", "n", domain="acme", resources=res(2, 1))])
    own = [with_attrs(task(f"a{i}", seq=i, domain="acme", resources=res(1, 1)), attrs(domain="acme"), "acme")
           for i in range(4)]
    plan = schedule(view(busy), own, profile, random.Random(1))
    assert len(plan.placements) == 2  # 2 cpu running + 2 placed = half of 8, own domain included
    assert any("share-all" in k for k in plan.unplaced[0].reason_summary)
    # The default (foreign_only: true) leaves the own domain alone.
    default = parse_policy({"name": "share", "kind": "limits", "limits": {"max_cpu_share": 0.5}}, version=1)
    plan = schedule(view(busy), own, with_policies(default_profile(), [default]), random.Random(1))
    assert len(plan.placements) == 4


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


def test_a_cpu_share_limit_with_when_caps_only_the_tasks_it_names_and_builds_no_evaluator_per_check(
        monkeypatch):
    share = parse_policy({"name": "batch-share", "kind": "limits", "when": 'task.labels.kind == "batch"',
                          "limits": {"max_cpu_share": 0.5}}, version=1)
    profile = with_policies(default_profile(), [share])
    import polyfabric.scheduling.filters.policy as module

    def no_new_evaluator() -> None:
        raise AssertionError("an Evaluator built per check")

    monkeypatch.setattr(module, "Evaluator", no_new_evaluator)  # the filter keeps the one it was built with
    other = [with_attrs(task(f"o{i}", seq=i, domain="ops", resources=res(1, 1)),
                        attrs({"kind": "web"}, domain="ops"), "web") for i in range(2)]
    batch = [with_attrs(task(f"b{i}", seq=10 + i, domain="ops", resources=res(1, 1)),
                        attrs({"kind": "batch"}, domain="ops"), "batch") for i in range(4)]
    plan = schedule(view(node("n", cpu=8, domain="acme")), batch + other, profile, random.Random(1))
    placed = {p.task_id for p in plan.placements}
    assert {"o0", "o1"} <= placed  # the limit does not apply to them
    # batch: while foreign work (the web tasks placed first included) stays within half of 8 cpu
    assert len(placed & {f"b{i}" for i in range(4)}) == 2
    assert all("cpu share" in next(iter(u.reason_summary)) for u in plan.unplaced)


AGREE = [
    RESIDENCY,
    parse_policy({"name": "zoned", "kind": "remediation", "action": "block", "allow": "has(node.labels.zone)"},
                 version=1),
    parse_policy({"name": "retire-old", "kind": "remediation", "action": "cordon",
                  "allow": '!has(node.labels.tier) || node.labels.tier != "old"'}, version=1),  # a controller's
    parse_policy({"name": "lab-low", "kind": "placement", "scope": "domain:lab", "allow": "job.priority < 5"},
                 version=2),
    parse_policy({"name": "try-gpu", "kind": "placement", "mode": "dry-run", "allow": "node.gpus > 0"}, version=1),
    parse_policy({"name": "batch-share", "kind": "limits", "when": 'task.labels.kind == "batch"',
                  "limits": {"max_cpu_share": 0.5}}, version=1),
    parse_policy({"name": "ops-share", "kind": "limits", "scope": "domain:ops",
                  "limits": {"max_cpu_share": 0.75, "foreign_only": False, "max_runtime": "1m"}}, version=1),
]


def test_the_scheduler_filters_and_placement_decide_alike():
    """`policy test` (domain.policy.placement) and the scheduler's `policy` + `policy_share` filters
    give the same answer for every task and node, whatever kinds of policy are in force."""
    rng = random.Random(6)
    domains = ("lab", "ops", "acme")
    for case in range(300):
        labels = {k: v for k, v in (("zone", rng.choice(["a", None])), ("region", rng.choice(["eu", "us"])),
                                    ("tier", rng.choice(["old", "new"]))) if v is not None}
        node_domain, task_domain = rng.choice(domains), rng.choice(domains)
        held = [running(f"r{i}", "n", domain=rng.choice(domains), resources=res(rng.choice([0.5, 1, 2]), 1))
                for i in range(rng.randint(0, 3))]
        n = node("n", cpu=8, domain=node_domain, labels=labels, running=held)
        t = task_context(name="w", labels={k: v for k, v in (("kind", rng.choice(["batch", "web"])),
                                                                ("residency", rng.choice(["eu", None])))
                                           if v is not None},
                         cpu=rng.choice([500, 1000, 3000]), domain=task_domain)
        j = job_context(id="j", name="wf", domain=task_domain, priority=rng.randint(0, 9), tasks=[t])
        a = PolicyAttributes(job=j, task=t)
        flt, share = PolicyFilter(AGREE), PolicyShareFilter(AGREE)
        request = dataclasses.replace(task("t", domain=task_domain, resources=res(t["cpu"] / 1000, 1)),
                                      policy_class=flt.policy_class(a, "wf/w"), attributes=a)
        cycle = CycleState(view(n), now=NOON)
        passes = all(f.check(request, n, cycle).status == Status.PASS for f in (flt, share))
        foreign = sum(r.resources.cpu_millis for r in held if r.domain != node_domain)
        total = sum(r.resources.cpu_millis for r in held)
        decision = placement(AGREE, j, t, node_variables(n), NOON, foreign_cpu=foreign, total_cpu=total)
        assert passes == decision.allowed, (case, decision.describe(), n, t)


def test_foreign_cpu_is_kept_incrementally_and_matches_a_recount():
    n = node("n", cpu=16, domain="acme", running=[running("r1", "n", domain="ops", resources=res(2, 1)),
                                                   running("r2", "n", domain="acme", resources=res(1, 1))])
    c = CycleState(view(n))
    assert c.foreign_cpu("n") == 2000
    placed = [task("a", domain="ops", resources=res(1, 1)), task("b", domain="acme", resources=res(3, 1)),
              task("c", domain="lab", resources=res(4, 1))]
    for i, t in enumerate(placed):
        c.commit(t, "n")
        recount = 2000 + sum(p.resources.cpu_millis for p in placed[:i + 1] if p.domain != "acme")
        assert c.foreign_cpu("n") == recount
        assert c.foreign_cpu("n") == recount  # asked again without a change: the same


def test_the_share_verdict_is_reused_until_the_node_changes():
    share = parse_policy({"name": "share", "kind": "limits", "limits": {"max_cpu_share": 0.5}}, version=1)
    flt = PolicyShareFilter([share])
    n = node("n", cpu=4, domain="acme")
    c = CycleState(view(n))
    t = with_attrs(task("t", domain="ops", resources=res(1, 1)), attrs(domain="ops"), "ops")
    assert flt.check(t, n, c).passed and flt.check(t, n, c).passed
    c.commit(with_attrs(task("x", domain="ops", resources=res(1, 1)), attrs(domain="ops"), "ops"), "n")
    assert flt.check(t, n, c).passed  # 1 + 1 of 4 cpu
    c.commit(with_attrs(task("y", domain="ops", resources=res(1, 1)), attrs(domain="ops"), "ops"), "n")
    refused = flt.check(t, n, c)
    assert refused.status is Status.NOT_NOW and "cpu share" in refused.summary
    own = with_attrs(task("o", domain="acme", resources=res(1, 1)), attrs(domain="acme"), "acme")
    assert flt.check(own, n, c).passed  # the node's own domain: no foreign limit


def _count_evaluations(flt: PolicyFilter) -> list[str]:
    """Wrap the filter's evaluator: the returned list gets the source of every rule it evaluates."""
    calls: list[str] = []
    real = flt._ev

    class Counting:
        def truth(self, rule):
            calls.append(rule.source)
            return real.truth(rule)

        def __getattr__(self, name):
            return getattr(real, name)

    flt._ev = Counting()  # type: ignore[assignment]
    return calls


def test_a_requires_over_the_node_alone_is_evaluated_once_per_node_for_every_policy_class():
    flt = PolicyFilter([RESIDENCY])
    ns = nodes(n_eu=1, n_us=1)
    c = CycleState(view(*ns))
    calls = _count_evaluations(flt)
    for cls in ("c1", "c2", "c3"):
        t = with_attrs(task(f"t-{cls}"), attrs({"x": cls}, requires='node.labels.region == "us"'), cls)
        assert [flt.check(t, n, c).passed for n in ns] == [False, True]
    assert calls.count('node.labels.region == "us"') == 2  # once per node, not per class and node


def test_the_share_fast_path_refuses_exactly_where_share_findings_does():
    from polyfabric.domain.policy import share_findings

    limits = [
        parse_policy({"name": "net", "kind": "limits", "limits": {"max_cpu_share": 0.5}}, version=1),
        parse_policy({"name": "ops", "kind": "limits", "scope": "domain:ops",
                      "limits": {"max_cpu_share": 0.25, "foreign_only": False}}, version=2),
        parse_policy({"name": "dry", "kind": "limits", "mode": "dry-run", "limits": {"max_cpu_share": 0.1}},
                     version=1),
    ]
    rng = random.Random(5)
    for subset in (limits, limits[1:], limits[2:], limits[:1]):
        flt = PolicyShareFilter(subset)
        for _ in range(60):
            n = node("n", cpu=rng.choice([0, 4, 8]), domain=rng.choice(["acme", "ops"]),
                     running=[running(f"r{i}", "n", domain=rng.choice(["acme", "ops", "lab"]), resources=res(1, 1))
                              for i in range(rng.randrange(4))])
            c = CycleState(view(n))
            domain = rng.choice(["acme", "ops", "lab"])
            t = with_attrs(task("t", domain=domain, resources=res(rng.choice([1, 2, 3]), 1)), attrs(domain=domain))
            denies = [f for f in share_findings(subset, {"domain": domain, "cpu": t.resources.cpu_millis},
                                                {"domain": n.domain, "cpu": n.capacity.cpu_millis, "name": n.name},
                                                lambda n=n, c=c: c.foreign_cpu(n.id), lambda rule: True,
                                                total_cpu=lambda n=n, c=c: n.capacity.cpu_millis
                                                - c.free(n.id).cpu_millis,
                                                only_denies=True) if not f.dry_run]
            verdict = flt.check(t, n, c)
            assert verdict.passed == (not denies)
            if denies:
                assert verdict.status is Status.NOT_NOW and denies[0].ref in verdict.summary


def test_an_allow_over_node_fields_is_evaluated_once_per_value_of_those_fields():
    trust = parse_policy({"name": "trust", "kind": "placement", "allow": 'node.domain != "acme"'}, version=1)
    flt = PolicyFilter([trust])
    ns = [node(f"a{i}", domain="acme") for i in range(3)] + [node(f"o{i}", domain="ops") for i in range(3)]
    c = CycleState(view(*ns))
    calls = _count_evaluations(flt)
    t = with_attrs(task("t"), attrs(domain="lab"), "lab")
    assert [flt.check(t, n, c).passed for n in ns] == [False] * 3 + [True] * 3
    assert "trust" in flt.check(t, ns[1], c).summary
    assert len(calls) == 2  # one per node domain, not one per node
