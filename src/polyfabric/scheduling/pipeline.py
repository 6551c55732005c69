"""One scheduling pass: gates → feasibility → ranking → selection, per task, sharing work.

    tasks ─ sort (−priority, submitted_seq) ─▶ gates ─▶ class ─▶ candidates ─▶ best ─▶ commit
                                              │ no      (key)    (limit k)     │ none
                                              ▼                                ▼
                                          Unplaced(blocked_by)          preemption ─▶ Unplaced

Nodes are shuffled once per pass with the caller's `rng`; that order is where every class starts
looking and the tie-break between equal scores, so a pass is reproducible from its seed.

Tasks with the same class key (domain, resources, constraints, excluded nodes, and whatever
`task_key` plugins add) get the same answer from every NODE and CYCLE plugin, so they share one
`_Class`: the nodes it has looked at, the verdicts and scores it cached (stamped with the node's
version), its current candidates and its explanation. A node a class saw fail is never asked
again for that class in the pass: CYCLE filters are monotone and tallies only grow.

Per task the class keeps up to `k` candidates (Nomad's limit iterator, k ≈ log2(nodes)): stale
candidates (their node changed) are re-checked, one more node is explored from where the class
left off (first the nodes it has never seen, then round-robin over the ones it has), the worst
is dropped if there are more than k, and the best is chosen. Placing a task changes only the
chosen node; every other cached answer stays valid. A class runs out only when every node has
refused it, so the explanation counts every node once, by the first reason it gave.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from polyfabric.domain.errors import ValidationError
from polyfabric.scheduling.framework import CycleState, Scope, Status, Verdict, task_class_key
from polyfabric.scheduling.plan import Placement, Plan, Preemption, Unplaced
from polyfabric.scheduling.preemption import find_preemption
from polyfabric.scheduling.registry import Profile
from polyfabric.scheduling.view import ClusterView, NodeView, TaskRequest

__all__ = ["default_candidates", "schedule"]

_PASS = Status.PASS
_NOT_NOW = Status.NOT_NOW
_EMPTY: Mapping[str, int] = MappingProxyType({})

Check = Callable[[TaskRequest, NodeView, CycleState], Verdict]
Score = Callable[[TaskRequest, NodeView, CycleState], float]


def default_candidates(node_count: int) -> int:
    """How many feasible nodes a task compares: about log2 of the cluster, at least 2."""
    return max(2, node_count.bit_length())


def schedule(
    view: ClusterView,
    tasks: Iterable[TaskRequest],
    profile: Profile,
    rng: random.Random,
    *,
    max_candidates: int | None = None,
) -> Plan:
    """Plan placements for `tasks` on `view`: highest priority first (earlier `submitted_seq` on
    ties), never past a concurrency limit or a node's capacity, each unplaced task explained.

    `max_candidates` bounds how many feasible nodes are compared per task (default: about log2 of
    the node count). Pure: the same view, tasks, profile and rng state give the same plan.
    """
    if max_candidates is not None and max_candidates < 1:
        raise ValidationError(f"max_candidates must be at least 1, got {max_candidates}")
    return _Pass(view, profile, rng, max_candidates).run(tasks)


class _Class:
    """What one equivalence class of tasks has learned about the nodes during the pass."""

    __slots__ = (
        "cursor",
        "exhausted",
        "fresh",
        "later",
        "not_now",
        "pool",
        "pos",
        "reasons",
        "rep",
        "score",
        "seen",
        "spent_at",
        "summary",
        "ver",
    )

    def __init__(self, rep: TaskRequest) -> None:
        self.rep = rep  # any member: NODE and CYCLE plugins answer the same for all of them
        self.fresh = 0  # index into the pass's node order of the next never-seen node
        self.seen: list[NodeView] = []  # passed the NODE filters and has not failed since
        self.pos: dict[str, int] = {}  # node id -> index in `seen`
        self.cursor = 0  # round-robin position in `seen`
        self.pool: dict[str, NodeView] = {}  # current candidates (at most k after trimming)
        self.ver: dict[str, int] = {}  # node id -> node version when last checked
        self.score: dict[str, tuple[float, int]] = {}  # node id -> (weighted score, -rank)
        self.reasons: dict[str, int] = {}  # refusal summary -> nodes
        self.later: list[NodeView] = []  # nodes that refused NOT_NOW: preemption candidates
        self.not_now = 0
        self.exhausted = False
        self.summary: Mapping[str, int] | None = None
        self.spent_at: int | None = None  # preemption found nothing at this priority


class _Pass:
    def __init__(self, view: ClusterView, profile: Profile, rng: random.Random, k: int | None) -> None:
        nodes = list(view.nodes)
        rng.shuffle(nodes)
        self.view = view
        self.profile = profile
        self.nodes = nodes
        self.rank = {node.id: i for i, node in enumerate(nodes)}
        self.k = k if k is not None else default_candidates(len(nodes))
        self.cycle = CycleState(view)
        self.versions = self.cycle._version
        self.gates = [gate.admit for gate in profile.gates]
        by_scope: dict[Scope, list[Check]] = {Scope.NODE: [], Scope.CYCLE: [], Scope.VOLATILE: []}
        for flt in profile.filters:
            by_scope[flt.scope].append(flt.check)
        self.node_filters = by_scope[Scope.NODE]
        self.cycle_filters = by_scope[Scope.CYCLE]
        self.volatile_filters = by_scope[Scope.VOLATILE]
        total_weight = sum(w.weight for w in profile.scorers) or 1.0
        self.cached_scorers: list[tuple[Score, float]] = []
        self.volatile_scorers: list[tuple[Score, float]] = []
        for weighted in profile.scorers:
            target = self.volatile_scorers if weighted.scorer.scope is Scope.VOLATILE else self.cached_scorers
            target.append((weighted.scorer.score, weighted.weight / total_weight))
        self.volatile = bool(self.volatile_filters or self.volatile_scorers)
        plugins: list[Any] = [*profile.filters, *(w.scorer for w in profile.scorers)]
        self.key_parts: list[Callable[[TaskRequest], Hashable]] = [
            p.task_key for p in plugins if callable(getattr(p, "task_key", None))
        ]
        self.min_victim: int | None = None
        self.stats = {"tasks": 0, "classes": 0, "node_checks": 0, "cycle_checks": 0, "scores": 0,
                      "preemption_searches": 0}

    # -- the pass --------------------------------------------------------------------------------

    def run(self, tasks: Iterable[TaskRequest]) -> Plan:
        ordered = sorted(tasks, key=lambda t: (-t.priority, t.submitted_seq))
        if len({t.task_id for t in ordered}) != len(ordered):
            raise ValidationError("the same task id is pending more than once")
        cycle = self.cycle
        gates = self.gates
        key_parts = self.key_parts
        classes: dict[Hashable, _Class] = {}
        placements: list[Placement] = []
        preemptions: list[Preemption] = []
        unplaced: list[Unplaced] = []
        for task in ordered:
            blocked = None
            for admit in gates:
                verdict = admit(task, cycle)
                if verdict.status is not _PASS:
                    blocked = verdict
                    break
            if blocked is not None:
                unplaced.append(Unplaced(task.task_id, _EMPTY, blocked.reason or blocked.key, blocked.status))
                continue
            key = task_class_key(task)
            if key_parts:
                key = (key, *(part(task) for part in key_parts))
            cs = classes.get(key)
            if cs is None:
                cs = classes[key] = _Class(task)
            extra: dict[str, int] | None = None
            later = False
            if self.volatile:
                node, extra, later = self._pick_volatile(task, cs)
            else:
                node = self._pick(cs)
            if node is not None:
                cycle.commit(task, node.id)
                placements.append(Placement(task.task_id, node.id, task.resources))
                continue
            summary = self._summary(cs, extra)
            if self._preempt(task, cs, summary, preemptions, unplaced):
                continue
            if not self.nodes:
                unplaced.append(Unplaced(task.task_id, summary, "no nodes in the cluster view", Status.NEVER))
                continue
            status = _NOT_NOW if cs.not_now or later else Status.NEVER
            unplaced.append(Unplaced(task.task_id, summary, None, status))
        self.stats["tasks"] = len(ordered)
        self.stats["classes"] = len(classes)
        self.stats["placements"] = len(placements)
        self.stats["preemptions"] = len(preemptions)
        self.stats["unplaced"] = len(unplaced)
        return Plan(tuple(placements), tuple(preemptions), tuple(unplaced), self.view.version,
                    MappingProxyType(dict(self.stats)))

    # -- candidates ------------------------------------------------------------------------------

    def _pick(self, cs: _Class) -> NodeView | None:
        """The best candidate for the class now, or None when every node has refused it."""
        if cs.exhausted:
            return None
        pool = cs.pool
        if pool:
            versions = self.versions
            ver = cs.ver
            stale = [node for nid, node in pool.items() if ver[nid] != versions.get(nid, 0)]
            for node in stale:
                self._recheck(cs, node)  # on refusal, also leaves the pool
        wanted = max(1, self.k - len(pool))
        while wanted:
            node = self._explore(cs)
            if node is None:
                break
            pool[node.id] = node
            wanted -= 1
        if not pool:
            cs.exhausted = True
            return None
        score = cs.score
        while len(pool) > self.k:
            del pool[min(pool, key=score.__getitem__)]
        return pool[max(pool, key=score.__getitem__)]

    def _explore(self, cs: _Class) -> NodeView | None:
        """The next node that passes for the class and is not a candidate yet: never-seen nodes
        first, then round-robin over the seen ones."""
        nodes = self.nodes
        count = len(nodes)
        while cs.fresh < count:
            node = nodes[cs.fresh]
            cs.fresh += 1
            if self._admit(cs, node):
                return node
        seen = cs.seen
        pool = cs.pool
        versions = self.versions
        tries = len(seen)
        while tries > 0 and seen:
            tries -= 1
            if cs.cursor >= len(seen):
                cs.cursor = 0
            node = seen[cs.cursor]
            if node.id in pool:
                cs.cursor += 1
                continue
            if cs.ver[node.id] != versions.get(node.id, 0) and not self._recheck(cs, node):
                continue  # swapped out of `seen`; the cursor now points at another node
            cs.cursor += 1
            return node
        return None

    def _admit(self, cs: _Class, node: NodeView) -> bool:
        """First look at a node for a class: NODE filters once, then the CYCLE check."""
        self.stats["node_checks"] += 1
        task = cs.rep
        cycle = self.cycle
        for check in self.node_filters:
            verdict = check(task, node, cycle)
            if verdict.status is not _PASS:
                self._record(cs, node, verdict)
                return False
        cs.pos[node.id] = len(cs.seen)
        cs.seen.append(node)
        return self._recheck(cs, node)

    def _recheck(self, cs: _Class, node: NodeView) -> bool:
        """CYCLE filters and cached scores for a node whose tallies changed (or are new)."""
        self.stats["cycle_checks"] += 1
        task = cs.rep
        cycle = self.cycle
        for check in self.cycle_filters:
            verdict = check(task, node, cycle)
            if verdict.status is not _PASS:
                self._drop(cs, node, verdict)
                return False
        nid = node.id
        cs.ver[nid] = self.versions.get(nid, 0)
        total = 0.0
        for score, weight in self.cached_scorers:
            value = score(task, node, cycle)
            total += weight * (0.0 if value < 0.0 else 100.0 if value > 100.0 else value)
        self.stats["scores"] += 1
        cs.score[nid] = (total, -self.rank[nid])
        return True

    def _drop(self, cs: _Class, node: NodeView, verdict: Verdict) -> None:
        cs.pool.pop(node.id, None)
        seen = cs.seen
        index = cs.pos.pop(node.id)
        last = seen.pop()
        if last is not node:
            seen[index] = last
            cs.pos[last.id] = index
        self._record(cs, node, verdict)

    @staticmethod
    def _record(cs: _Class, node: NodeView, verdict: Verdict) -> None:
        key = verdict.key
        cs.reasons[key] = cs.reasons.get(key, 0) + 1
        if verdict.status is _NOT_NOW:
            cs.not_now += 1
            cs.later.append(node)

    # -- volatile plugins (topology and the like): asked afresh for every decision ------------------

    def _pick_volatile(
        self, task: TaskRequest, cs: _Class
    ) -> tuple[NodeView | None, dict[str, int] | None, bool]:
        """(node, extra refusal counts, whether a volatile refusal was NOT_NOW)."""
        if self._pick(cs) is None:
            return None, None, False
        node, _ = self._first_volatile(task, cs, list(cs.pool.values()), None)
        if node is not None:
            return node, None, False
        # Nobody among the candidates: ask every node, so the explanation covers them all.
        while cs.fresh < len(self.nodes):
            fresh = self.nodes[cs.fresh]
            cs.fresh += 1
            self._admit(cs, fresh)
        for seen in [n for n in cs.seen if cs.ver[n.id] != self.versions.get(n.id, 0)]:
            self._recheck(cs, seen)
        extra: dict[str, int] = {}
        node, later = self._first_volatile(task, cs, list(cs.seen), extra)
        return node, (None if node is not None else extra), later

    def _first_volatile(
        self, task: TaskRequest, cs: _Class, nodes: list[NodeView], extra: dict[str, int] | None
    ) -> tuple[NodeView | None, bool]:
        """The best of `nodes` by cached plus volatile score that passes the volatile filters;
        counts refusals into `extra` when given."""
        cycle = self.cycle
        later = False
        ranked = []
        for node in nodes:
            total, tie = cs.score[node.id]
            for score, weight in self.volatile_scorers:
                value = score(task, node, cycle)
                total += weight * (0.0 if value < 0.0 else 100.0 if value > 100.0 else value)
            ranked.append(((total, tie), node))
        ranked.sort(key=lambda pair: pair[0], reverse=True)
        for _, node in ranked:
            for check in self.volatile_filters:
                verdict = check(task, node, cycle)
                if verdict.status is not _PASS:
                    if extra is not None:
                        extra[verdict.key] = extra.get(verdict.key, 0) + 1
                    later = later or verdict.status is _NOT_NOW
                    break
            else:
                return node, later
        return None, later

    # -- explanation and preemption --------------------------------------------------------------

    def _summary(self, cs: _Class, extra: dict[str, int] | None) -> Mapping[str, int]:
        if extra is None:
            if cs.summary is None:
                cs.summary = MappingProxyType(dict(cs.reasons))
            return cs.summary
        merged = dict(cs.reasons)
        for key, count in extra.items():
            merged[key] = merged.get(key, 0) + count
        return MappingProxyType(merged)

    def _preempt(
        self,
        task: TaskRequest,
        cs: _Class,
        summary: Mapping[str, int],
        preemptions: list[Preemption],
        unplaced: list[Unplaced],
    ) -> bool:
        profile = self.profile
        if not profile.preemption or not cs.later:
            return False
        if cs.spent_at is not None and task.priority <= cs.spent_at:
            return False
        if self.min_victim is None:
            self.min_victim = min(
                (t.priority for n in self.nodes for t in n.running if t.preemptible), default=None
            )
            if self.min_victim is None:
                self.min_victim = task.priority  # nothing is preemptible in this view
        if task.priority <= self.min_victim:
            return False
        self.stats["preemption_searches"] += 1
        choice, cs.later = find_preemption(
            task, cs.later, self.cycle, recheck=self._what_if, rank=self.rank, want=self.k,
            victim_filters=profile.victim_filters,
        )
        if choice is None:
            cs.spent_at = task.priority
            return False
        node = choice.node
        victims = tuple(v.task_id for v in choice.victims)
        self.cycle.reserve(task, node.id, choice.reserve, victims)
        for victim in choice.victims:
            preemptions.append(Preemption(
                victim.task_id, node.id, task.task_id,
                f"preempted for task {task.task_id} (priority {task.priority} > {victim.priority}): "
                f"{choice.need}",
            ))
        plural = "s" if len(victims) != 1 else ""
        unplaced.append(Unplaced(
            task.task_id, summary,
            f"waiting for {len(victims)} preempted task{plural} on node {node.name}",
            _NOT_NOW, victims,
        ))
        return True

    def _what_if(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> bool:
        """Would the node take the task (CYCLE and VOLATILE filters) with the victims gone?"""
        for check in (*self.cycle_filters, *self.volatile_filters):
            if check(task, node, cycle).status is not _PASS:
                return False
        return True
