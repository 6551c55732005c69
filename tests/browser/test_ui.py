"""The web UI in a real browser (Debian's Chromium, headless) against a real coordinator and agents.

Each test signs in with a token through the sign-in form, as a person would, and checks what the
page shows and does: nodes listed, a live workflow turning green without a reload, a task's logs,
cordoning a node, and what a viewer may not do. Every page is screenshotted at 1280x800 and checked
for horizontal overflow and console errors (conftest.Page.check_layout).
"""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qs, urlparse

import pytest

from polyfabric.client.errors import ApiError
from polyfabric.testing import wait_until

pytestmark = pytest.mark.e2e

NODES = ["ui-node-1", "ui-node-2"]


@pytest.fixture(scope="module")
def node_ids(ui_fabric):
    return ui_fabric.start_agents(NODES)


@pytest.fixture(scope="module")
def admin_token(ui_fabric):
    return ui_fabric.token("admin")


def live_workflow(release: str) -> dict:
    """A gate that runs until the test creates `release`, a fan-out of 6 items after it, then a join."""
    wait = f"echo gate-started; while [ ! -f '{release}' ]; do sleep 0.1; done; echo hello-from-gate"
    return {"name": "ui-live", "tasks": {
        "gate": {"command": ["sh", "-c", wait]},
        "fan": {"depends_on": ["gate"], "foreach": [0, 1, 2, 3, 4, 5], "command": ["sh", "-c", "echo item {{ item }}"]},
        "join": {"depends_on": ["fan"], "command": ["sh", "-c", "echo all done"]},
    }}


def submit_live(fabric, release) -> dict:
    """Submit `live_workflow` as the admin, in domain test; the job."""
    return fabric.admin.post("/v1/jobs", {"workflow": live_workflow(str(release)), "params": {}, "domain": "test"})


def open_running_job(open_page, token: str, job: dict):
    """Sign in, open the job's page and wait until its gate is drawn running; the page."""
    page = open_page(token)
    page.go(f"#/jobs/{job['id']}")
    page.page.locator('svg.dag [data-step="gate"][data-status="running"]').wait_for(timeout=60_000)
    return page


def step_status(page, name: str) -> str | None:
    return page.page.locator(f'svg.dag [data-step="{name}"]').get_attribute("data-status")


def test_sign_in_and_see_the_nodes(open_page, admin_token, node_ids, ui_fabric):
    page = open_page()
    page.page.goto(ui_fabric.url + "/ui/")
    page.check_layout("signin")
    page.sign_in(admin_token)
    rows = page.page.locator("tr[data-node]")
    rows.first.wait_for()
    names = rows.evaluate_all("rows => rows.map(r => r.dataset.node)")
    assert set(NODES) <= set(names)
    row = page.page.locator(f'tr[data-node="{NODES[0]}"]')
    assert row.get_attribute("data-state") == "active"
    assert "region=local" in row.inner_text() and "test" in row.inner_text()
    page.check_layout("nodes")
    # The token is in this tab's sessionStorage, never in the address.
    assert admin_token not in page.page.url
    assert page.page.evaluate("() => sessionStorage.getItem('polyfabric.token')") == admin_token

    # Filters are applied by the server: state=cordoned lists none of the (active) test nodes.
    page.page.get_by_label("State").select_option("cordoned")
    page.page.get_by_role("button", name="Filter").click()
    page.page.get_by_text("No nodes match.").wait_for()
    page.page.get_by_label("State").select_option("")
    page.page.get_by_label("Label").fill("rack=r1")
    page.page.get_by_role("button", name="Filter").click()
    wait_until(lambda: page.page.locator("tr[data-node]").evaluate_all("r => r.map(x => x.dataset.node)") == [NODES[1]],
               timeout=20, message="the label filter to leave only ui-node-2")


