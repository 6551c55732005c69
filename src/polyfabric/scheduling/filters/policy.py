"""Placement policies and the job's own requirements, as scheduler plugins (not around them).

* `policy` (TASK filter): every applicable placement policy (network, the job's domain, the
  node's domain) must allow the task on the node, and the task's `requires:` CEL must hold on
  it. A refusal's summary names the policy and its version ("policy residency-eu v3 (network)"),
  so an unplaced task's explanation counts nodes by the policy that ruled them out.
* `policy_share` (TASK filter): limits policies' `max_cpu_share`: what other domains' tasks may
  hold of a node's CPU (all tasks, with `foreign_only: false`), counting what runs there and what
  this pass placed.
* `policy_rank` (CLASS scorer, keyed by the rank): the task's `rank:` CEL over the node, 0..100.
* `owner_rank` (TASK scorer): the node owner's advertised `rank` over jobs, 0..100.

Why TASK scope: tasks carry `policy_class` (one per job and workflow task) and `attributes` (a
`PolicyAttributes`); as CLASS plugins they would split the pipeline's equivalence classes by job,
and every class would walk the nodes again. As TASK plugins they are asked only on each task's
best candidates, and they share their answers through their own caches, keyed by what a rule
actually reads:

* the answer for (policy_class, node) is kept for the pass (tasks of one job task share it);
* a `when` that reads no node is evaluated once per distinct value of the job/task fields it
  names (`task.labels`, `job.priority`, ...), and a policy that does not apply is skipped for the
  whole class;
* an `allow` is evaluated once per (those field values, node) — for a rule that reads only the
  node, once per node for every job;
* compiled programs are shared by text (domain/policy.py).

`decision(task, node_id)` gives the runtime, after a pass, the policy versions that allowed a
placement and the dry-run denies it carries (from the pass's cache: no second evaluation).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from polyfabric.domain.policy import (
    Evaluator,
    Finding,
    OwnerPolicy,
    Policy,
    Rule,
    judge,
    placement_rules,
    read_by,
    share_findings,
    share_limits,
    time_context,
)
from polyfabric.scheduling.framework import PASS, CycleState, Scope, Status, Verdict
from polyfabric.scheduling.view import NodeView, TaskRequest

__all__ = ["OwnerRankScorer", "PolicyAttributes", "PolicyFilter", "PolicyRankScorer", "PolicyShareFilter",
           "node_variables", "rule_fields"]

_FIELD = re.compile(r"\b(job|task)\s*\.\s*([A-Za-z_]\w*)")
_BARE = re.compile(r"\b(job|task)\b(?!\s*\.)")


@dataclass(frozen=True, slots=True)
class PolicyAttributes:
    """What policies see of a task: the job and task maps (domain/policy.py's contexts) and the
    job's own requirement and preference over nodes."""

    job: Mapping[str, Any]
    task: Mapping[str, Any]
    requires: Rule | None = None
    rank: Rule | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def node_variables(node: NodeView) -> dict[str, Any]:
    cap = node.capacity
    return {"id": node.id, "name": node.name, "domain": node.domain, "labels": dict(node.labels),
            "state": node.state.value, "cpu": cap.cpu_millis, "memory": cap.memory_bytes, "gpus": cap.gpus,
            "slots": cap.slots}


_READ: dict[str, tuple[tuple[str, str], ...] | None] = {}  # rule text -> rule_fields(), as compile_rule keeps programs


def rule_fields(rule: Rule) -> tuple[tuple[str, str], ...] | None:
    """The (job|task, field) pairs a rule reads; None when it uses `job` or `task` whole (then its
    answer is shared only by tasks of the same policy class). Worked out once per rule text: the
    scheduler asks on hot paths."""
    text = rule.source
    found = _READ.get(text, False)
    if found is not False:
        return found  # type: ignore[return-value]
    found = None if _BARE.search(text) else tuple(sorted(set(_FIELD.findall(text))))
    if len(_READ) < 10_000:
        _READ[text] = found
    return found


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _freeze(value: Any) -> Hashable:
    if type(value) in _SCALARS:  # most values: no ABC check (isinstance(_, Mapping) is slow)
        return value  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value  # type: ignore[no-any-return]


class _Prepared:
    """A policy with what its rules read, worked out once per filter."""

    __slots__ = ("allow_fields", "allow_node", "domain", "policy", "when_fields", "when_node")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.domain = policy.domain
        self.when_node = policy.when is not None and "node" in policy.when.variables
        self.when_fields = rule_fields(policy.when) if policy.when is not None else ()
        self.allow_node = policy.allow is not None and "node" in policy.allow.variables
        self.allow_fields = rule_fields(policy.allow) if policy.allow is not None else ()


def _key(fields: tuple[tuple[str, str], ...] | None, task: TaskRequest | None, attrs: PolicyAttributes) -> Hashable:
    if fields is None:
        return ("class", task.policy_class if task is not None else None)
    if not fields:
        return ()
    return tuple(_freeze((attrs.job if var == "job" else attrs.task).get(name)) for var, name in fields)


class _PassCache:
    """What one pass needs at hand (kept in `cycle.scratch`): its clock reading, each node's
    cache key, and the answers it gave (for `decision()`)."""

    __slots__ = ("allows", "class_time", "cycle", "nodekeys", "nodeparts", "pairs", "time", "timekey")

    def __init__(self, cycle: CycleState, filter_: PolicyFilter) -> None:
        self.cycle = cycle
        self.time = time_context(cycle.now)
        self.timekey = tuple(sorted(self.time.items())) if filter_._timed else None
        self.class_time = tuple(filter_._tkey(p.policy.when, self.time) for p in filter_._prepared
                                if not p.when_node)
        self.nodekeys: dict[str, Hashable] = {}
        self.nodeparts: dict[tuple[str, tuple[str, ...]], Hashable] = {}  # (node id, fields) -> their values
        # policy class -> node id -> (verdict, findings): nested, so that a hit builds no key
        self.pairs: dict[Hashable, dict[str, tuple[Verdict, tuple[Finding, ...]]]] = {}
        # allow token (`_applicable`) -> node id -> the finding that allows, or the refusal's verdict
        self.allows: dict[int, dict[str, Finding | Verdict]] = {}


_MAX_CACHED = 1_000_000
_ABSENT = ("<absent>",)  # a node field a rule reads that the node map lacks (not the same as None)


class PolicyFilter:
    """Placement policies (all scopes) and the task's `requires:`; see the module docstring.

    Answers are cached for as long as the filter lives (until the policies change: the runtime
    builds a new one), keyed by everything they depend on: the policy, the values of the job and
    task fields its rule reads, the node's attributes when it reads the node, and the fields of
    `now` it reads. So a pass on an unchanged fabric evaluates almost nothing.
    """

    name = "policy"
    scope = Scope.TASK
    monotone = True  # per (policy class, node) the same answer all pass (pipeline.py memoizes refusals)

    def __init__(self, policies: Sequence[Policy] = ()) -> None:
        # Placement policies, and remediation policies whose action is `block`: a node that
        # violates one takes no new task (cordon / quarantine are left to a controller). The same
        # selection as domain.policy.placement(), which `policy test` uses.
        self.policies = placement_rules(policies)
        self._prepared = [_Prepared(p) for p in self.policies]
        self._last: _PassCache | None = None
        self._ev = Evaluator()
        self._nodes: dict[Hashable, dict[str, Any]] = {}  # node key -> the `node` map (one object per key)
        self._classes: dict[Hashable, list[tuple[_Prepared, Hashable]]] = {}
        self._answers: dict[Hashable, Any] = {}  # when / allow / pair answers, by their full keys
        self._class_ids: dict[Hashable, int] = {}  # policy_class(): key -> its id
        self._tokens: dict[Hashable, int] = {}  # (policy, what its allow reads of job and task) -> its token
        # id(attrs) -> (attrs, identity, the fields then, its class): the runtime hands the same
        # attributes object for every task of a job's task, pass after pass
        self._class_memo: dict[int, tuple[PolicyAttributes, Hashable, Any, int]] = {}
        self._next_class_id = 0
        # (variable, id(map), fields) -> (map, the map cut down to the fields a rule reads): CEL
        # converts what it is handed (~35 µs for a whole node, job or task map, ~5 µs for the one
        # or two fields a rule reads), and the same cut-down object is not converted again.
        self._cut: dict[tuple[str, int, tuple[str, ...]], tuple[Mapping[str, Any], dict[str, Any]]] = {}
        # Every job/task field any policy reads (None: some rule reads `job` or `task` whole).
        found: set[tuple[str, str]] = set()
        fields: tuple[tuple[str, str], ...] | None = ()
        for prep in self._prepared:
            for part in (prep.when_fields, prep.allow_fields):
                if part is None:
                    fields = None
                elif fields is not None:
                    found.update(part)
        share = [p for p in policies if p.kind == "limits" and p.when is not None]
        for policy in share:
            part = rule_fields(policy.when)  # type: ignore[arg-type]
            if part is None:
                fields = None
            else:
                found.update(part)
        self._fields = self._policy_fields = tuple(sorted(found)) if fields is not None else None
        self._owners_seen: frozenset[tuple[str, int]] = frozenset()
        self._owner_predicates: tuple[tuple[str, Any], ...] = ()
        self._class_generation = object()
        self._owner_ev = Evaluator()
        self._timed = any("now" in r.variables for p in self.policies for r in (p.when, p.allow) if r is not None)

    def _cache(self, cycle: CycleState) -> _PassCache:
        last = self._last
        if last is not None and last.cycle is cycle:
            return last
        cache = cycle.scratch.get(self.name)
        if cache is None:
            cache = cycle.scratch[self.name] = self._last = _PassCache(cycle, self)
            if len(self._answers) > _MAX_CACHED or len(self._nodes) > _MAX_CACHED // 10 \
                    or len(self._class_ids) > _MAX_CACHED // 10:
                self._class_ids.clear()  # safe: an id is never handed out twice
                self._answers.clear()
                self._nodes.clear()
                self._classes.clear()
                self._cut.clear()
        return cache

    def consider_owners(self, owners: Iterable[OwnerPolicy]) -> None:
        """Make `policy_class()` tell apart the tasks the nodes' owner policies (NodeView.owner)
        answer differently, so that tasks sharing a class share every cached answer. The job's
        domain is in the class already; what else an owner reads of a task enters as little as
        decides it: whether its required labels are there and whether a `when` over the job and
        task alone holds (one bit each, not the values behind them), the task's CPU where an owner
        caps a share, and the fields a `when` that also reads the node or the clock names. Call it
        before the pass's policy classes are worked out (cheap when nothing changed)."""
        owners = list(owners)
        seen = frozenset((o.digest, o.version) for o in owners)
        if seen == self._owners_seen:
            return
        self._owners_seen = seen
        fields = self._policy_fields
        extra: set[tuple[str, str]] = set()
        predicates: list[tuple[str, Any]] = []
        known: set[Hashable] = set()
        for owner in owners:
            if owner.max_cpu_share is not None:
                extra.add(("task", "cpu"))
            if owner.require_labels:
                wanted = tuple(sorted(owner.require_labels.items()))
                if ("labels", wanted) not in known:
                    known.add(("labels", wanted))
                    predicates.append(("labels", wanted))
            when = owner.when
            if when is not None and ("when", when.source) not in known:
                known.add(("when", when.source))
                if when.variables <= {"job", "task"}:
                    predicates.append(("when", when))
                else:
                    read = rule_fields(when)
                    if read is None:
                        fields = None
                    else:
                        extra.update(read)
        if fields is not None and extra:
            fields = tuple(sorted(set(fields) | extra))
        self._fields = fields
        self._owner_predicates = tuple(predicates)
        self._class_generation = object()  # every memoized policy class is stale now

    def _owner_bits(self, attrs: PolicyAttributes) -> tuple[bool, ...]:
        """Per owner predicate (`consider_owners`), whether the task meets it."""
        bits = []
        for kind, what in self._owner_predicates:
            if kind == "labels":
                labels = {**(attrs.job.get("labels") or {}), **(attrs.task.get("labels") or {})}
                bits.append(all(labels.get(k) == v for k, v in what))
            else:  # keyed by the values of the fields it reads: a few evaluations for all tasks
                fields = rule_fields(what)
                key = ("owner-when", what.source, _key(fields, None, attrs)) if fields is not None else None
                holds = self._answers.get(key) if key is not None else None
                if holds is None:
                    self._bind(what, attrs, None, {})
                    holds = self._ev.truth(what)[0] is True
                    if key is not None:
                        self._answers[key] = holds
                bits.append(holds)
        return tuple(bits)

    def _nodekey(self, cache: _PassCache, node: NodeView) -> Hashable:
        key = cache.nodekeys.get(node.id)
        if key is None:
            cap = node.capacity
            owner = node.owner
            key = cache.nodekeys[node.id] = (node.id, node.name, node.domain, node.state.value,
                                             tuple(sorted(node.labels.items())),
                                             (cap.cpu_millis, cap.memory_bytes, cap.gpus, cap.slots),
                                             (owner.digest, owner.version) if owner is not None else None)
        return key

    def _node_part(self, cache: _PassCache, rule: Rule, nodekey: Hashable, node: NodeView) -> Hashable:
        """What a rule's answer depends on of the node: the values of the node fields it reads
        (`node.domain`: one answer per domain, not per node), or the whole node when it reads
        the map whole."""
        fields = rule.fields.get("node")
        if fields is None:
            return nodekey
        parts = cache.nodeparts
        key = (node.id, fields)
        part = parts.get(key)
        if part is None:
            node_map = self._node_map(nodekey, node)
            part = parts[key] = ("fields", tuple(_freeze(node_map.get(f, _ABSENT)) for f in fields))
        return part

    def _node_map(self, key: Hashable, node: NodeView) -> dict[str, Any]:
        found = self._nodes.get(key)
        if found is None:
            found = self._nodes[key] = node_variables(node)
        return found

    def _bind(self, rule: Rule, attrs: PolicyAttributes, node_map: Mapping[str, Any] | None,
              now: Mapping[str, Any]) -> None:
        """Bind the evaluator for `rule`: each map it reads cut down to the fields it reads (the
        same answer: a rule reads nothing else; `Rule.fields` is None for a map read whole)."""
        self._ev.bind(job=self._cut_down("job", attrs.job, rule), task=self._cut_down("task", attrs.task, rule),
                      node=self._cut_down("node", node_map, rule), now=now)

    def _cut_down(self, var: str, value: Mapping[str, Any] | None, rule: Rule) -> Any:
        """`read_by`, one object per (map, fields): CEL is not handed the same map twice."""
        if value is None or var not in rule.variables:
            return None
        fields = rule.fields.get(var)
        if fields is None:
            return value
        key = (var, id(value), fields)
        hit = self._cut.get(key)
        if hit is None or hit[0] is not value:
            hit = self._cut[key] = (value, read_by(rule, var, value))
        return hit[1]

    @staticmethod
    def _tkey(rule: Rule | None, now: Mapping[str, Any]) -> Hashable:
        if rule is None or "now" not in rule.variables:
            return None
        fields = rule.fields.get("now")
        if fields is None:
            return tuple(sorted(now.items()))
        return tuple(now.get(f) for f in fields)

    def _applicable(self, cache: _PassCache, task: TaskRequest, attrs: PolicyAttributes
                    ) -> list[tuple[_Prepared, Hashable, int]]:
        """The class's policies whose `when` may hold (a `when` that reads no node is decided here),
        each with the key of what its `allow` reads of the job and task, and a small int standing
        for both (the pass keeps the allow's answers per node under it, shared by every class
        whose tasks read alike)."""
        ckey = (task.policy_class, cache.class_time)
        found = self._classes.get(ckey)
        if found is not None:
            return found
        found = []
        answers = self._answers
        ev = self._ev
        for prep in self._prepared:
            policy = prep.policy
            if policy.when is not None and not prep.when_node:
                key = ("when", policy.name, _key(prep.when_fields, task, attrs), self._tkey(policy.when, cache.time))
                holds = answers.get(key)
                if holds is None:
                    self._bind(policy.when, attrs, None, cache.time)
                    holds = answers[key] = bool(ev.truth(policy.when)[0])
                if not holds:
                    continue
            allow_key = _key(prep.allow_fields, task, attrs)
            token_key = (policy.name, allow_key)
            token = self._tokens.get(token_key)
            if token is None:
                token = self._tokens[token_key] = len(self._tokens)
            found.append((prep, allow_key, token))
        self._classes[ckey] = found
        return found

    def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
        attrs: PolicyAttributes | None = task.attributes
        if attrs is None:
            return PASS
        cache = self._cache(cycle)
        pairs = cache.pairs.get(task.policy_class)
        if pairs is None:
            pairs = cache.pairs[task.policy_class] = {}
        known = pairs.get(node.id)
        if known is None:
            # Answers outlive the pass: keyed by the node's attributes and, if any rule reads the
            # clock, by the clock reading.
            timekey = cache.timekey
            if timekey is None and attrs.requires is not None and "now" in attrs.requires.variables:
                timekey = tuple(sorted(cache.time.items()))
            owner = node.owner
            if owner is not None and owner.reads_time:  # hours, or a `when` over `now`: by the minute
                timekey = (timekey, int(cycle.now // 60))
            lasting = ("pair", task.policy_class, self._nodekey(cache, node), timekey)
            known = self._answers.get(lasting)
            if known is None:
                known = self._answers[lasting] = self._decide(cache, task, attrs, node)
            pairs[node.id] = known
        return known[0]

    @staticmethod
    def rank_key(attrs: PolicyAttributes | None, identity: Hashable) -> Hashable:
        """`TaskRequest.rank_key`: None without a `rank:`, else the rank's text and the values of
        the fields it reads (the `policy_rank` scorer's class key)."""
        if attrs is None or attrs.rank is None:
            return None
        fields = rule_fields(attrs.rank)
        if fields is None:
            return (attrs.rank.source, identity)
        return (attrs.rank.source, _key(fields, None, attrs))

    def policy_class(self, attrs: PolicyAttributes | None, identity: Hashable) -> int | None:
        """The class key a task should carry (`TaskRequest.policy_class`): the values of every
        job and task field these policies and the task's own `requires` read, with its text.
        Tasks with equal keys get equal answers from the policy filter on every node, so they
        share its work. A rule that reads `job` or `task` whole falls back to `identity` (the job
        and workflow task). Returned as a small int standing for the key (see below)."""
        if attrs is None:
            return None
        memo = self._class_memo.get(id(attrs))
        if memo is not None and memo[0] is attrs and memo[1] == identity and memo[2] is self._class_generation:
            return memo[3]  # type: ignore[no-any-return]
        found = self._policy_class(attrs, identity)
        if len(self._class_memo) > _MAX_CACHED // 10:
            self._class_memo.clear()
        self._class_memo[id(attrs)] = (attrs, identity, self._class_generation, found)  # holds attrs: its id stays
        return found

    def _policy_class(self, attrs: PolicyAttributes, identity: Hashable) -> int:
        fields = self._fields
        requires = attrs.requires
        if requires is not None and fields is not None:
            extra = rule_fields(requires)
            fields = None if extra is None else tuple(sorted(set(fields) | set(extra)))
        if fields is None:
            key: Hashable = ("identity", identity)
        else:
            values = tuple(_freeze((attrs.job if var == "job" else attrs.task).get(name)) for var, name in fields)
            key = (attrs.job.get("domain"), values, requires.source if requires is not None else None,
                   self._owner_bits(attrs) if self._owner_predicates else ())
        # A small int per distinct key, never reused while the filter lives: every cache above is
        # keyed by it, and an int hashes in C, where the nested tuple is hashed anew per lookup.
        found = self._class_ids.get(key)
        if found is None:
            found = self._class_ids[key] = self._next_class_id
            self._next_class_id += 1
        return found

    def _decide(self, cache: _PassCache, task: TaskRequest, attrs: PolicyAttributes,
                node: NodeView) -> tuple[Verdict, tuple[Finding, ...]]:
        owner = node.owner
        if owner is not None:
            # The node owner's policy as its agent advertised it: offer the node only what it
            # would accept (its CPU share over what other domains already hold is `policy_share`'s).
            finding = self._owner_answer(cache, owner, task, attrs, node)
            if not finding.allowed:
                return self._refusal(finding, node), ()  # counted as "policy owner vN (node)"
        applicable = self._applicable(cache, task, attrs) if self._prepared else ()
        requires = attrs.requires
        if not applicable and requires is None:
            return PASS, ()
        nodekey = self._nodekey(cache, node)
        answers = self._answers
        ev = self._ev
        now = cache.time
        node_map: dict[str, Any] | None = None
        kept: list[Finding] = []
        job_domain = attrs.job.get("domain")
        by_token = cache.allows
        node_id = node.id
        for prep, allow_key, token in applicable:
            policy = prep.policy
            own = prep.domain
            if own is not None and own != job_domain and own != node.domain:
                continue
            if not prep.when_node:
                # The allow's answer for this node this pass, if a class reading alike asked it.
                per_node = by_token.get(token)
                if per_node is None:
                    per_node = by_token[token] = {}
                hit = per_node.get(node_id)
                if hit is None:
                    finding = self._allow(cache, prep, allow_key, nodekey, node, attrs)
                    # The finding that lets the task on, or the refusal's verdict: built once per
                    # (allow, node) and shared, as verdicts are immutable (no pair per entry: these
                    # are thousands a pass, and each container kept brings the next full
                    # collection of the garbage collector nearer).
                    hit = per_node[node_id] = finding if finding.allowed or finding.dry_run \
                        else self._refusal(finding, node)
                if hit.__class__ is Verdict:
                    return hit, ()
                kept.append(hit)
                continue
            # A `when` over the node: decided per node, and the allow keyed by the whole class.
            key = ("when", policy.name, ("class", task.policy_class), nodekey, self._tkey(policy.when, now))
            holds = answers.get(key)
            if holds is None:
                node_map = node_map or self._node_map(nodekey, node)
                self._bind(policy.when, attrs, node_map, now)  # type: ignore[arg-type]
                holds = answers[key] = bool(ev.truth(policy.when)[0])  # type: ignore[arg-type]
            if not holds:
                continue
            finding = self._allow(cache, prep, ("class", task.policy_class), nodekey, node, attrs)
            if finding.allowed or finding.dry_run:
                kept.append(finding)
            else:
                return self._refusal(finding, node), ()
        if requires is not None:
            # Keyed by what it reads: a `requires` over the node alone is one answer per node.
            fields = rule_fields(requires)
            key = ("requires", requires.source, _key(fields, task, attrs),  # type: ignore[arg-type]
                   self._node_part(cache, requires, nodekey, node) if "node" in requires.variables else None,
                   self._tkey(requires, now))
            result = answers.get(key)
            if result is None:
                node_map = node_map or self._node_map(nodekey, node)
                self._bind(requires, attrs, node_map, now)
                result = answers[key] = ev.truth(requires)
            ok, problem = result
            if not ok:
                why = f"is false on node {node.name}" if ok is False else f"could not be evaluated ({problem})"
                return Verdict(Status.NEVER, self.name, f"the task requires {requires.source}: {why}",
                               f"requirement not met: {requires.source}"), ()
        return PASS, tuple(kept)

    def _allow(self, cache: _PassCache, prep: _Prepared, allow_key: Hashable, nodekey: Hashable, node: NodeView,
               attrs: PolicyAttributes) -> Finding:
        """A policy's `allow` on the node, kept for as long as the filter lives by what it reads:
        `allow_key` (of the job and task), the node's part, the fields of `now`."""
        policy = prep.policy
        rule: Rule = policy.allow  # type: ignore[assignment]
        now = cache.time
        part = self._node_part(cache, rule, nodekey, node) if prep.allow_node else None
        key = ("allow", policy.name, allow_key, part, self._tkey(rule, now))
        finding = self._answers.get(key)
        if finding is None:
            self._bind(rule, attrs, self._node_map(nodekey, node), now)
            finding = self._answers[key] = judge(policy, self._ev)
        return finding  # type: ignore[no-any-return]

    def _refusal(self, finding: Finding, node: NodeView) -> Verdict:
        return Verdict(Status.NEVER, self.name, detail=_deny_text(finding, node),
                       summary=f"policy {finding.ref} ({finding.scope})")

    def _owner_answer(self, cache: _PassCache, owner: OwnerPolicy, task: TaskRequest, attrs: PolicyAttributes,
                      node: NodeView) -> Finding:
        """`owner.decide` without the foreign CPU (policy_share's), kept by what it reads: the job's
        domain, the labels if it requires some, the task's and node's CPU if it caps a share,
        what its `when` reads, the minute if it reads the clock. Owners of many nodes with the
        same policy, and tasks alike in those fields, share one answer."""
        job, own = attrs.job, attrs.task
        when = owner.when
        nodekey = self._nodekey(cache, node)
        task_part: Hashable
        if (owner.digest, owner.version) in self._owners_seen:
            # `consider_owners` made the policy class tell apart everything this owner reads of a
            # task: the class stands for those values.
            task_part = ("class", task.policy_class)
        else:  # the values it reads (a caller that did not tell the filter about this owner)
            task_part = (job.get("domain") or own.get("domain"),
                         _freeze((job.get("labels"), own.get("labels"))) if owner.require_labels else None,
                         own.get("cpu") if owner.max_cpu_share is not None else None,
                         _key(rule_fields(when), task, attrs) if when is not None else None)
        key = ("owner", owner.digest, owner.version, task_part,
               (node.capacity.cpu_millis, node.domain) if owner.max_cpu_share is not None else None,
               self._node_part(cache, when, nodekey, node) if when is not None and "node" in when.variables else None,
               int(cache.cycle.now // 60) if owner.reads_time else None)
        found = self._answers.get(key)
        if found is None:
            found = self._answers[key] = owner.decide(job, own, self._node_map(nodekey, node), cache.cycle.now,
                                                      ev=self._owner_ev)
        return found  # type: ignore[no-any-return]

    def decision(self, task: TaskRequest, node_id: str) -> tuple[Finding, ...]:
        """The findings that let `task` onto `node_id` in the last pass (allows and dry-run denies)."""
        if self._last is None:
            return ()
        found = self._last.pairs.get(task.policy_class, {}).get(node_id)
        return found[1] if found is not None else ()


def _deny_text(finding: Finding, node: NodeView) -> Any:
    return lambda: f"node {node.name}: denied by {finding.scope} policy {finding.ref}: {finding.reason}"


class PolicyShareFilter:
    """Limits policies' `max_cpu_share` for tasks of other domains than the node's, and the node
    owner's (`NodeView.owner`)."""

    name = "policy_share"
    scope = Scope.TASK
    says_never = False  # NOT_NOW at most: the share frees up when foreign tasks end
    monotone = True  # within a pass what other domains hold only grows: a refusal stands

    def __init__(self, policies: Sequence[Policy] = ()) -> None:
        self.policies = share_limits(policies)
        self._ev = Evaluator()  # for the limits' `when` (one filter is asked by one pass at a time)
        # Without a `when`, the verdict depends only on the task's domain and CPU and the node
        # (its foreign CPU, which changes only with its version); with one, also on what the
        # limits' `when` read of the job and task, which `policy_class` stands for.
        self._by_class = any(p.when is not None for p in self.policies)
        # What `_exceeds` reads of each limit, worked out once: (foreign only, the policy's domain
        # or None, the share).
        self._caps = [(p.limits.foreign_only, p.domain, p.limits.max_cpu_share)  # type: ignore[union-attr]
                      for p in self.policies]

    def check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
        if not self.policies and node.owner is None:
            return PASS
        memo = cycle.scratch.get(self.name)
        if memo is None:
            memo = cycle.scratch[self.name] = {}
        # (domain, cpu[, policy class]) -> node id -> (node version, verdict)
        attrs = task.attributes
        key: Hashable = (task.domain, task.resources.cpu_millis, attrs.job.get("domain") if attrs is not None else None)
        if self._by_class:
            key = (key, task.policy_class, task.attributes is None)
        by_node = memo.get(key)
        if by_node is None:
            by_node = memo[key] = {}
        nid = node.id
        version = cycle.version(nid)
        hit = by_node.get(nid)
        if hit is not None and hit[0] == version:
            return hit[1]  # type: ignore[no-any-return]
        verdict = self._check(task, node, cycle)
        by_node[nid] = (version, verdict)
        return verdict

    def _exceeds(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> bool:
        """Without `when`s: does some limit (dry-run included) refuse? share_findings' test, with
        nothing built when none does (the common case); `_check` then says which and why."""
        domain, node_domain = task.domain, node.domain
        cap, cpu = node.capacity.cpu_millis, task.resources.cpu_millis
        if not cap:
            return False
        used: int | None = None
        for foreign_only, own, share in self._caps:
            if foreign_only and domain == node_domain:
                continue
            if own is not None and own != domain and own != node_domain:
                continue
            if not foreign_only:
                held = cap - cycle.free(node.id).cpu_millis  # every domain's CPU on the node
            else:
                if used is None:
                    used = cycle.foreign_cpu(node.id)
                held = used
            if cpu + held > share * cap:  # type: ignore[operator]
                return True
        return False

    def _check(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict:
        owner = node.owner
        # the agent reads the job's domain from the offer (the same as the task's, from the runtime)
        job_domain = task.attributes.job.get("domain") if task.attributes is not None else None
        if owner is not None and owner.max_cpu_share is not None and (job_domain or task.domain) != node.domain:
            # The owner's own cap on foreign jobs, as its agent advertised it: the agent's own
            # check, over what other domains' attempts hold on the node.
            problem = owner.share_problem(job_domain or task.domain, task.resources.cpu_millis, node.domain,
                                          node.capacity.cpu_millis, cycle.foreign_cpu(node.id))
            if problem is not None:
                ref = f"{owner.name} v{owner.version}"
                return Verdict(Status.NOT_NOW, self.name, f"node {node.name}: its owner's policy {ref}: {problem}",
                               f"policy {ref} (node): cpu share")
        if not self.policies:
            return PASS
        if not self._by_class and not self._exceeds(task, node, cycle):
            return PASS
        attrs: PolicyAttributes | None = task.attributes
        bound = False

        def holds(rule: Rule) -> bool:
            nonlocal bound
            if attrs is None:
                return True  # a task without policy attributes: its limits apply unconditionally
            if not bound:
                self._ev.bind(job=attrs.job, task=attrs.task, node=node_variables(node),
                              now=time_context(cycle.now))
                bound = True
            return bool(self._ev.truth(rule)[0])

        cap = node.capacity.cpu_millis
        findings = share_findings(self.policies, {"domain": task.domain, "cpu": task.resources.cpu_millis},
                                  {"domain": node.domain, "cpu": cap, "name": node.name},
                                  lambda: cycle.foreign_cpu(node.id), holds,
                                  total_cpu=lambda: cap - cycle.free(node.id).cpu_millis, only_denies=True)
        for finding in findings:
            if not finding.dry_run:
                return Verdict(Status.NOT_NOW, self.name,
                               f"node {node.name}: denied by {finding.scope} policy {finding.ref}: {finding.reason}",
                               f"policy {finding.ref} ({finding.scope}): cpu share")
        return PASS


class PolicyRankScorer:
    """The task's `rank:` CEL over the node, clamped to 0..100 by the pipeline (no rank, or an
    error: 50). Cached per (rank key, node attributes) while the scorer lives."""

    name = "policy_rank"
    scope = Scope.CLASS
    task_fields = ("rank_key",)

    def __init__(self) -> None:
        self._ev = Evaluator()
        self._memo: dict[Hashable, float] = {}
        self._nodes: dict[str, tuple[Hashable, dict[str, Any]]] = {}

    def score(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> float:
        attrs: PolicyAttributes | None = task.attributes
        if attrs is None or attrs.rank is None:
            return 50.0
        rank = attrs.rank
        timed = None
        if "now" in rank.variables:
            timed = cycle.scratch.get(self.name)
            if timed is None:
                timed = cycle.scratch[self.name] = time_context(cycle.now)
        held = _held_node(self._nodes, node)
        key = (task.rank_key, held[0], None if timed is None else tuple(sorted(timed.items())))
        value = self._memo.get(key)
        if value is None:
            number = self._ev.bind(job=attrs.job, task=attrs.task, node=held[1], now=timed).number(rank)
            value = self._memo[key] = 50.0 if number is None else number
            if len(self._memo) > _MAX_CACHED:
                self._memo.clear()
        return value


class OwnerRankScorer:
    """The node owner's `rank` over jobs, as its agent advertised it (HTCondor's machine RANK): the
    other side of the job's `rank:`. Among the candidates compared for a task, a node whose owner
    prefers the task scores higher (0..100, clamped by the pipeline); a node without an owner
    rank, or whose rank cannot be evaluated, scores 50.

    A TASK scorer (the owner's rank reads the job and task, and a CLASS scorer keyed by them would
    split the pipeline's classes); the runtime adds it only to passes where some node advertises
    a rank, so a fabric without one keeps the fast path. Answers are kept while the scorer lives,
    keyed by what the rank reads: its text, the values of the job and task fields it names, of the
    node fields, of the fields of `now`."""

    name = "owner_rank"
    scope = Scope.TASK

    def __init__(self) -> None:
        self._ev = Evaluator()
        self._memo: dict[Hashable, float] = {}
        self._nodes: dict[str, tuple[Hashable, dict[str, Any]]] = {}  # node id -> (its key, its map)

    def score(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> float:
        owner = node.owner
        attrs: PolicyAttributes | None = task.attributes
        if owner is None or owner.rank is None or attrs is None:
            return 50.0
        rank = owner.rank
        fields = rule_fields(rank)
        task_part = _key(fields, None, attrs) if fields is not None else ("task", task.task_id)
        nodekey, node_map = _held_node(self._nodes, node)
        node_part: Hashable = None
        if "node" in rank.variables:
            read = rank.fields.get("node")
            node_part = nodekey if read is None else tuple(_freeze(node_map.get(f, _ABSENT)) for f in read)
        time_part: Hashable = None
        if "now" in rank.variables:
            now = time_context(cycle.now)
            read = rank.fields.get("now")
            time_part = tuple(sorted(now.items())) if read is None else tuple(now.get(f) for f in read)
        key = (rank.source, task_part, node_part, time_part)  # owners with the same rank share answers
        value = self._memo.get(key)
        if value is None:
            number = owner.score(attrs.job, attrs.task, node_map, cycle.now, ev=self._ev)
            if len(self._memo) > _MAX_CACHED:
                self._memo.clear()
            value = self._memo[key] = 50.0 if number is None else number
        return value


def _held_node(nodes: dict[str, tuple[Hashable, dict[str, Any]]], node: NodeView) -> tuple[Hashable, dict[str, Any]]:
    """(the node's attributes as a key, its `node` map), kept in `nodes` by node id and made again
    when its attributes change."""
    cap = node.capacity
    nodekey = (node.id, node.name, node.domain, node.state.value, tuple(sorted(node.labels.items())),
               cap.cpu_millis, cap.memory_bytes, cap.gpus, cap.slots)
    held = nodes.get(node.id)
    if held is None or held[0] != nodekey:
        held = nodes[node.id] = (nodekey, node_variables(node))
    return held
