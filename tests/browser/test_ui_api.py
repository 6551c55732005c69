"""What the UI needs from the coordinator, without a browser: its static files served safely, and
the workflow graph endpoint (per-step counts, authorization). Runs where Chromium is missing too."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys

import httpx
import pytest

from polyfabric.api.routes.ui import STATIC_DIR, step_status
from polyfabric.domain.topology import latency_matrix
from polyfabric.domain.vivaldi import Coordinate
from polyfabric.services.telemetry_history import downsample
from polyfabric.testing import free_port, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ui_fabric(module_db_url, tmp_path_factory, fabric_factory):
    """Here on both stores (the graph's counts are SQL of their own)."""
    yield from fabric_factory(tmp_path_factory.mktemp("ui-api"), module_db_url)


@pytest.fixture(scope="module")
def node(ui_fabric):
    return ui_fabric.start_agents(["api-node-1"])[0]


def test_the_ui_is_served_under_ui_with_a_strict_content_security_policy(ui_fabric):
    first = httpx.get(ui_fabric.url + "/ui", follow_redirects=False)
    assert first.status_code == 307 and first.headers["location"] == "/ui/"
    page = httpx.get(ui_fabric.url + "/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    # Any path without a file extension is the single page (deep links); a missing file is 404.
    assert httpx.get(ui_fabric.url + "/ui/nodes/abc").text == page.text
    assert httpx.get(ui_fabric.url + "/ui/nope.js").status_code == 404
    # Nothing outside the static directory, however the path is spelled.
    for sneaky in ("/ui/%2e%2e/%2e%2e/api/app.py", "/ui/..%2f..%2fapi%2fapp.py", "/ui/%2e%2e/__init__.py"):
        reply = httpx.get(ui_fabric.url + sneaky)
        assert "create_app" not in reply.text and "polyfabric.ui" not in reply.text, sneaky


def test_every_module_the_ui_imports_is_served_as_javascript(ui_fabric):
    files = sorted(p.name for p in STATIC_DIR.glob("*.js"))
    assert "app.js" in files
    for name in files:
        reply = httpx.get(f"{ui_fabric.url}/ui/{name}")
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/javascript"), name
        for imported in re.findall(r"from '\./([\w.-]+)'", reply.text):
            assert imported in files, f"{name} imports ./{imported}, which is not shipped"
        assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write", reply.text), \
            f"{name} writes markup from strings"
    assert httpx.get(f"{ui_fabric.url}/ui/app.css").headers["content-type"].startswith("text/css")


def test_the_graph_of_a_workflow_counts_each_steps_instances_by_status(ui_fabric, node):
    doc = {"name": "graph", "tasks": {
        "a": {"command": ["true"]},
        "b": {"depends_on": ["a"], "foreach": [1, 2, 3], "command": ["sh", "-c", "exit 0"]},
        "c": {"depends_on": ["b"], "when": "false", "command": ["true"]},
    }}
    job = ui_fabric.admin.post("/v1/jobs", {"workflow": doc, "params": {}, "domain": "test"})
    wait_until(lambda: ui_fabric.admin.get(f"/v1/jobs/{job['id']}")["status"] == "succeeded", timeout=60,
               message="the graph job to finish")
    graph = ui_fabric.admin.get(f"/v1/jobs/{job['id']}/graph")
    assert graph["job"]["id"] == job["id"] and graph["job"]["status"] == "succeeded"
    assert graph["job"]["counts"] == {"succeeded": 4, "skipped": 1}
    steps = {s["name"]: s for s in graph["steps"]}
    assert [s["name"] for s in graph["steps"]] == ["a", "b", "c"]
    assert steps["a"] == {**steps["a"], "depends_on": [], "foreach": False, "items": None,
                          "counts": {"succeeded": 1}, "status": "succeeded"}
    assert steps["a"]["task_id"]
    assert steps["b"]["foreach"] and steps["b"]["items"] == 3 and steps["b"]["counts"] == {"succeeded": 3}
    assert steps["b"]["depends_on"] == ["a"] and steps["b"]["task_id"] is None
    assert steps["c"]["status"] == "skipped"


def test_the_graph_is_only_for_tokens_that_may_read_the_job(ui_fabric, node, raw):
    # Its own job: with pytest-xdist's default distribution no other test of the module need run first.
    job = ui_fabric.admin.post("/v1/jobs", {"workflow": {"name": "graph-auth", "tasks": {"a": {"command": ["true"]}}},
                                            "params": {}, "domain": "test"})
    path = f"/v1/jobs/{job['id']}/graph"
    assert raw(ui_fabric.url, "GET", path, None).status_code == 401
    other = ui_fabric.token("viewer", ["elsewhere"])
    refused = raw(ui_fabric.url, "GET", path, other)
    assert refused.status_code == 403 and "domain 'test'" in refused.json()["error"]["message"]
    assert raw(ui_fabric.url, "GET", path, ui_fabric.token("viewer", ["test"])).status_code == 200
    missing = raw(ui_fabric.url, "GET", "/v1/jobs/nope/graph", ui_fabric.token("viewer"))
    assert missing.status_code == 404 and "no job 'nope'" in missing.json()["error"]["message"]


@pytest.mark.parametrize(("counts", "group", "expected"), [
    ({"succeeded": 2, "running": 1}, "running", "running"),
    ({"succeeded": 2, "failed": 1, "running": 1}, "running", "failed"),
    ({"waiting": 3}, None, "waiting"),
    ({}, None, "waiting"),
    ({"succeeded": 3}, "succeeded", "succeeded"),
    ({"failed": 1}, "cancelled", "cancelled"),
    ({"ready": 1, "waiting": 2}, "running", "ready"),
])
def test_a_step_has_one_status_made_of_its_items(counts, group, expected):
    assert step_status(counts, group) == expected


def test_polyfabric_up_prints_the_ui_address_and_a_token_that_signs_in(tmp_path):
    port = free_port()
    data = tmp_path / "fabric"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYFABRIC_")}
    try:
        done = subprocess.run([sys.executable, "-m", "polyfabric", "up", "--detach", "--agents", "1", "--port",
                               str(port), "--data-dir", str(data)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        found = re.search(r"web UI: (http://\S+/ui/)\s+\(sign in with: (pfa_\S+)\)", done.stdout)
        assert found, done.stdout
        url, token = found.groups()
        assert url == f"http://127.0.0.1:{port}/ui/"
        assert httpx.get(url).status_code == 200
        me = httpx.get(f"http://127.0.0.1:{port}/v1/whoami", headers={"authorization": f"Bearer {token}"}).json()
        assert me["role"] == "operator" and me["domains"] == ["*"]
        assert token not in (data / "coordinator" / "admin.token").read_text()
    finally:
        pids = (data / "pids").read_text().split() if (data / "pids").exists() else []
        for pid in reversed(pids):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGTERM)


def test_a_nodes_tasks_are_the_attempts_it_holds_now(ui_fabric, node, raw, tmp_path):
    release = tmp_path / "release-held"
    hold = f"while [ ! -f '{release}' ]; do sleep 0.1; done"
    doc = {"name": "held", "tasks": {"hold": {"command": ["sh", "-c", hold]}}}
    job = ui_fabric.admin.post("/v1/jobs", {"workflow": doc, "params": {}, "domain": "test"})

    def mine() -> list[dict]:
        return [a for a in ui_fabric.admin.get(f"/v1/nodes/{node}/tasks") if a["job_id"] == job["id"]]

    held = wait_until(lambda: [a for a in mine() if a["status"] == "running"], timeout=60,
                      message="the held task to run on the node")
    assert [(a["key"], a["attempt"], a["domain"]) for a in held] == [("hold", 1, "test")]
    refused = raw(ui_fabric.url, "GET", f"/v1/nodes/{node}/tasks", ui_fabric.token("viewer", ["elsewhere"]))
    assert refused.status_code in (403, 404), refused.text
    assert raw(ui_fabric.url, "GET", "/v1/nodes/no-such-node/tasks", ui_fabric.token("viewer")).status_code == 404
    release.touch()
    wait_until(lambda: not mine(), timeout=60, message="the node to hold nothing of the job once it finished")


def test_the_label_filter_is_applied_by_the_store(ui_fabric, node):
    """Nodes filtered by labels in SQL (JSON on SQLite and PostgreSQL): each page is read alone."""
    def names(*labels: str) -> list[str]:
        return [n["name"] for n in ui_fabric.admin.get("/v1/nodes", label=list(labels))]

    assert names("rack=r0") == ["api-node-1"]
    assert names("region=local", "zone=a") == ["api-node-1"]
    assert names("rack=r9") == [] and names("nosuchkey=x") == [] and names("zone=b") == []
    assert names("rack=r0", "zone=b") == []


def test_recent_telemetry_is_one_read_for_a_page_of_nodes_in_the_callers_domains(ui_fabric, node, raw):
    """The nodes table's sparklines: up to 100 ids a read, each node's newest points averaged down to
    at most 30 rows; another domain's node (or an unknown one) is left out, as the listing leaves it."""
    def points() -> list:
        return ui_fabric.admin.get("/v1/telemetry/recent", node=[node])["nodes"].get(node, [])

    rows = wait_until(lambda: len(points()) >= 2 and points(), timeout=60, message="two telemetry points")
    answer = ui_fabric.admin.get("/v1/telemetry/recent", node=[node, "n-" + "a" * 20], since="5m")
    assert answer["fields"] == ["at", "cpu_percent", "memory_percent"] and answer["resolution_s"] == 1
    assert list(answer["nodes"]) == [node]  # the unknown id is simply not there
    assert all(len(r) == 3 and 0 <= r[2] <= 100 for r in rows) and len(answer["nodes"][node]) <= 30
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    elsewhere = raw(ui_fabric.url, "GET", "/v1/telemetry/recent", ui_fabric.token("viewer", ["elsewhere"]),
                    params={"node": node})
    assert elsewhere.status_code == 200 and elsewhere.json()["nodes"] == {}
    mine = raw(ui_fabric.url, "GET", "/v1/telemetry/recent", ui_fabric.token("viewer", ["test"]), params={"node": node})
    assert list(mine.json()["nodes"]) == [node]
    assert raw(ui_fabric.url, "GET", "/v1/telemetry/recent", None, params={"node": node}).status_code == 401
    many = raw(ui_fabric.url, "GET", "/v1/telemetry/recent", ui_fabric.token("viewer"),
               params={"node": [f"n-{i:020d}" for i in range(101)]})
    assert many.status_code == 400 and "at most 100 nodes" in many.json()["error"]["message"]
    bad = raw(ui_fabric.url, "GET", "/v1/telemetry/recent", ui_fabric.token("viewer"), params={"node": "x' or 1"})
    assert bad.status_code == 400 and "not a node id" in bad.json()["error"]["message"]


def test_downsample_averages_consecutive_points():
    points = [{"at": i, "cpu_percent": float(i), "memory_percent": None if i % 2 else 50.0} for i in range(100)]
    rows = downsample(points, ("cpu_percent", "memory_percent"), 30)
    assert len(rows) == 25 and rows[0] == [3, 1.5, 50.0] and rows[-1] == [99, 97.5, 50.0]
    assert downsample(points[:5], ("cpu_percent",), 30) == [[i, float(i)] for i in range(5)]
    assert downsample([], ("cpu_percent",), 30) == []


def test_the_latency_matrix_is_the_median_between_sampled_nodes_of_each_pair_of_groups():
    def at(x: float, zone: str, rack: str = "r") -> dict:
        return {"labels": {"region": "eu", "zone": zone, "rack": rack},
                "coords": Coordinate((x, 0.0), 0.1, 0.0, 0.0).to_dict()}

    # Zone a at 0, 0.001 and 0.002 s; zone b at 0.010 s; a node without a zone; a broken coordinate.
    rows = [at(0.0, "a"), at(0.001, "a"), at(0.002, "a"), at(0.010, "b"),
            {"labels": {"region": "eu"}, "coords": Coordinate((0.0, 0.005), 0.1).to_dict()},
            {"labels": {"zone": "a"}, "coords": {"vec": ["x"]}}]
    out = latency_matrix(rows, "zone")
    assert [g["name"] for g in out["groups"]] == ["eu/-", "eu/a", "eu/b"]
    assert [g["nodes"] for g in out["groups"]] == [1, 3, 1]
    a, b = 1, 2
    assert out["matrix"][a][a] == {"median_ms": 1.0, "min_ms": 1.0, "max_ms": 2.0, "pairs": 3}
    assert out["matrix"][a][b] == out["matrix"][b][a] == {"median_ms": 9.0, "min_ms": 8.0, "max_ms": 10.0,
                                                          "pairs": 3}
    assert out["matrix"][b][b] is None  # one node: no pair
    # One region: the ten pairs of its five nodes (the zoneless one 5 ms off the line, 11.19 ms from b).
    assert latency_matrix(rows, "region")["matrix"] == [[{"median_ms": 5.252, "min_ms": 1.0, "max_ms": 11.19,
                                                          "pairs": 10}]]
    # Bounded: 40 zones of 50 nodes give the 30 largest zones, 4 nodes of each, whatever the size.
    big = [at(random.random() / 100, f"z{z:02d}") for z in range(40) for _ in range(50 if z < 35 else 60)]
    bounded = latency_matrix(big, "zone", sample=4)
    assert len(bounded["groups"]) == 30 and bounded["groups_left_out"] == 10
    assert {g["sampled"] for g in bounded["groups"]} == {4}
    assert all(cell["pairs"] == (6 if i == j else 16) for i, line in enumerate(bounded["matrix"])
               for j, cell in enumerate(line))
    assert {"z35", "z39"} <= {g["name"].split("/")[1] for g in bounded["groups"]}  # the largest kept


def test_the_latency_endpoint_checks_its_level_and_the_callers_access(ui_fabric, node, raw):
    reply = raw(ui_fabric.url, "GET", "/v1/topology/latency", ui_fabric.token("viewer"), params={"level": "planet"})
    assert reply.status_code == 400 and "level must be one of region, zone, rack" in reply.json()["error"]["message"]
    assert raw(ui_fabric.url, "GET", "/v1/topology/latency", None).status_code == 401
    matrix = wait_until(lambda: (m := ui_fabric.admin.get("/v1/topology/latency", level="rack"))["groups"] and m,
                        timeout=60, message="the node's coordinates")
    assert [g["name"] for g in matrix["groups"]] == ["local/a/r0"] and matrix["matrix"] == [[None]]
    other = raw(ui_fabric.url, "GET", "/v1/topology/latency", ui_fabric.token("viewer", ["elsewhere"]))
    assert other.status_code == 200 and other.json()["groups"] == []
