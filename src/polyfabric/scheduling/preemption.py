"""Preemption: evict lower-priority work so a higher-priority task fits (kube's PostFilter).

Asked only for a task no node could take, and only on nodes that refused it NOT_NOW (busy, not
too small, not cordoned). On each such node:

1. Eligible victims: running, preemptible, STRICTLY lower priority than the task, not already
   evicted by this plan, allowed by every victim filter. Equal or higher priority is never touched.
2. Lowest priority first: the smallest priority level L such that evicting every eligible victim
   at or below L frees enough (resources and a task place). Only victims at or below L are used.
3. Fewest victims among those, then the lowest sum of priorities, then the least resources freed
   beyond the need (normalized by capacity). Exact by enumeration while it is cheap, else greedy.
4. The node is re-checked with every CYCLE and VOLATILE filter as if the victims were gone.

Among nodes, the same order decides (highest victim priority, count, priority sum, waste), ties by
the pass's random node rank. The applier stops the victims; the task is placed by a later pass,
so this pass holds what the victims do not free and counts the task against the limits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from math import comb

from polyfabric.domain.resources import Resources
from polyfabric.scheduling.filters.capacity import describe_shortfall
from polyfabric.scheduling.framework import CycleState, VictimFilter
from polyfabric.scheduling.view import NodeView, RunningTask, TaskRequest

__all__ = ["VictimSet", "choose_victims", "find_preemption"]

_EXACT_BUDGET = 4096
"""Subsets one node's exact search may try before it settles for the greedy answer."""

Recheck = Callable[[TaskRequest, NodeView, CycleState], bool]


@dataclass(frozen=True, slots=True)
class VictimSet:
    """The tasks to evict on one node, and what of the task's request they do not free (`reserve`,
    held from the node's current free resources until the task is placed)."""

    node: NodeView
    victims: tuple[RunningTask, ...]
    reserve: Resources
    max_priority: int
    priority_sum: int
    waste: float
    need: str

    def order(self, rank: int = 0) -> tuple[int, int, int, float, int]:
        """Smaller is better: lowest priorities, then fewest victims, then least waste."""
        return (self.max_priority, len(self.victims), self.priority_sum, self.waste, rank)


def _vector(r: Resources) -> tuple[int, int, int, int, int]:
    return (r.cpu_millis, r.memory_bytes, r.disk_bytes, r.gpus, r.slots)


def _covers(combo: Sequence[int], vectors: Sequence[tuple[int, ...]], dims: Sequence[tuple[int, int]]) -> bool:
    """Do the victims at `combo` free at least `n` in every needed dimension `(d, n)`?"""
    for d, n in dims:
        total = 0
        for i in combo:
            total += vectors[i][d]
        if total < n:
            return False
    return True


def _waste(combo: Sequence[int], vectors: Sequence[tuple[int, ...]], need: tuple[int, ...],
           cap: tuple[int, ...]) -> float:
    """What the victims free beyond the need, as fractions of the node's capacity, summed."""
    total = 0.0
    for d in range(5):
        if cap[d] > 0:
            freed = 0
            for i in combo:
                freed += vectors[i][d]
            total += (freed - need[d]) / cap[d]
    return total


def _greedy(items: Sequence[RunningTask], vectors: Sequence[tuple[int, ...]], need: tuple[int, ...]) -> list[int]:
    """Cover the need by repeatedly taking the victim that covers most of what is left (lower
    priority on ties), then drop victims that turned out unnecessary. Indexes into `items`."""
    left = list(need)
    free_idx = list(range(len(items)))
    chosen: list[int] = []
    while any(n > 0 for n in left):
        best, best_gain = free_idx[0], (-1.0, 0)
        for i in free_idx:
            vec = vectors[i]
            gain = (sum(min(vec[d], left[d]) / need[d] for d in range(6) if left[d] > 0), -items[i].priority)
            if gain > best_gain:
                best, best_gain = i, gain
        free_idx.remove(best)
        chosen.append(best)
        left = [left[d] - vectors[best][d] for d in range(6)]
    dims = [(d, n) for d, n in enumerate(need) if n > 0]
    for i in sorted(chosen, key=lambda i: (-items[i].priority, -sum(vectors[i][:5]))):
        rest = [j for j in chosen if j != i]
        if _covers(rest, vectors, dims):
            chosen.remove(i)
    return chosen


class _Beaten:
    """The node has victims, but not better ones than the set to beat."""


_BEATEN = _Beaten()


def choose_victims(
    task: TaskRequest,
    node: NodeView,
    cycle: CycleState,
    *,
    victim_filters: Sequence[VictimFilter] = (),
    budget: int = _EXACT_BUDGET,
) -> VictimSet | None:
    """The best victims on one node for `task` by resources and task count, or None if evicting
    every eligible victim would not make it fit (steps 1-3 of the module doc; no re-check)."""
    choice = _choose(task, node, cycle, victim_filters, budget, None)
    return None if isinstance(choice, _Beaten) else choice


