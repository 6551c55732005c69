"""The region → zone → rack tree (pure): counts, states, free capacity of Active nodes only."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from polyfabric.domain.resources import Resources
from polyfabric.domain.topology import TopologyNode, build_tree


def _node(i: int, state: str = "active", **labels: str) -> TopologyNode:
    cap = Resources(cpu_millis=2000, memory_bytes=1 << 30, slots=4)
    return TopologyNode(f"n{i}", f"node-{i}", state, labels, cap, Resources(cpu_millis=500, slots=1))


def test_levels_counts_and_free() -> None:
    tree = build_tree([
        _node(1, region="eu", zone="eu-1", rack="r1"),
        _node(2, "down", region="eu", zone="eu-1", rack="r1"),
        _node(3, region="eu", zone="eu-2"),
        _node(4),
    ])
    assert tree["nodes"] == 4 and tree["states"] == {"active": 3, "down": 1} and tree["level"] == "region"
    assert tree["capacity"]["cpu_millis"] == 8000 and tree["free"]["cpu_millis"] == 1500
    unlabelled, eu = tree["children"]  # sorted by name: "-" (no label) first
    assert (unlabelled["name"], eu["name"]) == ("-", "eu")
    eu1 = eu["children"][0]
    assert eu1["name"] == "eu-1" and eu1["level"] == "rack" and eu1["free"]["slots"] == 1
    rack = eu1["children"][0]
    assert [m["name"] for m in rack["members"]] == ["node-1", "node-2"]
    assert build_tree([])["nodes"] == 0


@given(st.lists(st.tuples(st.sampled_from(["a", "b", None]), st.sampled_from(["x", "y", None]),
                          st.sampled_from(["active", "down", "cordoned"])), max_size=30))
def test_every_level_sums_its_children(spec: list[tuple[str | None, str | None, str]]) -> None:
    nodes = []
    for i, (region, zone, state) in enumerate(spec):
        labels = {k: v for k, v in (("region", region), ("zone", zone)) if v is not None}
        nodes.append(_node(i, state, **labels))

    def check(level: dict) -> None:
        children = level.get("children")
        if not children:
            assert len(level.get("members", [])) == level["nodes"]
            return
        assert sum(c["nodes"] for c in children) == level["nodes"]
        assert sum(c["free"]["cpu_millis"] for c in children) == level["free"]["cpu_millis"]
        for c in children:
            check(c)

    tree = build_tree(nodes)
    assert tree["nodes"] == len(nodes)
    check(tree)
