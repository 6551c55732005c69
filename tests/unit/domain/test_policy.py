"""Policies (domain/policy.py): parsing, evaluation, combination (deny wins, every decision has its
reasons), the node owner's policy, and the signed answer bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.policy import (
    Evaluator,
    Finding,
    OwnerPolicy,
    admission,
    answer_bytes,
    combine,
    job_context,
    node_context,
    parse_owner_policy,
    parse_policy,
    placement,
    remediation,
    task_context,
    time_context,
)

NOON = 1_790_000_000.0 - (1_790_000_000 % 86400) + 12 * 3600  # 12:00 UTC

RESIDENCY = {"name": "residency-eu", "kind": "placement", "scope": "network",
             "when": '"residency" in task.labels && task.labels.residency == "eu"',
             "allow": 'has(node.labels.region) && node.labels.region in ["eu-west", "eu-central"]',
             "reason": "EU data stays on EU nodes"}


def job(domain: str = "lab", **kw):
    tasks = kw.pop("tasks", [task_context(name="a")])
    return job_context(id="j-1", name="wf", domain=domain, tasks=tasks, **kw)


def node(region: str | None = "eu-west", domain: str = "lab", cpu: int = 4000):
    labels = {"region": region} if region else {}
    return node_context(id="n-1", name="n1", domain=domain, labels=labels, cpu=cpu)


# -- findings and combination ----------------------------------------------------------------------

findings = st.builds(
    Finding,
    scope=st.sampled_from(["network", "domain:lab", "domain:ops", "node"]),
    policy=st.text("abcdef", min_size=1, max_size=5),
    version=st.integers(1, 9),
    allowed=st.booleans(),
    reason=st.text("xyz ", max_size=8),
    dry_run=st.booleans(),
)


@given(st.lists(findings, max_size=12))
def test_a_deny_at_any_scope_wins_and_every_decision_has_reasons(found):
    decision = combine(found)
    enforced_denies = [f for f in found if not f.allowed and not f.dry_run]
    assert decision.allowed == (not enforced_denies)
    assert decision.reasons  # never empty: "no policy applies" at least
    assert len(decision.denies) == len(enforced_denies)
    for deny in decision.denies:  # each deny names scope, policy and version
        text = deny.describe()
        assert deny.scope in text and f"{deny.policy} v{deny.version}" in text
    assert all(f.dry_run for f in decision.would_deny)
    assert len(decision.allowed_by) == sum(1 for f in found if f.allowed)


@given(st.lists(findings, max_size=8), findings)
def test_adding_a_dry_run_policy_never_changes_the_outcome(found, extra):
    dry = Finding(extra.scope, extra.policy, extra.version, False, extra.reason, True)
    assert combine([*found, dry]).allowed == combine(found).allowed


@given(st.lists(findings, max_size=8))
def test_the_order_of_policies_does_not_matter(found):
    assert combine(found).allowed == combine(list(reversed(found))).allowed
    assert combine(found).denies == combine(list(reversed(found))).denies


def test_network_denies_are_listed_first():
    d = combine([Finding("node", "o", 1, False, "x"), Finding("domain:lab", "d", 2, False, "y"),
                 Finding("network", "n", 3, False, "z")])
    assert [f.scope for f in d.denies] == ["network", "domain:lab", "node"]


# -- parsing --------------------------------------------------------------------------------------


def test_a_bad_document_names_every_bad_field():
    with pytest.raises(ValidationError) as info:
        parse_policy({"name": "bad name", "kind": "placment", "scope": "everywhere", "mode": "maybe",
                      "allow": "node.labels.", "colour": 1})
    text = str(info.value)
    for word in ("name", "kind", "scope", "mode", "allow", "colour"):
        assert word in text, text


def test_admission_policies_cannot_read_the_node_and_unknown_variables_are_refused():
    with pytest.raises(ValidationError, match="cannot read node"):
        parse_policy({"name": "a", "kind": "admission", "allow": "node.cpu > 1"})
    with pytest.raises(ValidationError, match="unknown variable"):
        parse_policy({"name": "a", "kind": "admission", "allow": "jobs.priority < 5"})


# -- evaluation -----------------------------------------------------------------------------------


def test_residency_policy_applies_only_to_resident_tasks_and_denies_outside_the_region():
    policy = parse_policy(RESIDENCY, version=3)
    eu = task_context(name="a", labels={"residency": "eu"})
    plain = task_context(name="a")
    assert placement([policy], job(), eu, node("eu-west"), NOON).allowed
    denied = placement([policy], job(), eu, node("us-east"), NOON)
    assert not denied.allowed
    assert denied.denies[0].ref == "residency-eu v3" and "EU data" in denied.describe()
    assert placement([policy], job(), eu, node(None), NOON).allowed is False  # no region label: denied
    unrelated = placement([policy], job(), plain, node("us-east"), NOON)
    assert unrelated.allowed and unrelated.reasons == ("no policy applies",)


def test_a_domain_policy_binds_its_jobs_and_its_nodes_only():
    policy = parse_policy({"name": "lab-only-small", "kind": "placement", "scope": "domain:lab",
                           "allow": "task.cpu <= 1000", "reason": "lab nodes take small tasks"}, version=1)
    big = task_context(name="a", cpu=2000)
    assert not placement([policy], job("lab"), big, node(domain="ops"), NOON).allowed  # lab's job
    assert not placement([policy], job("ops"), big, node(domain="lab"), NOON).allowed  # lab's node
    assert placement([policy], job("ops"), big, node(domain="ops"), NOON).allowed  # neither


def test_a_domain_deny_overrides_a_network_allow():
    allow = parse_policy({"name": "anything", "kind": "placement", "allow": "true"}, version=1)
    deny = parse_policy({"name": "no-gpu-free", "kind": "placement", "scope": "domain:lab",
                         "allow": "false", "reason": "closed"}, version=2)
    decision = placement([allow, deny], job("lab"), task_context(name="a"), node(), NOON)
    assert not decision.allowed
    assert decision.denies[0].scope == "domain:lab" and decision.allowed_by[0].ref == "anything v1"


def test_an_allow_that_fails_to_evaluate_denies_and_says_why():
    policy = parse_policy({"name": "zone", "kind": "placement", "allow": 'node.labels.zone == "a"'}, version=1)
    decision = placement([policy], job(), task_context(name="a"), node(), NOON)
    assert not decision.allowed and "could not be evaluated" in decision.describe()


def test_dry_run_records_without_denying():
    policy = parse_policy({**RESIDENCY, "mode": "dry-run"}, version=1)
    decision = placement([policy], job(), task_context(name="a", labels={"residency": "eu"}), node("us"), NOON)
    assert decision.allowed and decision.would_deny and "would deny" in decision.describe()


def test_admission_sees_the_job_and_its_tasks_and_limits_check_commands_and_runtime():
    cap = parse_policy({"name": "prio-cap", "kind": "admission", "scope": "domain:lab",
                        "allow": "job.priority <= 10", "reason": "lab jobs run at priority 10 or less"}, version=4)
    fanout = parse_policy({"name": "fanout", "kind": "admission", "allow": "job.task_count <= 2"}, version=1)
    limits = parse_policy({"name": "cmds", "kind": "limits",
                           "limits": {"commands": ["python3"], "max_runtime": "1h"}}, version=1)
    ok_task = task_context(name="a", command=["/usr/bin/python3", "x"], timeout_s=60)
    assert admission([cap, fanout, limits], job(priority=5, tasks=[ok_task]), NOON).allowed
    high = admission([cap], job(priority=50), NOON)
    assert not high.allowed and "prio-cap v4" in high.describe()
    assert admission([cap], job("ops", priority=50), NOON).allowed  # another domain's rule
    shell = admission([limits], job(tasks=[task_context(name="b", command=["sh", "-c", "x"], timeout_s=5)]), NOON)
    assert not shell.allowed and "'sh' is not allowed" in shell.describe()
    endless = admission([limits], job(tasks=[task_context(name="b", command=["python3"])]), NOON)
    assert not endless.allowed and "maximum runtime" in endless.describe()


def test_cpu_share_limit_for_foreign_domains():
    share = parse_policy({"name": "share", "kind": "limits", "limits": {"max_cpu_share": 0.5}}, version=1)
    t = task_context(name="a", cpu=1000, domain="ops")
    assert placement([share], job("ops"), t, node(domain="lab", cpu=4000), NOON, foreign_cpu=1000).allowed
    assert not placement([share], job("ops"), t, node(domain="lab", cpu=4000), NOON, foreign_cpu=1500).allowed
    own = task_context(name="a", cpu=4000, domain="lab")
    assert placement([share], job("lab"), own, node(domain="lab"), NOON, foreign_cpu=4000).allowed


def test_remediation_names_the_action():
    rule = parse_policy({"name": "must-encrypt", "kind": "remediation", "action": "cordon",
                         "allow": '"encrypted" in node.labels'}, version=1)
    found = remediation([rule], node(), NOON)
    assert [(p.action, f.policy) for p, f in found] == [("cordon", "must-encrypt")]


# -- the owner's policy ---------------------------------------------------------------------------


def test_owner_policy_accepts_and_declines_with_a_reason():
    owner = parse_owner_policy({"accept": {"domains": ["lab"], "hours": "08:00-18:00", "max_cpu_share": 0.5,
                                           "require_labels": {"team": "ml"}}, "rank": "job.priority"})
    ml = task_context(name="a", labels={"team": "ml"}, cpu=1000)
    assert owner.decide(job("lab"), ml, node(domain="ops"), NOON).allowed
    assert "domain 'ops'" in owner.decide(job("ops"), ml, node(domain="ops"), NOON).reason
    assert "08:00-18:00" in owner.decide(job("lab"), ml, node(), NOON + 8 * 3600).reason
    assert "team=ml" in owner.decide(job("lab"), task_context(name="a"), node(), NOON).reason
    big = task_context(name="a", labels={"team": "ml"}, cpu=3000)
    assert "CPU" in owner.decide(job("lab"), big, node(domain="ops", cpu=4000), NOON).reason
    assert owner.score(job("lab", priority=7), ml, node(), NOON) == 7.0
    assert OwnerPolicy().decide(job(), ml, node(), NOON).allowed  # no file: everything is accepted


WHENS = ["job.priority >= 1 || task.cpu <= 4000", 'has(job.labels.team) && job.labels.team == "ml"',
         'node.labels.region == "eu-west" && now.hour >= 8', "size(job) > 3 && task.gpus == 0",
         "job.nothing == 1", 'task.labels.tier == "gold"']


@pytest.mark.parametrize("when", WHENS)
@pytest.mark.parametrize("priority", [0, 3])
@pytest.mark.parametrize("labels", [{}, {"team": "ml"}])
def test_an_owners_when_answers_as_over_the_whole_maps(when, priority, labels):
    """The owner's `when` is handed only the fields it reads (converting whole maps into CEL
    values was most of an answer's cost): the same answer, the same reason, as over the whole
    maps, missing keys and rules that read a map whole included."""
    owner = parse_owner_policy({"accept": {"when": when}})
    the_job = job("lab", priority=priority, labels=labels)
    the_task = task_context(name="a", cpu=2000 if priority else 8000, labels={"tier": "gold"} if labels else {})
    the_node = node()
    got = owner.decide(the_job, the_task, the_node, NOON)
    whole = Evaluator().bind(job=the_job, task=the_task, node=the_node, now=time_context(NOON))
    ok, problem = whole.truth(owner.when)
    assert got.allowed == (ok is True)
    if ok is None:
        assert problem in got.reason, (got.reason, problem)


def test_owner_policy_file_problems_are_named():
    with pytest.raises(ValidationError) as info:
        parse_owner_policy({"domains": "lab", "hours": "morning", "on_change": "explode", "wen": "true"})
    for word in ("domains", "hours", "on_change", "wen"):
        assert word in str(info.value)


def test_owner_policy_checkpoint_grace_bounds_the_stop_after_a_reload():
    assert parse_owner_policy({"on_change": "stop"}).checkpoint_grace_s == 10.0  # the documented default
    assert parse_owner_policy({"on_change": "stop", "checkpoint_grace": "2m"}).checkpoint_grace_s == 120.0
    assert parse_owner_policy({"accept": {"checkpoint_grace": 0}}).checkpoint_grace_s == 0.0  # stop at once
    assert parse_owner_policy({"checkpoint_grace": "0s"}).checkpoint_grace_s == 0.0
    for bad in ("soon", -5, True):
        with pytest.raises(ValidationError, match="checkpoint_grace"):
            parse_owner_policy({"on_change": "stop", "checkpoint_grace": bad})


def test_answer_bytes_are_canonical():
    assert answer_bytes({"b": 1, "a": "x"}) == b'{"a":"x","b":1}'
