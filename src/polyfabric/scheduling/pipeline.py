"""One scheduling pass: gates → feasibility → ranking → selection, per task, sharing work.

    tasks ─ sort (−priority, submitted_seq) ─▶ gates ─▶ class ─▶ candidates ─▶ TASK check ─▶ commit
                                                │ no     (key)    (≤ k, cached)  │ none
                                                ▼                                ▼
                                        Unplaced(blocked_by)     explain ─▶ preemption ─▶ Unplaced

Set-up, once per pass: nodes are shuffled with the caller's `rng` (the tie-break between equal
scores, so a pass is reproducible from its seed); NODE filters (node state) are asked once per
node and the nodes they refuse leave the pass; the rest are ordered by free capacity (GPUs, then
CPU: Nomad's computed node classes meet a best-fit index).

Tasks with the same class key (the fields their CLASS and CYCLE plugins read: `task_fields`)
get the same answers, so they share one `_Class`: the nodes it has looked at, the verdicts and
scores it cached (stamped with the node's version), its candidates and its explanation. CLASS
verdicts are shared wider still, by the fields the CLASS filters read alone.

Per task a class keeps up to `k` candidates (Nomad's limit iterator, k ≈ log2(nodes)). It tops
them up by walking the capacity order from where it left off: best fit starts at the first node
that could hold the request and goes toward emptier nodes, worst fit comes down from the
emptiest to that point, random goes once around from its own offset; after that it goes
round-robin over the nodes it has seen. Nodes too full at the start of the pass are
never looked at, and a node a placement leaves unable to hold any pending task is dead for every
class. The best candidate by cached score is re-checked only if its node changed since; a node
that refused a class is never asked again by it (CYCLE filters are monotone, tallies only grow).
TASK plugins (excluded nodes, topology) are asked per task, on the best candidates only; when
they all say they are monotone (a refusal stands for the rest of the pass: exclusions, policies,
CPU shares), a class remembers per policy class the nodes they refused and does not ask again.
Placing a task changes only the chosen node; every other cached answer stays valid.

Explanations are computed only for tasks that end up unplaced, once per class: every node is
counted once, by the first filter (in profile order within scope) that refuses it.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from polyfabric.domain.errors import ValidationError
from polyfabric.domain.resources import Resources
from polyfabric.scheduling.framework import (
    DEFAULT_TASK_FIELDS,
    CycleState,
    Scope,
    Status,
    Verdict,
    class_key_function,
)
from polyfabric.scheduling.plan import Placement, Plan, Preemption, Unplaced
from polyfabric.scheduling.preemption import find_preemption
from polyfabric.scheduling.registry import NodeOrder, Profile
from polyfabric.scheduling.view import ClusterView, NodeView, TaskRequest

__all__ = ["default_candidates", "schedule"]

_PASS = Status.PASS
_NOT_NOW = Status.NOT_NOW
_EMPTY: Mapping[str, int] = MappingProxyType({})
EXPLAIN_SHORTCUTS = True
"""Explanations reuse a class's CLASS/CYCLE answers per node version, and a task-level one works
out its preemption candidates only when preemption searches them (False: ask everything at once,
as before; for the test that plans are the same either way)."""
REMEMBER_TASK_REFUSALS = True
"""A class remembers, per policy class, the nodes monotone TASK filters refused (False: ask them
every time, as before; for the test that plans are the same either way)."""
_UNCHOSEN = "passed every filter but was not chosen"

Check = Callable[[TaskRequest, NodeView, CycleState], Verdict]
Score = Callable[[TaskRequest, NodeView, CycleState], float]


def default_candidates(node_count: int) -> int:
    """How many feasible nodes a task compares by default: about log2 of the cluster, at least 2
    (Nomad's limit iterator for service jobs)."""
    return max(2, node_count.bit_length())


def schedule(
    view: ClusterView,
    tasks: Iterable[TaskRequest],
    profile: Profile,
    rng: random.Random,
    *,
    max_candidates: int | None = None,
    now: float = 0.0,
) -> Plan:
    """Plan placements for `tasks` on `view`: highest priority first (earlier `submitted_seq` on
    ties), never past a concurrency limit or a node's capacity, each unplaced task explained.

    `max_candidates` bounds how many feasible nodes are compared per task (default: about log2
    of the node count, `default_candidates`). `now` is handed to plugins as
    `CycleState.now` (the built-ins do not use it). Pure: the same view, tasks, profile, rng state
    and `now` give the same plan.
    """
    if max_candidates is not None and max_candidates < 1:
        raise ValidationError(f"max_candidates must be at least 1, got {max_candidates}")
    ordered = sorted(tasks, key=lambda t: (-t.priority, t.submitted_seq))
    if len({t.task_id for t in ordered}) != len(ordered):
        raise ValidationError("the same task id is pending more than once")
    return _Pass(view, profile, rng, max_candidates, ordered, now).run(ordered)


def _first_refusal(checks: list[Check], task: TaskRequest, node: NodeView, cycle: CycleState) -> Verdict | None:
    for check in checks:
        verdict = check(task, node, cycle)
        if verdict.status is not _PASS:
            return verdict
    return None


class _Class:
    """What one equivalence class of tasks has learned about the nodes during the pass."""

    __slots__ = (
        "busy",
        "counts",
        "cursor",
        "exhausted",
        "explained",
        "explained_at",
        "fresh",
        "gone",
        "later",
        "need",
        "not_now",
        "ok",
        "open",
        "pool",
        "pos",
        "refused_for",
        "rep",
        "score",
        "seen",
        "spent_at",
        "step",
        "stop",
        "summary",
        "ver",
    )

    def __init__(self, rep: TaskRequest, fresh: int, stop: int, step: int) -> None:
        self.rep = rep  # any member: CLASS and CYCLE plugins answer the same for all of them
        self.ok: dict[str, Verdict | bool] = {}  # node id -> True or the CLASS refusal (group-wide)
        self.gone: set[str] = set()  # nodes that refused the class since (CYCLE): never asked again
        self.need: Resources | None = None  # what `requires` hints say a node must have free
        self.fresh, self.stop, self.step = fresh, stop, step  # the walk over never-seen nodes
        self.seen: list[NodeView] = []  # passed the CLASS filters and has not been refused since
        self.pos: dict[str, int] = {}  # node id -> index in `seen`
        self.cursor = 0  # round-robin position in `seen`, once the walk is done
        self.pool: dict[str, NodeView] = {}  # current candidates (at most k after trimming)
        self.ver: dict[str, int] = {}  # node id -> node version when last checked
        self.score: dict[str, tuple[float, int]] = {}  # node id -> (weighted score, -rank)
        self.exhausted = False
        self.summary: Mapping[str, int] | None = None  # the explanation, once exhausted
        self.later: list[NodeView] = []  # nodes that refused NOT_NOW: preemption candidates
        self.not_now = False
        self.spent_at: int | None = None  # preemption found nothing at this priority
        # Per node in shuffled order, its first NODE/CLASS/CYCLE refusal (None: passes them) as
        # `_explain` last saw it, and how much of the pass's change log that covers: a class
        # explained again (for another policy class, other exclusions) re-asks only the nodes
        # changed since, and touches no other node's state.
        self.explained: list[Verdict | None] | None = None
        self.explained_at = 0
        # The same answers tallied, kept up to date with them: nodes counted by refusal, the
        # nodes that pass them (by shuffled index) and those refused NOT_NOW (busy).
        self.counts: dict[str, int] = {}
        self.open: dict[int, NodeView] = {}
        self.busy: set[int] = set()
        # (policy class, domain) -> nodes the TASK filters refused for tasks of the class that
        # read alike and exclude no node (`_Pass.memo_refusals`): asked again, they would refuse.
        self.refused_for: dict[Hashable, set[str]] = {}


class _Explained:
    """A task-level explanation shared by the tasks the TASK filters see alike. `busy` are the
    nodes whose first refusal was NOT_NOW; which of them a TASK filter refuses for good (NEVER) is
    asked only when preemption searches them (`later`) or, stopping at the first, for `not_now`:
    the same answers as asking at once, because a TASK filter's NEVER depends only on what the
    tasks sharing the explanation have in common and holds for the whole pass (excluded nodes,
    policies)."""

    __slots__ = ("busy", "later", "not_now", "summary", "task")

    def __init__(self, summary: Mapping[str, int], busy: list[NodeView], not_now: bool, task: TaskRequest) -> None:
        self.summary, self.busy, self.not_now, self.task = summary, busy, not_now, task
        self.later: list[NodeView] | None = None  # preemption candidates, in victim order, once asked


_NO_LATER: list[NodeView] = []


class _Pass:
    """One run of `schedule()`: the plugins sorted by scope, the nodes in walk order, the cycle's
    tallies and every class's cache. Used once, then dropped."""

    def __init__(
        self,
        view: ClusterView,
        profile: Profile,
        rng: random.Random,
        k: int | None,
        ordered: list[TaskRequest],
        now: float,
    ) -> None:
        shuffled = list(view.nodes)
        rng.shuffle(shuffled)
        self.view = view
        self.profile = profile
        self.rng = rng
        self.shuffled = shuffled
        self.rank = {node.id: i for i, node in enumerate(shuffled)}
        self.order = profile.node_order
        self.k = k if k is not None else default_candidates(len(shuffled))
        # New nodes a class looks at per task, beyond topping its candidates up to k. Best fit
        # walks from the tightest fit outwards, so what lies ahead scored worse at the start.
        # Worst fit looks at k more (Nomad's window) so that candidates stay fresh as the chosen
        # nodes fill up. Random looks at two more: the power of two random choices.
        self.explore = {NodeOrder.BEST_FIT: 0, NodeOrder.WORST_FIT: self.k, NodeOrder.RANDOM: 2}[self.order]
        # Preemption is rarer and its choice matters more: it compares more nodes (kube samples
        # nodes for victims the same way).
        self.preemption_nodes = max(4 * self.k, 32)
        self.cycle = CycleState(view, now=now)
        self.versions = self.cycle._version
        self.changed: list[str] = []  # node ids in the order their tallies changed (commit, reserve)
        self._sort_plugins(profile)
        self._sort_nodes(ordered)
        self.groups: dict[Hashable, dict[str, Verdict | bool]] = {}
        self.task_explained: dict[Hashable, _Explained] = {}
        self.lowest: dict[str, int] | None = None
        self.lowest_anywhere = 0
        self.n_class_checks = 0
        self.n_cycle_checks = 0
        self.n_explained = 0
        self.n_preemption_searches = 0
        self.n_remembered = 0

    def _sort_plugins(self, profile: Profile) -> None:
        """Plugins by scope, the class and group keys from the fields they read, their hints."""
        self.gates = [gate.admit for gate in profile.gates]
        by_scope: dict[Scope, list[Any]] = {scope: [] for scope in Scope}
        for flt in profile.filters:
            by_scope[flt.scope].append(flt)
        self.node_filters: list[Check] = [f.check for f in by_scope[Scope.NODE]]
        self.class_filters: list[Check] = [f.check for f in by_scope[Scope.CLASS]]
        self.cycle_filters: list[Check] = [f.check for f in by_scope[Scope.CYCLE]]
        self.task_filters: list[Check] = [f.check for f in by_scope[Scope.TASK]]
        # The TASK filters that may answer NEVER (a filter says it never does with
        # `says_never = False`, as a CPU-share limit, NOT_NOW at most): only they can rule a node
        # out for good, so only they are asked whether one does (`_never`).
        self.never_filters: list[Check] = [f.check for f in by_scope[Scope.TASK]
                                           if getattr(f, "says_never", True)]
        # A refusal by TASK filters that all say `monotone = True` holds for the rest of the pass
        # for every task that reads alike (placements only add to what they count): a class
        # remembers the nodes refused per policy class, for tasks that exclude no node, and does
        # not ask again (most tasks meet their class's best candidate refused, by a CPU share or
        # an owner, and would ask the same refusals again and again).
        self.memo_refusals = REMEMBER_TASK_REFUSALS and bool(self.task_filters) and all(
            getattr(f, "monotone", False) for f in by_scope[Scope.TASK])
        total_weight = sum(w.weight for w in profile.scorers) or 1.0
        self.cached_scorers: list[tuple[Score, float]] = []
        self.task_scorers: list[tuple[Score, float]] = []
        keyed: list[Any] = [*by_scope[Scope.CLASS], *by_scope[Scope.CYCLE]]
        for weighted in profile.scorers:
            pair = (weighted.scorer.score, weighted.weight / total_weight)
            if weighted.scorer.scope is Scope.TASK:
                self.task_scorers.append(pair)
            else:
                self.cached_scorers.append(pair)
                keyed.append(weighted.scorer)
        self.nominators: list[Callable[[TaskRequest, CycleState], Iterable[str]]] = [
            getattr(w.scorer, "nominate") for w in profile.scorers  # noqa: B009 - optional, not on the protocol
            if w.scorer.scope is Scope.TASK and callable(getattr(w.scorer, "nominate", None))
        ]
        fields: set[str] = set()
        for plugin in keyed:
            fields.update(getattr(plugin, "task_fields", DEFAULT_TASK_FIELDS))
        self.class_key = class_key_function(fields)
        # CLASS verdicts are shared wider still: by the fields the CLASS filters read alone, so
        # tasks with the same constraints but other resources ask the labels filter only once.
        group_fields: set[str] = set()
        for flt in by_scope[Scope.CLASS]:
            group_fields.update(getattr(flt, "task_fields", DEFAULT_TASK_FIELDS))
        self.group_key = class_key_function(group_fields)
        self.hints: list[Callable[[TaskRequest], Resources]] = [
            f.requires for f in (*by_scope[Scope.CLASS], *by_scope[Scope.CYCLE])
            if callable(getattr(f, "requires", None))
        ]

    def _sort_nodes(self, ordered: list[TaskRequest]) -> None:
        """NODE filters once per node; nodes unable to hold the smallest request are dead; the
        rest in walk order."""
        cycle = self.cycle
        self.refused: dict[str, Verdict] = {}
        usable: list[NodeView] = []
        rep = ordered[0] if ordered else None
        for node in self.shuffled:
            verdict = _first_refusal(self.node_filters, rep, node, cycle) if rep is not None else None
            if verdict is None:
                usable.append(node)
            else:
                self.refused[node.id] = verdict
        self.dead: set[str] = set()
        self.floor: Resources | None = None
        if self.hints and ordered:
            need = self._need
            first = need(ordered[0])
            cpu, mem, disk = first.cpu_millis, first.memory_bytes, first.disk_bytes
            gpus, slots = first.gpus, first.slots
            for task in ordered:
                n = need(task)
                cpu = n.cpu_millis if n.cpu_millis < cpu else cpu
                mem = n.memory_bytes if n.memory_bytes < mem else mem
                disk = n.disk_bytes if n.disk_bytes < disk else disk
                gpus = n.gpus if n.gpus < gpus else gpus
                slots = n.slots if n.slots < slots else slots
            floor = self.floor = Resources(cpu, mem, disk, gpus, slots)
            for node in usable:  # raw arithmetic: thousands of nodes, no Resources built
                cap, used = node.capacity, node.allocated
                if (
                    cap.cpu_millis - used.cpu_millis < floor.cpu_millis
                    or cap.memory_bytes - used.memory_bytes < floor.memory_bytes
                    or cap.slots - used.slots < floor.slots
                    or cap.gpus - used.gpus < floor.gpus
                    or cap.disk_bytes - used.disk_bytes < floor.disk_bytes
                ):
                    self.dead.add(node.id)
            if self.dead:
                usable = [node for node in usable if node.id not in self.dead]
        self.usable = len(usable)
        self.walk_keys: list[tuple[int, int, int]] = []
        if self.order is NodeOrder.RANDOM:
            self.walk = usable + usable  # each class starts at its own offset and wraps around
            return
        rank = self.rank
        keyed_nodes = []
        for node in usable:
            cap, used = node.capacity, node.allocated
            keyed_nodes.append(((cap.gpus - used.gpus, cap.cpu_millis - used.cpu_millis, rank[node.id]), node))
        keyed_nodes.sort(key=lambda pair: pair[0])
        self.walk = [node for _, node in keyed_nodes]
        self.walk_keys = [key for key, _ in keyed_nodes]

    def _need(self, task: TaskRequest) -> Resources:
        """What the `requires` hints say a node must have free for the task (their maximum)."""
        hints = self.hints
        need = hints[0](task)
        if len(hints) == 1:
            return need
        for hint in hints[1:]:
            other = hint(task)
            need = Resources(
                max(need.cpu_millis, other.cpu_millis), max(need.memory_bytes, other.memory_bytes),
                max(need.disk_bytes, other.disk_bytes), max(need.gpus, other.gpus), max(need.slots, other.slots),
            )
        return need

    # -- the pass --------------------------------------------------------------------------------

    def run(self, ordered: list[TaskRequest]) -> Plan:
        cycle = self.cycle
        gates = self.gates
        class_key = self.class_key
        classes: dict[Hashable, _Class] = {}
        placements: list[Placement] = []
        preemptions: list[Preemption] = []
        unplaced: list[Unplaced] = []
        plain = not (self.task_filters or self.task_scorers)
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
            key = class_key(task)
            cs = classes.get(key)
            if cs is None:
                cs = classes[key] = self._new_class(task)
            node = self._pick(cs) if plain else self._pick_for_task(task, cs)
            if node is not None:
                node_id = node.id
                cycle.commit(task, node_id)
                self.changed.append(node_id)
                placements.append(Placement(task.task_id, node_id, task.resources))
                self._mark_dead(node_id)
                continue
            if cs.exhausted:
                if cs.summary is None:
                    cs.summary, cs.later, cs.not_now = self._explain(cs, None)
                    cs.later = self._victim_order(cs.later)
                summary, later, not_now = cs.summary, cs.later, cs.not_now
            else:  # the class has candidates, but TASK filters refused them all for this task
                # Tasks of a class that the TASK filters see alike (same policy class, same
                # exclusions) share one explanation per pass, as a class does.
                memo_key = (key, task.policy_class, task.excluded_nodes)
                memo = self.task_explained.get(memo_key)
                if memo is None:
                    summary, later, not_now = self._explain(cs, task)
                    memo = self.task_explained[memo_key] = _Explained(summary, later, not_now, task)
                summary, not_now = memo.summary, memo.not_now
                later = self._later(memo) if not EXPLAIN_SHORTCUTS or self._may_preempt(task, not_now) \
                    else _NO_LATER
            if self._preempt(task, cs, summary, later, preemptions, unplaced):
                continue
            if not self.shuffled:
                unplaced.append(Unplaced(task.task_id, summary, "no nodes in the cluster view", Status.NEVER))
            else:
                unplaced.append(Unplaced(task.task_id, summary, None, _NOT_NOW if not_now else Status.NEVER))
        stats = {
            "tasks": len(ordered),
            "classes": len(classes),
            "nodes": len(self.shuffled),
            "usable_nodes": self.usable,
            "class_checks": self.n_class_checks,
            "cycle_checks": self.n_cycle_checks,
            "explained_nodes": self.n_explained,
            "preemption_searches": self.n_preemption_searches,
            "task_refusals_remembered": self.n_remembered,
            "placements": len(placements),
            "preemptions": len(preemptions),
            "unplaced": len(unplaced),
        }
        return Plan(tuple(placements), tuple(preemptions), tuple(unplaced), self.view.version,
                    MappingProxyType(stats))

    def _new_class(self, task: TaskRequest) -> _Class:
        cs = self._walk_for(task)
        cs.need = self._need(task) if self.hints else None
        group = self.group_key(task)
        ok = self.groups.get(group)
        if ok is None:
            ok = self.groups[group] = {}
        cs.ok = ok
        return cs

    def _walk_for(self, task: TaskRequest) -> _Class:
        """A class with its walk: from the tightest fit up (best fit), from the emptiest node down
        to the tightest fit (worst fit), or once around from a random offset (random)."""
        count = self.usable
        if self.order is NodeOrder.RANDOM:
            offset = self.rng.randrange(count) if count else 0
            return _Class(task, offset, offset + count, 1)
        start = 0
        if self.hints:
            need = self._need(task)
            start = bisect_left(self.walk_keys, (need.gpus, need.cpu_millis, -1))
        if self.order is NodeOrder.WORST_FIT:
            return _Class(task, count - 1, start - 1, -1)
        return _Class(task, start, count, 1)

    def _mark_dead(self, node_id: str) -> None:
        """Mark the node dead if no pending task could fit on it any more."""
        floor = self.floor
        if floor is None:
            return
        free = self.cycle.free(node_id)
        if (
            free.cpu_millis < floor.cpu_millis
            or free.memory_bytes < floor.memory_bytes
            or free.slots < floor.slots
            or free.gpus < floor.gpus
            or free.disk_bytes < floor.disk_bytes
        ):
            self.dead.add(node_id)

    # -- candidates ------------------------------------------------------------------------------

    def _pick(self, cs: _Class) -> NodeView | None:
        """The class's best candidate now, or None when every node refuses it.

        Candidates keep the score they had when last checked; only the one about to be chosen
        is re-checked if its node changed since (refused: it leaves, the pool is topped up).
        """
        if cs.exhausted:
            return None
        pool = cs.pool
        score = cs.score
        ver = cs.ver
        versions = self.versions
        k = self.k
        wanted = max(self.explore, k - len(pool))
        while True:
            while wanted > 0:
                node = self._explore(cs)
                if node is None:
                    break
                pool[node.id] = node
                wanted -= 1
            if not pool:
                cs.exhausted = True
                return None
            ranked = sorted(pool, key=score.__getitem__, reverse=True)
            if len(ranked) > k:
                for nid in ranked[k:]:
                    del pool[nid]
                del ranked[k:]
            i = 0
            while i < len(ranked):
                nid = ranked[i]
                if ver[nid] == versions.get(nid, 0):
                    return pool[nid]
                if not self._recheck(cs, pool[nid]):  # refused: gone from the pool
                    i += 1
                    continue
                if i + 1 == len(ranked) or score[nid] >= score[ranked[i + 1]]:
                    return pool[nid]
                ranked = sorted(ranked[i:], key=score.__getitem__, reverse=True)  # rescored lower
                i = 0
            wanted = k

    def _explore(self, cs: _Class) -> NodeView | None:
        """The next node that passes for the class and is not a candidate yet: first the walk
        over never-seen nodes in capacity order, then round-robin over the seen ones."""
        walk = self.walk
        dead = self.dead
        ok = cs.ok
        pos = cs.pos
        gone = cs.gone
        i, stop, step = cs.fresh, cs.stop, cs.step
        while i != stop:
            node = walk[i]
            i += step
            nid = node.id
            if nid in dead or nid in pos or nid in gone:
                continue
            known = ok.get(nid)
            if known is not None and known is not True:
                continue
            if self._admit(cs, node):
                cs.fresh = i
                return node
        cs.fresh = i
        seen = cs.seen
        pool = cs.pool
        versions = self.versions
        tries = len(seen)
        while tries > 0 and seen:
            tries -= 1
            if cs.cursor >= len(seen):
                cs.cursor = 0
            node = seen[cs.cursor]
            nid = node.id
            if nid in pool:
                cs.cursor += 1
                continue
            if nid in dead:
                self._drop(cs, node)
                continue  # swapped out of `seen`; the cursor now points at another node
            if cs.ver[nid] != versions.get(nid, 0) and not self._recheck(cs, node):
                continue
            cs.cursor += 1
            return node
        return None

    def _admit(self, cs: _Class, node: NodeView) -> bool:
        """A class's first look at a node: CLASS filters (once per group), then the CYCLE check."""
        nid = node.id
        ok = cs.ok.get(nid)
        if ok is None:
            self.n_class_checks += 1
            task = cs.rep
            cycle = self.cycle
            ok = True
            for check in self.class_filters:
                verdict = check(task, node, cycle)
                if verdict.status is not _PASS:
                    ok = verdict
                    break
            cs.ok[nid] = ok
        if ok is not True:
            return False
        cs.pos[nid] = len(cs.seen)
        cs.seen.append(node)
        return self._recheck(cs, node)

    def _recheck(self, cs: _Class, node: NodeView) -> bool:
        """CYCLE filters and cached scores for a node that is new to the class or has changed."""
        self.n_cycle_checks += 1
        task = cs.rep
        cycle = self.cycle
        need = cs.need
        if need is not None:  # a filter said it refuses nodes without this free: skip asking it
            free = cycle.free(node.id)
            if (
                free.cpu_millis < need.cpu_millis
                or free.memory_bytes < need.memory_bytes
                or free.slots < need.slots
                or free.gpus < need.gpus
                or free.disk_bytes < need.disk_bytes
            ):
                self._drop(cs, node)
                return False
        for check in self.cycle_filters:
            if check(task, node, cycle).status is not _PASS:
                self._drop(cs, node)
                return False
        nid = node.id
        cs.ver[nid] = self.versions.get(nid, 0)
        total = 0.0
        for score, weight in self.cached_scorers:
            value = score(task, node, cycle)
            total += weight * (0.0 if value < 0.0 else 100.0 if value > 100.0 else value)
        cs.score[nid] = (total, -self.rank[nid])
        return True

    @staticmethod
    def _drop(cs: _Class, node: NodeView) -> None:
        """The node refused the class: it leaves the candidates and the round-robin for good."""
        cs.gone.add(node.id)
        cs.pool.pop(node.id, None)
        seen = cs.seen
        index = cs.pos.pop(node.id)
        last = seen.pop()
        if last is not node:
            seen[index] = last
            cs.pos[last.id] = index

    # -- TASK plugins (excluded nodes, topology): asked per task on the best candidates ----------

    def _pick_for_task(self, task: TaskRequest, cs: _Class) -> NodeView | None:
        best = self._pick(cs)
        if best is None:
            return None
        refused: set[str] | None = None
        if self.memo_refusals and not task.excluded_nodes:
            memo_key = (task.policy_class, task.domain)
            refused = cs.refused_for.get(memo_key)
            if refused is None:
                refused = cs.refused_for[memo_key] = set()
        if not self.task_scorers and self._task_ok_memo(task, best, refused):
            return best
        candidates = [n for n in list(cs.pool.values()) if self._fresh(cs, n)]
        if self.nominators:
            candidates += self._nominated(task, cs)
        node = self._first_ok(task, cs, candidates, refused)
        if node is not None:
            return node
        # None of the candidates will do for this task: walk on (and round the seen nodes) until
        # a node passes. What it looks at joins the candidates; the next pick trims them.
        pool = cs.pool
        while True:
            node = self._explore(cs)
            if node is None:
                return None
            pool[node.id] = node
            if self._task_ok_memo(task, node, refused):
                return node

    def _task_ok_memo(self, task: TaskRequest, node: NodeView, refused: set[str] | None) -> bool:
        """`_task_ok`, answered from (and adding to) the refusals remembered for the task's kind."""
        if refused is None:
            return self._task_ok(task, node)
        if node.id in refused:
            self.n_remembered += 1
            return False
        if self._task_ok(task, node):
            return True
        refused.add(node.id)
        return False

    def _fresh(self, cs: _Class, node: NodeView) -> bool:
        """Bring a seen node's verdict and score up to date; False if it now refuses the class."""
        nid = node.id
        return cs.ver[nid] == self.versions.get(nid, 0) or self._recheck(cs, node)

    def _nominated(self, task: TaskRequest, cs: _Class) -> list[NodeView]:
        """Nodes TASK scorers ask to be considered (where a workflow's other tasks run, say),
        beyond the class's candidates, if they can take the class."""
        out: list[NodeView] = []
        view = self.view
        pool = cs.pool
        for nominate in self.nominators:
            for nid in nominate(task, self.cycle):
                if nid in pool or nid not in view or nid in self.refused or nid in self.dead or nid in cs.gone:
                    continue
                node = view.node(nid)
                if nid in cs.pos:
                    if self._fresh(cs, node):
                        out.append(node)
                elif self._admit(cs, node):
                    out.append(node)
        return out

    def _task_ok(self, task: TaskRequest, node: NodeView) -> bool:
        cycle = self.cycle
        for check in self.task_filters:  # noqa: SIM110 - hot path: a loop beats all() on a generator
            if check(task, node, cycle).status is not _PASS:
                return False
        return True

    def _first_ok(self, task: TaskRequest, cs: _Class, nodes: list[NodeView],
                  refused: set[str] | None = None) -> NodeView | None:
        """The best of `nodes` by cached plus TASK scores that the TASK filters accept."""
        cycle = self.cycle
        if refused:
            count = len(nodes)
            nodes = [n for n in nodes if n.id not in refused]
            self.n_remembered += count - len(nodes)
        if not self.task_scorers:  # the cached scores alone (unique: they end with the node's rank)
            score = cs.score
            nodes = sorted(nodes, key=lambda n: score[n.id], reverse=True)
            for node in nodes:
                if self._task_ok_memo(task, node, refused):
                    return node
            return None
        ranked = []
        for node in nodes:
            total, tie = cs.score[node.id]
            for score, weight in self.task_scorers:
                value = score(task, node, cycle)
                total += weight * (0.0 if value < 0.0 else 100.0 if value > 100.0 else value)
            ranked.append(((total, tie), node))
        ranked.sort(key=lambda pair: pair[0], reverse=True)
        for _, node in ranked:
            if self._task_ok_memo(task, node, refused):
                return node
        return None

    # -- explanation and preemption --------------------------------------------------------------

    def _explain(
        self, cs: _Class, task: TaskRequest | None
    ) -> tuple[Mapping[str, int], list[NodeView], bool]:
        """Why no node takes the class (or, with `task`, this task): every node counted once by
        the first refusal; the NOT_NOW ones are where preemption may help."""
        self.n_explained += len(self.shuffled)
        if EXPLAIN_SHORTCUTS:
            return self._explain_tallied(cs, task)
        cycle = self.cycle
        summary: dict[str, int] = {}
        later: list[NodeView] = []
        shared = self._shared_verdicts(cs)
        task_filters = self.task_filters if task is not None else None
        for node, verdict in zip(self.shuffled, shared, strict=True):
            if verdict is None and task_filters:
                for check in task_filters:
                    answer = check(task, node, cycle)  # type: ignore[arg-type]
                    if answer.status is not _PASS:
                        verdict = answer
                        break
            if verdict is None:
                summary[_UNCHOSEN] = summary.get(_UNCHOSEN, 0) + 1
                continue
            key = verdict.key
            summary[key] = summary.get(key, 0) + 1
            if verdict.status is _NOT_NOW:
                later.append(node)
        if task is None or not self.task_filters:
            return MappingProxyType(summary), later, bool(later)
        # With `task`, `later` is every busy node (see `_Explained`): the task may fit later if
        # one of them is a place it may ever use (no TASK filter says NEVER); the first will do.
        return MappingProxyType(summary), later, self._any_usable(task, later)

    def _explain_tallied(
        self, cs: _Class, task: TaskRequest | None
    ) -> tuple[Mapping[str, int], list[NodeView], bool]:
        """`_explain` from the class's tallies: the NODE/CLASS/CYCLE part is counted already
        (`_shared_verdicts` keeps it), so only the nodes that pass it meet the TASK filters:
        the same summary, busy nodes and answer, without a walk over every node."""
        self._shared_verdicts(cs)
        summary = dict(cs.counts)
        shuffled = self.shuffled
        passing = cs.open
        task_filters = self.task_filters if task is not None else None
        if not task_filters:
            if passing:
                summary[_UNCHOSEN] = summary.get(_UNCHOSEN, 0) + len(passing)
            later = [shuffled[i] for i in sorted(cs.busy)]
            return MappingProxyType(summary), later, bool(later)
        cycle = self.cycle
        unchosen = 0
        refused_busy: list[int] = []
        for i, node in passing.items():
            for check in task_filters:
                answer = check(task, node, cycle)  # type: ignore[arg-type]
                if answer.status is not _PASS:
                    key = answer.key
                    summary[key] = summary.get(key, 0) + 1
                    if answer.status is _NOT_NOW:
                        refused_busy.append(i)
                    break
            else:
                unchosen += 1
        if unchosen:
            summary[_UNCHOSEN] = summary.get(_UNCHOSEN, 0) + unchosen
        busy = cs.busy.union(refused_busy) if refused_busy else cs.busy
        later = [shuffled[i] for i in sorted(busy)]
        # Any busy node the task may ever use will do: those its TASK filters only put off first.
        usable = self._any_usable(task, [shuffled[i] for i in refused_busy]) or \
            self._any_usable(task, [shuffled[i] for i in cs.busy])  # type: ignore[arg-type]
        return MappingProxyType(summary), later, usable

    def _shared_verdicts(self, cs: _Class) -> list[Verdict | None]:
        """Per node in shuffled order, the first NODE, CLASS or CYCLE refusal for the class's
        representative (None: it passes them all), tallied in `cs.counts`, `cs.open` and
        `cs.busy`. CLASS and CYCLE answers depend only on the node and its tallies
        (framework.py), so a class explained again re-asks only the nodes whose tallies changed
        since (the pass's change log)."""
        cycle = self.cycle
        rep = cs.rep
        shared = [*self.class_filters, *self.cycle_filters]
        refused = self.refused
        ok = cs.ok

        def first(node: NodeView) -> Verdict | None:
            verdict = refused.get(node.id)
            if verdict is not None:
                return verdict
            known = ok.get(node.id)
            if isinstance(known, Verdict):
                return known  # the CLASS refusal the class's group already got
            return _first_refusal(shared if known is None else self.cycle_filters, rep, node, cycle)

        if not EXPLAIN_SHORTCUTS:
            return [first(node) for node in self.shuffled]
        verdicts = cs.explained
        counts, passing, busy = cs.counts, cs.open, cs.busy

        def tally(i: int, node: NodeView, verdict: Verdict | None) -> None:
            if verdict is None:
                passing[i] = node
                return
            key = verdict.key
            counts[key] = counts.get(key, 0) + 1
            if verdict.status is _NOT_NOW:
                busy.add(i)

        if verdicts is None:
            verdicts = cs.explained = [first(node) for node in self.shuffled]
            for i, (node, verdict) in enumerate(zip(self.shuffled, verdicts, strict=True)):
                tally(i, node, verdict)
        else:
            changed = self.changed
            if cs.explained_at < len(changed):
                rank = self.rank
                view = self.view
                for nid in set(changed[cs.explained_at:]):
                    i = rank[nid]
                    old = verdicts[i]
                    if old is None:
                        del passing[i]
                    else:
                        key = old.key
                        left = counts[key] - 1
                        if left:
                            counts[key] = left
                        else:
                            del counts[key]
                        busy.discard(i)
                    node = view.node(nid)
                    verdict = verdicts[i] = first(node)
                    tally(i, node, verdict)
        cs.explained_at = len(self.changed)
        return verdicts

    def _any_usable(self, task: TaskRequest, nodes: list[NodeView]) -> bool:
        """Is one of `nodes` not ruled out for good for the task (`_never` false on it)?"""
        checks = self.never_filters
        if not checks:
            return bool(nodes)
        cycle = self.cycle
        never = Status.NEVER
        for node in nodes:
            for check in checks:
                if check(task, node, cycle).status is never:
                    break
            else:
                return True
        return False

    def _never(self, task: TaskRequest, node: NodeView) -> bool:
        """A node this task can never use (a TASK filter says NEVER: excluded, a policy) is no
        place to preempt for it, however busy it is."""
        cycle = self.cycle
        never = Status.NEVER
        for check in self.never_filters:  # noqa: SIM110 - hot path
            if check(task, node, cycle).status is never:
                return True
        return False

    def _may_preempt(self, task: TaskRequest, not_now: bool) -> bool:
        """Could `_preempt` search for this task at all (its checks before looking at nodes)?"""
        return bool(self.profile.preemption and not_now and self._lowest() and task.priority > self.lowest_anywhere)

    def _later(self, explained: _Explained) -> list[NodeView]:
        """A task-level explanation's preemption candidates, in victim order (worked out once)."""
        if explained.later is None:
            busy = explained.busy
            if self.task_filters:
                busy = [node for node in busy if not self._never(explained.task, node)]
            explained.later = self._victim_order(busy)
        return explained.later

    def _preempt(
        self,
        task: TaskRequest,
        cs: _Class,
        summary: Mapping[str, int],
        later: list[NodeView],
        preemptions: list[Preemption],
        unplaced: list[Unplaced],
    ) -> bool:
        profile = self.profile
        if not profile.preemption or not later:
            return False
        class_level = later is cs.later
        if class_level and cs.spent_at is not None and task.priority <= cs.spent_at:
            return False
        lowest = self._lowest()
        if not lowest or task.priority <= self.lowest_anywhere:
            return False  # nothing in the cluster has a lower priority and may be preempted
        self.n_preemption_searches += 1
        choice, kept = find_preemption(
            task, later, self.cycle, recheck=self._what_if, rank=self.rank, want=self.preemption_nodes,
            victim_filters=profile.victim_filters, lowest=lowest,
        )
        if class_level:
            cs.later = kept
        if choice is None:
            if class_level:
                cs.spent_at = task.priority
            return False
        node = choice.node
        victims = tuple(v.task_id for v in choice.victims)
        self.cycle.reserve(task, node.id, choice.reserve, victims)
        self.changed.append(node.id)
        self._mark_dead(node.id)
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

    def _lowest(self) -> dict[str, int]:
        """Node id -> the lowest priority among its preemptible running tasks (nodes with any)."""
        if self.lowest is None:
            self.lowest = {}
            for node in self.shuffled:
                floor = min((t.priority for t in node.running if t.preemptible), default=None)
                if floor is not None:
                    self.lowest[node.id] = floor
            self.lowest_anywhere = min(self.lowest.values(), default=0)
        return self.lowest

    def _victim_order(self, nodes: list[NodeView]) -> list[NodeView]:
        """Preemption candidates: nodes with something preemptible, lowest priorities first."""
        if not self.profile.preemption:
            return nodes
        lowest = self._lowest()
        return sorted((n for n in nodes if n.id in lowest), key=lambda n: lowest[n.id])

    def _what_if(self, task: TaskRequest, node: NodeView, cycle: CycleState) -> bool:
        """Would the node take the task (CYCLE and TASK filters) with the victims gone?"""
        checks = (*self.cycle_filters, *self.task_filters)
        return all(check(task, node, cycle).status is _PASS for check in checks)