def test_the_nodes_table_draws_recent_cpu_and_memory_with_one_read_for_the_page(open_page, admin_token, node_ids,
                                                                                 ui_fabric):
    """Sparklines from the telemetry history in every row, read with one request for the whole page."""
    def recorded() -> bool:
        recent = ui_fabric.admin.get("/v1/telemetry/recent", node=node_ids)["nodes"]
        return all(len(recent.get(n, [])) >= 3 for n in node_ids)

    wait_until(recorded, timeout=60, message="three telemetry points for each agent's node")
    page = open_page()
    reads: list[str] = []
    page.page.on("request", lambda r: reads.append(r.url) if "/v1/telemetry/recent" in r.url else None)
    page.sign_in(admin_token)
    for name in NODES:
        for metric in ("cpu", "memory"):
            page.page.locator(f'tr[data-node="{name}"] svg.spark[data-metric="{metric}"]').wait_for()
    row = page.page.locator(f'tr[data-node="{NODES[0]}"]')
    cpu = row.locator('svg[data-metric="cpu"]')
    assert int(cpu.get_attribute("data-points")) >= 3
    assert len(cpu.locator("polyline").get_attribute("points").split()) == int(cpu.get_attribute("data-points"))
    assert re.fullmatch(r"CPU, last \d+ min: now \d+%, peak \d+%", cpu.get_attribute("aria-label"))
    assert re.fullmatch(r"Memory, last \d+ min: now \d+%, peak \d+%",
                        row.locator('svg[data-metric="memory"]').get_attribute("aria-label"))
    # One read for the page, naming exactly the nodes the page shows (never every node).
    shown = page.page.locator("tr[data-node] th a").evaluate_all(
        "links => links.map(a => decodeURIComponent(a.getAttribute('href').split('/').pop()))")
    assert len(reads) == 1, reads
    assert parse_qs(urlparse(reads[0]).query)["node"] == shown
    page.check_layout("nodes-sparklines")


def test_a_running_workflow_turns_green_without_a_reload_and_shows_a_tasks_logs(open_page, admin_token, node_ids,
                                                                               ui_fabric):
    release = ui_fabric.root / "release-live"
    job = submit_live(ui_fabric, release)
    wait_until(lambda: ui_fabric.admin.get(f"/v1/jobs/{job['id']}/graph")["steps"][0]["status"] == "running",
               timeout=60, message="the gate to run")

    page = open_page(admin_token)
    page.go("#/jobs")
    page.page.locator(f'tr[data-job="{job["id"]}"]').wait_for()
    page.check_layout("workflows")
    page.page.locator(f'tr[data-job="{job["id"]}"] a').click()
    page.page.locator('svg.dag [data-step="gate"]').wait_for()
    assert step_status(page, "gate") == "running"
    assert step_status(page, "fan") == "waiting"
    page.page.evaluate("() => { window.__noReload = 'still here'; }")
    page.check_layout("workflow-running")

    # Meanwhile, in another tab: the gate's node lists it among the tasks it runs.
    gate_id = ui_fabric.admin.get(f"/v1/jobs/{job['id']}/graph")["steps"][0]["task_id"]
    gate = ui_fabric.admin.get(f"/v1/tasks/{gate_id}")
    other = open_page(admin_token)
    other.go(f"#/nodes/{gate['node_id']}")
    other.page.locator("#node-tasks tr", has_text="gate").wait_for()
    assert "running" in other.page.locator("#node-tasks tr", has_text="gate").inner_text()

    release.touch()
    for name in ("gate", "fan", "join"):
        page.page.wait_for_function(
            "(n) => document.querySelector(`svg.dag [data-step=\"${n}\"]`)?.dataset.status === 'succeeded'",
            arg=name, timeout=60_000)
    assert page.page.evaluate("() => window.__noReload") == "still here", "the page was reloaded"
    page.page.wait_for_function("() => document.getElementById('job-status')?.dataset.status === 'succeeded'")
    assert "×6" in page.page.locator('svg.dag [data-step="fan"]').text_content()
    page.check_layout("workflow-done")

    # The fan-out is one box; choosing it (from the keyboard) lists its six items.
    page.page.locator('svg.dag [data-step="fan"]').focus()
    page.page.keyboard.press("Enter")
    page.page.get_by_role("heading", name="Tasks of fan (6 items)").wait_for()
    keys = page.page.locator("tr[data-key]").evaluate_all("rows => rows.map(r => r.dataset.key)")
    assert keys == [f"fan[{i}]" for i in range(6)]

    # The gate's own task: its attempts and its logs.
    page.page.locator('svg.dag [data-step="gate"]').click()
    page.page.get_by_role("heading", name="Task gate").wait_for()
    page.page.wait_for_function("() => document.getElementById('task-log')?.textContent.includes('hello-from-gate')")
    assert "gate-started" in page.page.locator("#task-log").inner_text()
    page.page.get_by_text("Logs complete (task succeeded).").wait_for()
    page.check_layout("task-logs")


