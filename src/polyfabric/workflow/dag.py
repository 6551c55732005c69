"""Graph helpers for task DAGs: topological order, cycle finding, reachability.

Graphs are given as `deps`: node -> the nodes it depends on, in a stable (file) order. Edges to
nodes that are not keys are ignored here; the spec validator reports them separately.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["ancestors", "children_of", "descendants", "find_cycle", "topological_order"]


def topological_order(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Dependencies first, ties broken by the mapping's order; None if there is a cycle."""
    index = {name: i for i, name in enumerate(deps)}
    indegree = {name: 0 for name in deps}
    children: dict[str, list[str]] = {name: [] for name in deps}
    for name, upstream in deps.items():
        for dep in dict.fromkeys(upstream):
            if dep in index:
                indegree[name] += 1
                children[dep].append(name)
    heap = [index[name] for name, count in indegree.items() if count == 0]
    heapq.heapify(heap)
    names = list(deps)
    order: list[str] = []
    while heap:
        name = names[heapq.heappop(heap)]
        order.append(name)
        for child in children[name]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(heap, index[child])
    return order if len(order) == len(names) else None


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts (a -> b -> a: a depends on b, b on a).

    Deterministic: the search starts from nodes in mapping order and follows dependencies in
    their listed order, so the same file always reports the same cycle.
    """
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(deps, WHITE)
    for root in deps:
        if color[root] != WHITE:
            continue
        path: list[str] = [root]
        iters = [iter(deps[root])]
        color[root] = GREY
        while iters:
            for dep in iters[-1]:
                if dep not in color:
                    continue
                if color[dep] == GREY:
                    return [*path[path.index(dep):], dep]
                if color[dep] == WHITE:
                    color[dep] = GREY
                    path.append(dep)
                    iters.append(iter(deps[dep]))
                    break
            else:
                color[path.pop()] = BLACK
                iters.pop()
    return None


def children_of(deps: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Invert `deps`: node -> the nodes that depend on it (in mapping order)."""
    children: dict[str, list[str]] = {name: [] for name in deps}
    for name, upstream in deps.items():
        for dep in dict.fromkeys(upstream):
            if dep in children:
                children[dep].append(name)
    return children


def _reach(edges: Mapping[str, Sequence[str]], start: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    stack = [n for n in start if n in edges]
    while stack:
        for nxt in edges[stack.pop()]:
            if nxt in edges and nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def ancestors(deps: Mapping[str, Sequence[str]], name: str) -> set[str]:
    """Every node `name` depends on, directly or transitively (not `name` itself, unless cyclic)."""
    return _reach(deps, [name])


def descendants(deps: Mapping[str, Sequence[str]], names: Iterable[str]) -> set[str]:
    """Every node that depends, directly or transitively, on one of `names`."""
    return _reach(children_of(deps), names)
