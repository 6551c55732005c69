"""Explaining unplaced tasks reuses a class's CLASS/CYCLE answers per node version and works out
preemption candidates only when preemption looks at them (`pipeline.EXPLAIN_SHORTCUTS`); a class
remembers the nodes its TASK filters refused per policy class (`pipeline.REMEMBER_TASK_REFUSALS`):
plans must be exactly those made without these shortcuts, explanations and preemptions included."""

from __future__ import annotations

import dataclasses
import random

import pytest

from polyfabric.domain.policy import compile_rule, job_context, parse_policy, task_context
from polyfabric.scheduling import default_profile, pipeline, schedule
from polyfabric.scheduling.filters.policy import PolicyAttributes
from polyfabric.scheduling.registry import with_policies

from .builders import node, res, running, task, view

POLICIES = [parse_policy(doc, version=1) for doc in (
    {"name": "residency-eu", "kind": "placement", "when": 'task.labels.residency == "eu"',
     "allow": 'node.labels.region == "eu"'},
    {"name": "arch", "kind": "placement", "allow": 'node.labels.arch == "amd64"'},
    {"name": "globex-trust", "kind": "placement", "scope": "domain:globex",
     "allow": 'node.domain in ["globex", "acme"] || task.cpu <= 1000'},
    {"name": "share", "kind": "limits", "scope": "domain:acme", "limits": {"max_cpu_share": 0.5}},
    {"name": "dry", "kind": "placement", "mode": "dry-run", "allow": "task.cpu <= 2000"},
)]


def scenario(seed: int):
    rng = random.Random(seed)
    nodes = []
    for i in range(60):
        domain = rng.choice(["acme", "globex", "initech"])
        busy = [running(f"r{i}-{j}", f"n{i}", priority=rng.randint(0, 3), resources=res(1, 1), domain=domain)
                for j in range(rng.randint(0, 3))]
        nodes.append(node(f"n{i}", cpu=rng.choice([4, 8]), mem_gi=16, slots=8, domain=domain, running=busy,
                          labels={"region": rng.choice(["eu", "us", "us"]), "arch": rng.choice(["amd64", "arm64"])}))
    profile = with_policies(default_profile(), POLICIES)
    flt = next(f for f in profile.filters if f.name == "policy")
    tasks = []
    for i in range(400):
        domain = rng.choice(["acme", "globex", "initech"])
        cpu = rng.choice([1, 2, 3])
        labels = {"residency": "eu"} if rng.random() < 0.3 else {}
        requires = 'node.labels.region != "us"' if rng.random() < 0.1 else None
        t = task_context(name=f"s{cpu}", labels=labels, cpu=cpu * 1000, domain=domain)
        attrs = PolicyAttributes(job=job_context(id=f"j{i % 40}", name="wf", domain=domain, tasks=[t]), task=t,
                                 requires=compile_rule(requires, "requires") if requires else None)
        excluded = {f"n{rng.randrange(60)}"} if rng.random() < 0.1 else set()
        base = task(f"t{i}", seq=i, priority=rng.randint(0, 6), resources=res(cpu, 1), workflow=f"j{i % 40}",
                    domain=domain, excluded=excluded)
        base = dataclasses.replace(base, attributes=attrs)
        tasks.append(dataclasses.replace(base, policy_class=flt.policy_class(attrs, (base.workflow_id, cpu))))
    return view(*nodes), tasks, profile


def plan_of(monkeypatch: pytest.MonkeyPatch, memo: bool, seed: int, switch: str = "EXPLAIN_SHORTCUTS"):
    monkeypatch.setattr(pipeline, switch, memo)
    cluster, tasks, profile = scenario(seed)
    plan = schedule(cluster, tasks, profile, random.Random(seed), now=1_790_000_000.0)
    unplaced = [(u.task_id, dict(u.reason_summary), u.blocked_by, u.status, u.waiting_for) for u in plan.unplaced]
    return plan, (plan.placements, plan.preemptions, unplaced)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_plans_are_the_same_with_and_without_the_explanation_shortcuts(monkeypatch, seed):
    fast, with_memo = plan_of(monkeypatch, True, seed)
    _slow, without = plan_of(monkeypatch, False, seed)
    assert with_memo == without
    # The scenario exercises what the memo serves: unplaced tasks explained, and classes explained
    # more than once (the explanations walk more nodes than one walk of the cluster).
    assert fast.unplaced and fast.placements
    assert fast.stats["explained_nodes"] > 60


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_plans_are_the_same_with_and_without_remembering_task_refusals(monkeypatch, seed):
    """A CPU share or a policy that refused a node for a kind of task refuses it for the rest of
    the pass (what they count only grows): not asking again changes nothing but the work."""
    fast, remembered = plan_of(monkeypatch, True, seed, "REMEMBER_TASK_REFUSALS")
    slow, asked = plan_of(monkeypatch, False, seed, "REMEMBER_TASK_REFUSALS")
    assert remembered == asked
    assert fast.stats["task_refusals_remembered"] > 0 and slow.stats["task_refusals_remembered"] == 0