def test_logs_stream_while_a_task_runs(open_page, admin_token, node_ids, ui_fabric):
    release = ui_fabric.root / "release-logs"
    job = submit_live(ui_fabric, release)
    page = open_running_job(open_page, admin_token, job)
    page.page.locator('svg.dag [data-step="gate"]').click()
    page.page.wait_for_function("() => document.getElementById('task-log')?.textContent.includes('gate-started')",
                                timeout=60_000)
    assert "hello-from-gate" not in page.page.locator("#task-log").inner_text()
    release.touch()
    page.page.wait_for_function("() => document.getElementById('task-log')?.textContent.includes('hello-from-gate')",
                                timeout=60_000)


def test_cordon_a_node_and_see_its_state_change(open_page, admin_token, node_ids, ui_fabric):
    page = open_page(admin_token)
    page.go(f"#/nodes/{node_ids[0]}")
    page.page.get_by_role("heading", name=f"Node {NODES[0]}").wait_for()
    assert page.page.locator("#node-state").get_attribute("data-state") == "active"
    page.check_layout("node")
    page.page.get_by_label("Reason").fill("browser test")
    page.page.get_by_role("button", name="Cordon").click()
    page.page.locator('#node-state[data-state="cordoned"]').wait_for()
    assert ui_fabric.admin.get(f"/v1/nodes/{node_ids[0]}")["state"] == "cordoned"
    # The audit trail on the same page shows the transition, with the reason given.
    page.page.locator("section", has=page.page.get_by_role("heading", name="History")).get_by_text(
        "cordoned").first.wait_for()
    page.go("#/nodes")
    page.page.locator(f'tr[data-node="{NODES[0]}"][data-state="cordoned"]').wait_for()
    page.page.get_by_role("link", name=NODES[0]).click()
    page.page.get_by_role("button", name="Uncordon").click()
    page.page.locator('#node-state[data-state="active"]').wait_for()
    assert ui_fabric.admin.get(f"/v1/nodes/{node_ids[0]}")["state"] == "active"


def test_a_viewer_sees_no_cordon_button_and_a_forced_request_gets_403(open_page, node_ids, ui_fabric):
    viewer = ui_fabric.token("viewer")
    page = open_page(viewer)
    page.page.locator("tr[data-node]").first.wait_for()
    page.go(f"#/nodes/{node_ids[1]}")
    page.page.get_by_role("heading", name=f"Node {NODES[1]}").wait_for()
    page.page.get_by_role("heading", name="Audit trail").wait_for()
    assert page.page.locator("[data-action]").count() == 0
    assert page.page.get_by_role("button", name="Cordon").count() == 0
    page.check_layout("node-viewer")
    # The same request the operator's button sends, forced from the viewer's page, is refused.
    status = page.page.evaluate("""async (id) => {
        const r = await fetch(`/v1/nodes/${id}/cordon`, {method: 'POST', headers: {
          authorization: `Bearer ${sessionStorage.getItem('polyfabric.token')}`, 'content-type': 'application/json'},
          body: JSON.stringify({reason: 'forced'})});
        return [r.status, (await r.json()).error.message];
    }""", node_ids[1])
    assert status[0] == 403 and "node.manage needs role operator" in status[1]
    assert ui_fabric.admin.get(f"/v1/nodes/{node_ids[1]}")["state"] == "active"
    # Nor may a viewer act on workflows: no intervention buttons on a workflow's page.
    jobs = ui_fabric.admin.get("/v1/jobs", limit=1)
    if jobs:
        page.go(f"#/jobs/{jobs[0]['id']}")
        page.page.locator("svg.dag").wait_for()
        assert page.page.locator("[data-action]").count() == 0


