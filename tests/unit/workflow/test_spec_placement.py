"""Workflow files: the topology placement keys of a task (locality, spread, affinity, constraints)."""

from __future__ import annotations

from typing import Any

import pytest

from polyfabric.workflow.spec import WorkflowInvalid, parse_workflow


def _doc(**work: Any) -> dict[str, Any]:
    return {"name": "wf", "tasks": {
        "src": {"command": ["true"]},
        "work": {"command": ["true"], "depends_on": ["src"], **work},
    }}


def test_placement_keys_parse() -> None:
    spec = parse_workflow(_doc(locality="near(tasks.src)", spread="zone",
                               affinity={"disk=ssd": 10, "zone=eu-2": -5}, constraints={"region": "eu"}))
    work = spec.tasks["work"]
    assert work.near == "src"
    assert work.spread == "zone"
    assert work.affinity == (("disk", "ssd", 10.0), ("zone", "eu-2", -5.0))
    assert work.constraints == {"region": "eu"}
    plain = spec.tasks["src"]
    assert (plain.near, plain.spread, plain.affinity, plain.constraints) == (None, None, (), {})


@pytest.mark.parametrize(("work", "message"), [
    ({"locality": "close(tasks.src)"}, "locality must be near(tasks.NAME)"),
    ({"locality": "near(tasks.other)"}, "needs 'other' in depends_on"),
    ({"locality": 3}, "locality must be near"),
    ({"spread": "zone area"}, "spread must name a node label"),
    ({"affinity": ["disk=ssd"]}, "affinity must be a map"),
    ({"affinity": {"disk": 10}}, "must be LABEL=VALUE"),
    ({"affinity": {"disk=ssd": 0}}, "in -100..100, not 0"),
    ({"affinity": {"disk=ssd": 500}}, "in -100..100, not 0"),
    ({"affinity": {"disk=ssd": True}}, "in -100..100, not 0"),
    ({"constraints": {"zone": 1}}, "constraints must be a map"),
])
def test_bad_placement_is_named(work: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkflowInvalid) as info:
        parse_workflow(_doc(**work))
    assert any(message in p for p in info.value.problems), info.value.problems
