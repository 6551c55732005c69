"""Small constructors and Hypothesis strategies for scheduling tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hypothesis import strategies as st

from polyfabric.domain.node_states import NodeState
from polyfabric.domain.resources import Resources
from polyfabric.scheduling import (
    ClusterView,
    ConcurrencyLimits,
    CycleState,
    NodeView,
    RunningTask,
    TaskRequest,
)

GI = 2**30


def res(cpu: float = 0, mem_gi: float = 0, *, gpus: int = 0, slots: int = 1, disk_gi: float = 0) -> Resources:
    """Resources in the units people think in: cores and GiB."""
    return Resources(round(cpu * 1000), int(mem_gi * GI), int(disk_gi * GI), gpus, slots)


def node(
    node_id: str,
    *,
    cpu: float = 4,
    mem_gi: float = 16,
    gpus: int = 0,
    slots: int = 8,
    state: NodeState = NodeState.ACTIVE,
    labels: Mapping[str, str] | None = None,
    allocated: Resources | None = None,
    running: Iterable[RunningTask] = (),
    max_tasks: int | None = None,
    domain: str = "acme",
) -> NodeView:
    running = tuple(running)
    if allocated is None:
        allocated = Resources()
        for task in running:
            allocated = allocated + task.resources
    return NodeView(node_id, f"{node_id}-name", domain, state, dict(labels or {}),
                    res(cpu, mem_gi, gpus=gpus, slots=slots), allocated, running, max_tasks)


def running(
    task_id: str,
    node_id: str,
    *,
    priority: int = 0,
    resources: Resources | None = None,
    workflow: str = "wf-run",
    domain: str = "acme",
    semaphore: str | None = None,
    preemptible: bool = True,
) -> RunningTask:
    return RunningTask(task_id, workflow, domain, priority, resources or res(1, 1), semaphore, node_id,
                       preemptible)


def task(
    task_id: str,
    *,
    priority: int = 0,
    seq: int = 0,
    resources: Resources | None = None,
    workflow: str = "wf",
    domain: str = "acme",
    semaphore: str | None = None,
    constraints: Mapping[str, str] | None = None,
    excluded: Iterable[str] = (),
) -> TaskRequest:
    return TaskRequest(task_id, workflow, domain, priority, seq, resources or res(1, 1), semaphore,
                       dict(constraints or {}), frozenset(excluded))


def view(*nodes: NodeView, limits: ConcurrencyLimits | None = None, version: int = 1) -> ClusterView:
    return ClusterView(tuple(nodes), version, limits or ConcurrencyLimits())


def cycle(*nodes: NodeView, limits: ConcurrencyLimits | None = None) -> CycleState:
    return CycleState(view(*nodes, limits=limits))


# -- Hypothesis --------------------------------------------------------------------------------

STATES = [NodeState.ACTIVE] * 6 + [NodeState.CORDONED, NodeState.DOWN, NodeState.DRAINING]


@st.composite
def small_resources(draw: Any, *, max_cpu: int = 4, max_mem: int = 8, gpus: bool = True) -> Resources:
    return Resources(
        draw(st.integers(0, max_cpu)) * 500,
        draw(st.integers(0, max_mem)) * GI // 2,
        0,
        draw(st.integers(0, 1)) if gpus else 0,
        1,
    )


@st.composite
def clusters(draw: Any, *, max_nodes: int = 6, limits: bool = True) -> ClusterView:
    """Random small clusters: a few node shapes and states, some running work, random limits."""
    count = draw(st.integers(0, max_nodes))
    nodes = []
    seq = 0
    for i in range(count):
        nid = f"n{i}"
        cpu = draw(st.integers(1, 8)) * 500
        mem = draw(st.integers(1, 8)) * GI
        gpus = draw(st.integers(0, 2))
        slots = draw(st.integers(1, 6))
        capacity = Resources(cpu, mem, 0, gpus, slots)
        tasks = []
        allocated = Resources()
        for _ in range(draw(st.integers(0, 3))):
            want = draw(small_resources(max_cpu=2, max_mem=4))
            after = allocated + want
            if not capacity.fits(after):
                break
            allocated = after
            seq += 1
            tasks.append(RunningTask(
                f"r{seq}", draw(st.sampled_from(["wa", "wb", "wc"])), draw(st.sampled_from(["acme", "globex"])),
                draw(st.integers(0, 6)), want, draw(st.sampled_from([None, None, "sem-a", "sem-b"])), nid,
                draw(st.booleans()) or draw(st.booleans()),
            ))
        nodes.append(NodeView(
            nid, f"node-{i}", "acme", draw(st.sampled_from(STATES)),
            {"zone": draw(st.sampled_from(["a", "b"]))}, capacity, allocated, tuple(tasks),
            draw(st.sampled_from([None, None, 1, 2, 3])),
        ))
    if limits:
        def sometimes(low: int, high: int) -> Any:
            return st.one_of(st.none(), st.none(), st.integers(low, high))

        def caps(keys: list[str], low: int, high: int) -> Any:
            return st.dictionaries(st.sampled_from(keys), st.integers(low, high), max_size=len(keys))

        lim = ConcurrencyLimits(
            global_max=draw(sometimes(0, 12)),
            per_domain=draw(caps(["acme", "globex"], 0, 8)),
            per_node=draw(sometimes(0, 4)),
            per_workflow=draw(caps(["wa", "wb", "wc"], 0, 6)),
            semaphores=draw(caps(["sem-a", "sem-b"], 0, 4)),
        )
    else:
        lim = ConcurrencyLimits()
    return ClusterView(tuple(nodes), draw(st.integers(0, 9)), lim)


@st.composite
def task_sets(draw: Any, *, max_tasks: int = 14, node_ids: tuple[str, ...] = ()) -> list[TaskRequest]:
    """Random pending tasks with a few shapes (so classes repeat), constraints and exclusions."""
    shapes = draw(st.lists(small_resources(), min_size=1, max_size=3))
    count = draw(st.integers(0, max_tasks))
    seqs = draw(st.lists(st.integers(0, 1000), min_size=count, max_size=count, unique=True))
    out = []
    for i in range(count):
        excluded = frozenset(draw(st.lists(st.sampled_from(node_ids), max_size=2))) if node_ids else frozenset()
        out.append(TaskRequest(
            f"t{i}",
            draw(st.sampled_from(["wa", "wb", "wc"])),
            draw(st.sampled_from(["acme", "globex"])),
            draw(st.integers(0, 9)),
            seqs[i],
            draw(st.sampled_from(shapes)),
            draw(st.sampled_from([None, None, "sem-a", "sem-b"])),
            draw(st.sampled_from([{}, {}, {"zone": "a"}, {"zone": "b"}])),
            excluded,
        ))
    return out