def test_audit_page_filters_and_verifies_the_chain(open_page, admin_token, node_ids, ui_fabric):
    page = open_page(admin_token)
    page.go("#/audit")
    page.page.get_by_role("heading", name="Audit").wait_for()
    page.page.get_by_label("Action").fill("node.transition")
    page.page.get_by_role("button", name="Filter").click()
    # The unfiltered table is already there: wait for the filtered one to replace it (no reload).
    page.page.wait_for_function("() => { const cells = [...document.querySelectorAll('tbody tr td:nth-child(3)')];"
                                " return cells.length > 0 && cells.every(td => td.textContent.trim() === "
                                "'node.transition'); }")
    actions = page.page.locator("tbody tr td:nth-child(3)").all_inner_texts()
    assert actions and set(actions) == {"node.transition"}
    page.page.get_by_role("button", name="Verify the chain").click()
    report = page.page.locator("#verify-report p[data-ok]")
    report.wait_for()
    assert report.get_attribute("data-ok") == "true", report.inner_text()
    assert "The chain is intact" in report.inner_text()
    page.check_layout("audit")


@pytest.fixture(scope="module")
def features(ui_fabric, node_ids):
    """Something on every feature page: a policy, a configuration version, a secret and a schedule,
    in a domain of their own (no node, no job: nothing else in the module is affected), and a job
    run in domain test (a row in the usage report)."""
    admin = ui_fabric.admin
    job = admin.post("/v1/jobs", {"workflow": {"name": "ui-usage", "tasks": {"t": {"command": ["true"]}}},
                                  "params": {}, "domain": "test"})
    wait_until(lambda: admin.get(f"/v1/jobs/{job['id']}")["status"] == "succeeded", timeout=60,
               message="the usage job to finish")
    try:
        admin.post("/v1/domains", {"name": "uifeat"})
    except ApiError as exc:
        assert exc.status == 409
    admin.post("/v1/policies", {"policy": {"name": "ui-dry-admission", "kind": "admission", "scope": "domain:uifeat",
                                           "mode": "dry-run", "allow": "true", "reason": "shown by the UI"}})
    config = admin.post("/v1/config", {"document": {"labels": {"ui": "shown"}}, "scope": "domain:uifeat",
                                       "comment": "ui-config-comment"})
    admin.request("PUT", "/v1/secrets/ui-secret-name", json={
        "domain": "uifeat", "value_b64": base64.b64encode(b"never-shown-value").decode()})
    admin.post("/v1/schedules", {"name": "ui-yearly", "domain": "uifeat", "cron": "0 0 1 1 *",
                                 "workflow": {"name": "yearly", "tasks": {"t": {"command": ["true"]}}}})
    return {"config_version": config["version"]}


def usage_figures(page) -> dict[str, list]:
    """Per domain in the chart: [contributed, consumed] as data, and the two figures it prints."""
    return dict(page.page.locator("#feature-usage svg.usage g[data-domain]").evaluate_all(
        "gs => gs.map(g => [g.dataset.domain, [Number(g.dataset.contributed), Number(g.dataset.consumed),"
        " g.querySelector('.contributed-figure').textContent, g.querySelector('.consumed-figure').textContent]])"))


def printed(text: str, value: float) -> bool:
    """A figure as the chart prints it: CPU-seconds, three decimals under one second, else one."""
    number, unit = text.split()
    return unit == "s" and abs(float(number) - value) <= (0.0005 if value < 1 else 0.05) + 1e-9


