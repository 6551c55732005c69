"""`polyfabric limits`: the operator's caps over running tasks, set and shown through a real coordinator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from polyfabric.cli.main import cli
from polyfabric.testing import CoordinatorProcess


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory):
    proc = CoordinatorProcess(Path(tmp_path_factory.mktemp("limits"))).start()
    yield proc
    proc.stop()


def _cli(coordinator: CoordinatorProcess, *args: str, token: str | None = None):
    env = {"POLYFABRIC_URL": coordinator.url, "POLYFABRIC_TOKEN": token or coordinator.admin_token,
           "POLYFABRIC_CONFIG": "/nonexistent"}
    return CliRunner().invoke(cli, list(args), env=env)


def test_limits_are_set_shown_and_replaced(coordinator: CoordinatorProcess):
    shown = _cli(coordinator, "limits", "show", "--json")
    assert json.loads(shown.stdout) == {"global_max": None, "per_domain": {}, "per_node": None}

    done = _cli(coordinator, "limits", "set", "--global", "10", "--domain", "lab=4", "--per-node", "2", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(_cli(coordinator, "limits", "show", "--json").stdout) == {
        "global_max": 10, "per_domain": {"lab": 4}, "per_node": 2}
    assert "per domain: lab=4" in _cli(coordinator, "limits", "show").stdout

    # `set` replaces everything: what is left out has no limit any more
    _cli(coordinator, "limits", "set", "--per-node", "3")
    assert json.loads(_cli(coordinator, "limits", "show", "--json").stdout) == {
        "global_max": None, "per_domain": {}, "per_node": 3}
    with coordinator.api() as api:
        assert api.get("/v1/audit", kind="limits.set")[-1]["details"]["per_node"] == 3


def test_bad_input_and_roles_are_one_line_errors(coordinator: CoordinatorProcess):
    bad = _cli(coordinator, "limits", "set", "--domain", "lab")
    assert bad.exit_code == 2 and "DOMAIN=N" in bad.output

    with coordinator.api() as api:
        viewer = api.post("/v1/tokens/api", {"name": "v", "role": "operator", "domains": ["*"]})["token"]
    refused = _cli(coordinator, "limits", "set", "--global", "1", token=viewer)
    assert refused.exit_code == 1
    assert "needs role admin" in refused.output and "Traceback" not in refused.output