def _choose(
    task: TaskRequest,
    node: NodeView,
    cycle: CycleState,
    victim_filters: Sequence[VictimFilter],
    budget: int,
    beat: tuple[int, int] | None,
) -> VictimSet | _Beaten | None:
    """`choose_victims`, stopping early with _BEATEN once it is clear the node cannot offer fewer
    or lower victims than `beat` (highest priority, count)."""
    request = task.resources
    capacity = node.capacity
    if capacity.shortfall(request):
        return None
    cap = cycle.task_cap(node)
    if cap == 0:
        return None
    free = cycle.free(node.id)
    count = cycle.task_count(node.id)
    req_v, free_v = _vector(request), _vector(free)
    need = (*(max(0, req_v[d] - free_v[d]) for d in range(5)),
            max(0, count + 1 - cap) if cap is not None else 0)
    if not any(need):
        return None  # something other than resources or the task cap refuses it: not ours to fix
    preempted = cycle.preempted
    eligible = [
        v for v in node.running
        if v.preemptible and v.priority < task.priority and v.task_id not in preempted
        and all(f.allows(task, v, node) for f in victim_filters)
    ]
    if not eligible:
        return None
    eligible.sort(key=lambda v: (v.priority, v.task_id))
    # Step 2: the lowest priority level whose victims, all together, free enough.
    acc = [0] * 6
    upto = 0
    level: int | None = None
    while upto < len(eligible):
        p = eligible[upto].priority
        while upto < len(eligible) and eligible[upto].priority == p:
            r = eligible[upto].resources
            acc[0] += r.cpu_millis
            acc[1] += r.memory_bytes
            acc[2] += r.disk_bytes
            acc[3] += r.gpus
            acc[4] += r.slots
            acc[5] += 1
            upto += 1
        if all(acc[d] >= need[d] for d in range(6)):
            level = p
            break
    if level is None:
        return None
    items = eligible[:upto]
    vectors = [(*_vector(v.resources), 1) for v in items]
    dims = [(d, n) for d, n in enumerate(need) if n > 0]
    # No set on this node has fewer victims than this (largest victims first, per dimension).
    lower = 1
    for d, n in dims:
        total, m = 0, 0
        for amount in sorted((v[d] for v in vectors), reverse=True):
            total += amount
            m += 1
            if total >= n:
                break
        lower = max(lower, m)
    if beat is not None and (level, lower) > beat:
        return _BEATEN
    # Step 3: fewest victims (exact while cheap), then priority sum, then waste. Waste is a sum
    # over victims (what each frees, as fractions of capacity) less a constant, so each victim's
    # share is computed once.
    cap_v = _vector(capacity)
    share = [sum(vec[d] / cap_v[d] for d in range(5) if cap_v[d] > 0) for vec in vectors]
    prios = [v.priority for v in items]
    chosen = _greedy(items, vectors, need)
    spent = 0
    for size in range(lower, len(chosen) + 1):
        spent += comb(len(items), size)
        if spent > budget:
            break
        best_key: tuple[int, float, list[str]] | None = None
        for combo in combinations(range(len(items)), size):
            if _covers(combo, vectors, dims):
                psum = 0
                shares = 0.0
                for i in combo:
                    psum += prios[i]
                    shares += share[i]
                if best_key is not None and (psum, shares) > best_key[:2]:
                    continue
                key = (psum, shares, [items[i].task_id for i in combo])
                if best_key is None or key < best_key:
                    best_key, chosen = key, list(combo)
        if best_key is not None:
            break
    victims = tuple(items[i] for i in chosen)
    freed = [sum(vectors[i][d] for i in chosen) for d in range(5)]
    reserve = Resources(max(0, req_v[0] - freed[0]), max(0, req_v[1] - freed[1]), max(0, req_v[2] - freed[2]),
                        max(0, req_v[3] - freed[3]), max(0, req_v[4] - freed[4]))
    need_text = "; ".join(
        [describe_shortfall(dim, request, free, capacity)
         for d, dim in enumerate(("cpu", "memory", "disk", "gpu", "slots")) if need[d] > 0]
        + ([f"node {node.name} runs {count} of at most {cap} tasks"] if need[5] > 0 else [])
    )
    return VictimSet(
        node=node,
        victims=victims,
        reserve=reserve,
        max_priority=max(v.priority for v in victims),
        priority_sum=sum(v.priority for v in victims),
        waste=_waste(chosen, vectors, need, cap_v),
        need=need_text,
    )


def find_preemption(
    task: TaskRequest,
    candidates: Sequence[NodeView],
    cycle: CycleState,
    *,
    recheck: Recheck,
    rank: Mapping[str, int],
    want: int,
    victim_filters: Sequence[VictimFilter] = (),
    lowest: Mapping[str, int] | None = None,
) -> tuple[VictimSet | None, list[NodeView]]:
    """Look through `candidates` (nodes that refused the task NOT_NOW) until `want` nodes offer
    victims; return the best set that passes `recheck`, and the candidates still worth asking.

    `lowest` (node id -> lowest priority among its preemptible tasks), with candidates sorted by
    it, lets the search stop as soon as no later node can offer lower or fewer victims.
    A node that offers nothing is dropped from the returned list: within a pass, victims only get
    used up and free resources only shrink, and later tasks of the same class have no higher
    priority, so it would offer nothing to them either.
    """
    best: VictimSet | None = None
    best_order: tuple[int, int, int, float, int] | None = None
    kept: list[NodeView] = []
    found = 0
    for i, node in enumerate(candidates):
        if found >= want:
            kept.extend(candidates[i:])
            break
        if best is not None and lowest is not None:
            floor = lowest.get(node.id)
            if floor is not None and (best.max_priority < floor
                                      or (best.max_priority == floor and len(best.victims) == 1)):
                kept.extend(candidates[i:])  # sorted by `lowest`: nobody further on does better
                break
        beat = (best.max_priority, len(best.victims)) if best is not None else None
        choice = _choose(task, node, cycle, victim_filters, _EXACT_BUDGET, beat)
        if choice is None:
            continue  # nothing to offer, now or to later tasks of the class: dropped
        kept.append(node)
        found += 1
        if isinstance(choice, _Beaten):
            continue
        freed = Resources()
        for victim in choice.victims:
            freed = freed + victim.resources
        with cycle.released(node.id, freed, len(choice.victims)):
            ok = recheck(task, node, cycle)
        if not ok:
            continue
        order = choice.order(rank.get(node.id, 0))
        if best_order is None or order < best_order:
            best, best_order = choice, order
    return best, kept