# What each page must show (texts the API's answer puts there); none may say "not available".
FEATURES = {
    "topology": ["local", "2 nodes have measured network coordinates", "Latency"],
    "usage": ["test", "Contributed CPU s"],
    "policies": ["ui-dry-admission", "dry-run", "domain:uifeat"],
    "config": ["ui-config-comment", "domain:uifeat"],
    "secrets": ["ui-secret-name", "uifeat"],
    "schedules": ["ui-yearly", "0 0 1 1 *"],
}


@pytest.mark.parametrize("name", list(FEATURES))
def test_feature_pages_show_what_the_coordinator_serves(open_page, admin_token, node_ids, features, ui_fabric,
                                                         name):
    page = open_page(admin_token)
    page.go(f"#/{name}")
    body = page.page.locator(f"#feature-{name}")
    body.locator("*").first.wait_for()
    page.page.wait_for_function(f"() => !document.querySelector('#feature-{name}').textContent.includes('Loading')")
    assert body.locator("[data-unavailable]").count() == 0, body.inner_text()
    assert body.locator(".error").count() == 0, body.inner_text()
    text = body.inner_text()
    for expected in FEATURES[name]:
        assert expected in text, f"{name}: {expected!r} not in {text!r}"
    if name == "secrets":
        assert "never-shown-value" not in text and base64.b64encode(b"never-shown-value").decode() not in text
    if name == "config":
        assert str(features["config_version"]) in text
    if name == "usage":
        # The chart shows each domain's contributed and consumed CPU-seconds, as the API reports them
        # (re-read until both agree: an attempt finishing between the two reads moves them).
        def agree() -> bool:
            page.go("#/nodes")
            page.page.locator("tr[data-node]").first.wait_for()
            page.go("#/usage")
            page.page.locator("#feature-usage svg.usage").wait_for()
            report = {r["domain"]: [r["contributed"]["cpu_s"], r["consumed"]["cpu_s"]]
                      for r in ui_fabric.admin.get("/v1/usage")["domains"]}
            shown = usage_figures(page)
            return "test" in report and {d: v[:2] for d, v in shown.items()} == report
        wait_until(agree, timeout=30, message="the usage chart to show the API's figures")
        label = page.page.locator("#feature-usage svg.usage").get_attribute("aria-label")
        for domain, (contributed, consumed, given, used) in usage_figures(page).items():
            assert printed(given, contributed) and printed(used, consumed), (domain, given, used)
            assert f"{domain}: contributed {given}, consumed {used} of CPU" in label
    page.check_layout(f"feature-{name}")


def test_topology_shows_the_tree_and_the_latency_between_zones_and_racks(open_page, admin_token, node_ids, ui_fabric):
    def measured() -> dict | None:
        matrix = ui_fabric.admin.get("/v1/topology/latency", level="zone")
        names = [g["name"] for g in matrix["groups"]]
        return matrix if names == ["local/a", "local/b"] and matrix["matrix"][0][1] else None

    wait_until(measured, timeout=60, message="both agents' coordinates in the zone latency matrix")
    page = open_page(admin_token)
    page.go("#/topology")
    body = page.page.locator("#feature-topology")
    body.locator("summary", has_text="local").first.wait_for()
    # Regions and zones are open; a rack opens on demand and lists its nodes with their state.
    body.locator("summary", has_text="r0").first.click()
    body.get_by_role("link", name=NODES[0]).wait_for()

    # The latency between the zones: a symmetric matrix of the median estimated round trip.
    matrix = body.locator("#latency-matrix table.matrix")
    matrix.locator("caption", has_text="Median estimated round trip between zones").wait_for()
    assert matrix.locator("tbody th").all_inner_texts() == ["local/a", "local/b"]
    across = matrix.locator('td[data-from="local/a"][data-to="local/b"]')
    back = matrix.locator('td[data-from="local/b"][data-to="local/a"]')
    assert across.inner_text() == back.inner_text()
    shown_ms = float(across.inner_text())
    assert shown_ms > 0 and float(across.get_attribute("data-ms")) == pytest.approx(shown_ms, abs=0.051)
    # One node a zone: no pair inside a zone to measure.
    assert matrix.locator('td[data-from="local/a"][data-to="local/a"]').inner_text() == "—"
    # The same estimate the coordinator gives for the two nodes (their coordinates move a little).
    direct = ui_fabric.admin.get("/v1/topology/rtt", **{"from": NODES[0], "to": NODES[1]})["estimated_rtt_ms"]
    assert direct / 3 <= shown_ms <= direct * 3, (shown_ms, direct)
    page.check_layout("topology-open")

    # Between racks instead, chosen from the keyboard-reachable select.
    body.get_by_label("Between", exact=True).select_option("rack")
    matrix.locator("caption", has_text="between racks").wait_for()
    assert matrix.locator("tbody th").all_inner_texts() == ["local/a/r0", "local/b/r1"]
    assert float(matrix.locator('td[data-from="local/a/r0"][data-to="local/b/r1"]').inner_text()) > 0

    # Each node's round trip to the coordinator, on demand.
    body.get_by_role("button", name="Show round trips").click()
    body.locator("table caption", has_text="Round trips to the coordinator").wait_for()
    assert set(NODES) <= set(body.locator("tbody th").all_inner_texts())
    page.check_layout("topology-latency")


def test_phone_width_and_keyboard_navigation(open_page, admin_token, node_ids):
    page = open_page(admin_token, viewport={"width": 390, "height": 844})
    page.page.locator("tr[data-node]").first.wait_for()
    page.check_layout("nodes-phone")
    # The skip link is the first stop, and the navigation is reachable by Tab alone.
    first = page.page.evaluate("() => document.querySelector('a[href], button, input, select, "
                               "[tabindex]:not([tabindex=\\'-1\\'])').textContent")
    assert first == "Skip to content"
    page.page.get_by_role("link", name="Nodes", exact=True).focus()
    page.page.keyboard.press("Tab")
    page.page.keyboard.press("Tab")
    assert page.page.evaluate("() => document.activeElement.getAttribute('href')") == "#/topology"
    page.page.keyboard.press("Enter")
    page.page.get_by_role("heading", name="Topology").wait_for()
    # Focus moves to the new page's heading (so a screen reader announces it).
    page.page.wait_for_function("() => document.activeElement.tagName === 'H1'")
    assert page.page.evaluate("() => document.activeElement.textContent") == "Topology"


def test_an_operator_pauses_resumes_and_cancels_a_running_workflow(open_page, admin_token, node_ids, ui_fabric):
    release = ui_fabric.root / "release-actions"
    job = submit_live(ui_fabric, release)
    page = open_running_job(open_page, admin_token, job)
    page.page.get_by_label("Reason").fill("browser test")

    page.page.get_by_role("button", name="Pause").click()
    page.page.locator('#job-status[data-status="paused"]').wait_for()
    assert ui_fabric.admin.get(f"/v1/jobs/{job['id']}")["status"] == "paused"
    page.page.get_by_text("pause: done").wait_for()
    page.check_layout("workflow-paused")

    page.page.get_by_role("button", name="Resume").click()
    page.page.locator('#job-status[data-status="running"]').wait_for()
    assert ui_fabric.admin.get(f"/v1/jobs/{job['id']}")["status"] == "running"

    page.page.get_by_role("button", name="Cancel").click()
    page.page.locator('#job-status[data-status="cancelled"]').wait_for(timeout=60_000)
    assert ui_fabric.admin.get(f"/v1/jobs/{job['id']}")["status"] == "cancelled"
    # The running gate was stopped, and the steps after it never ran.
    page.page.locator('svg.dag [data-step="gate"][data-status="cancelled"]').wait_for()
    assert step_status(page, "join") in ("cancelled", "skipped")
    release.touch()
    page.check_layout("workflow-cancelled")


def test_an_operator_drains_a_busy_node_and_sees_it_draining(open_page, admin_token, node_ids, ui_fabric):
    """A node running a task drains (it takes nothing new, waits for the task); Resume brings it back."""
    release = ui_fabric.root / "release-drain"
    hold = f"echo held; while [ ! -f '{release}' ]; do sleep 0.1; done"
    doc = {"name": "ui-drain", "tasks": {"hold": {"command": ["sh", "-c", hold],
                                                  "requires": f'node.name == "{NODES[1]}"'}}}
    job = ui_fabric.admin.post("/v1/jobs", {"workflow": doc, "params": {}, "domain": "test"})
    wait_until(lambda: ui_fabric.admin.get(f"/v1/jobs/{job['id']}/graph")["steps"][0]["status"] == "running",
               timeout=60, message="the held task to run")
    try:
        page = open_page(admin_token)
        page.go(f"#/nodes/{node_ids[1]}")
        page.page.get_by_role("heading", name=f"Node {NODES[1]}").wait_for()
        page.page.locator("#node-tasks tr", has_text="hold").wait_for()
        page.page.get_by_label("Reason").fill("browser drain")
        page.page.get_by_role("button", name="Drain").click()
        page.page.locator('#node-state[data-state="draining"]').wait_for()
        page.page.get_by_text("drain: the node is now draining").wait_for()
        assert ui_fabric.admin.get(f"/v1/nodes/{node_ids[1]}")["state"] == "draining"
        # Only what applies to a draining node is offered: Resume, not Cordon or Drain again.
        assert page.page.locator("[data-action]").evaluate_all("bs => bs.map(b => b.dataset.action)") == ["resume"]
        page.page.locator("section", has=page.page.get_by_role("heading", name="History")).get_by_text(
            "draining").first.wait_for()
        page.check_layout("node-draining")
        # It stays draining while its task runs; the nodes table says so too.
        page.go("#/nodes")
        page.page.locator(f'tr[data-node="{NODES[1]}"][data-state="draining"]').wait_for()
        page.page.get_by_role("link", name=NODES[1]).click()
        page.page.get_by_role("button", name="Resume").click()
        page.page.locator('#node-state[data-state="active"]').wait_for()
        assert ui_fabric.admin.get(f"/v1/nodes/{node_ids[1]}")["state"] == "active"
    finally:
        release.touch()
    wait_until(lambda: ui_fabric.admin.get(f"/v1/jobs/{job['id']}")["status"] == "succeeded", timeout=60,
               message="the held task to finish on the resumed node")


def test_nodes_are_read_a_page_at_a_time(open_page, admin_token, node_ids, ui_fabric):
    """Last in the module: it adds 60 nodes without agents (page-00 ... page-59, domain paging), which
    sort before ui-node-*."""
    names = [f"page-{i:02d}" for i in range(60)]
    ui_fabric.register_nodes(names, domain="paging")
    page = open_page(admin_token)
    rows = page.page.locator("tr[data-node]")
    page.page.get_by_role("table", name="Nodes, page 1").wait_for()
    first = rows.evaluate_all("rows => rows.map(r => r.dataset.node)")
    assert first == names[:50]
    page.page.get_by_role("button", name="Next").click()
    page.page.get_by_role("table", name="Nodes, page 2").wait_for()
    second = rows.evaluate_all("rows => rows.map(r => r.dataset.node)")
    assert second[:10] == names[50:] and set(NODES) <= set(second)
    assert page.page.get_by_role("button", name="Next").is_disabled()
    page.page.get_by_role("button", name="Previous").click()
    page.page.get_by_role("table", name="Nodes, page 1").wait_for()
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.node)") == first
    # A server-side filter: domain "test" leaves only the two agents' nodes, on one page.
    page.page.get_by_label("Domain").fill("test")
    page.page.get_by_role("button", name="Filter").click()
    wait_until(lambda: rows.evaluate_all("rows => rows.map(r => r.dataset.node)") == NODES, timeout=20,
               message="the domain filter to leave the two test nodes")
    page.check_layout("nodes-paged")
