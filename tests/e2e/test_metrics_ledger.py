"""Metrics, telemetry history and the contribution ledger, end to end (issue 7).

One real coordinator per backend (SQLite, PostgreSQL) with a 1 s telemetry history interval, and
one real agent of domain `lab-b` (with `--metrics-port`) that runs the jobs of domain `test`: so
`test` consumes and `lab-b` contributes. Tasks burn a known amount of CPU (about 1 s) or sleep,
and the ledger's measured figures must fall in sane bands around it; the per-domain sums of
`polyfabric usage` must equal the sums of the per-attempt rows. /metrics is scraped and parsed
with prometheus_client's own text parser before and after a job, and specific series must move.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from polyfabric.testing import CoordinatorProcess, free_port, wait_until

from .conftest import DOWN, E2E_DIR, HEARTBEAT, UNREACHABLE, Fabric

pytestmark = pytest.mark.e2e

PROVIDER = "lab-b"
CONSUMER = "test"
BURN_S = 1.0


@pytest.fixture(scope="module")
def fabric(module_backend: str, module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    """This module's coordinator: the shared fixture's settings plus a 1 s telemetry history interval,
    and fair share on (its balance refresh rides the same controller as the history)."""
    root = tmp_path_factory.mktemp(f"metrics-{module_backend}")
    coordinator = CoordinatorProcess(root / "coordinator", module_db_url, heartbeat_interval=HEARTBEAT,
                                     unreachable_after=UNREACHABLE, down_after=DOWN,
                                     extra_args=["--telemetry-interval", "1", "--fair-share"])
    coordinator.start()
    fab = Fabric(coordinator, root, module_backend)
    try:
        yield fab
    finally:
        fab.close()
        coordinator.stop()


@pytest.fixture(scope="module")
def provider(fabric: Fabric) -> dict:
    """One agent of domain lab-b (2 slots), serving its own metrics; {"node": id, "metrics": url}."""
    port = free_port()
    agent = fabric.agent("lab-b-1", join_token=fabric.join_token(PROVIDER)["token"],
                         extra_args=["--slots", "2", "--kill-grace", "2", "--stop-grace", "0",
                                     "--pythonpath", str(E2E_DIR), "--metrics-port", str(port)])
    node = fabric.wait_state(agent, "active", timeout=30)
    fabric.join_token(CONSUMER)  # the consumer domain exists (jobs are submitted to it)
    return {"node": node["id"], "metrics": f"http://127.0.0.1:{port}/metrics", "agent": agent}


def scrape(url: str, token: str | None) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics page, parsed by prometheus_client: (name, labels) -> value."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def total(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 when there is none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def py(code: str) -> list[str]:
    return ["python3", "-c", f"import time\n{code}"]


BURN = py(f"t = time.process_time()\nwhile time.process_time() - t < {BURN_S}: pass")

JOB = {
    "name": "usage",
    "tasks": {
        "burn-command": {"command": BURN},
        "burn-function": {"function": "metrics_functions:burn", "args": {"seconds": BURN_S}},
        "sleep": {"command": ["sleep", "1"]},
    },
}


@pytest.fixture(scope="module")
def ran(fabric: Fabric, provider: dict, workflows) -> dict:
    """Scrape, run the job (all of it on the lab-b node), scrape again."""
    before = scrape(fabric.url + "/metrics", fabric.admin_token)
    job_id = workflows.submit(JOB)
    job = workflows.wait(job_id, timeout=120)
    assert job["status"] == "succeeded", (job, workflows.tasks(job_id), provider["agent"].log()[-3000:])
    after = wait_until(lambda: _settled(fabric, before), timeout=30, message="metrics to show the job")
    return {"job": job_id, "before": before, "after": after}


def _settled(fabric: Fabric, before: dict) -> dict | None:
    after = scrape(fabric.url + "/metrics", fabric.admin_token)
    moved = total(after, "polyfabric_task_outcomes_total", status="succeeded") - total(
        before, "polyfabric_task_outcomes_total", status="succeeded")
    return after if moved >= 3 else None


# -- /metrics ---------------------------------------------------------------------------------------


def test_metrics_need_a_viewer_token_for_every_domain(fabric: Fabric):
    assert fabric.http("GET", "/metrics", token=None).status_code == 401
    narrow = fabric.api_token("viewer", [CONSUMER])["token"]
    refused = fabric.http("GET", "/metrics", token=narrow)
    assert refused.status_code == 403
    assert "metrics.read in domain '*'" in refused.json()["error"]["message"]
    wide = fabric.api_token("viewer", ["*"])["token"]
    assert "polyfabric_queue_depth" in scrape(fabric.url + "/metrics", wide).__repr__()


def test_metrics_move_when_a_job_runs(fabric: Fabric, provider: dict, ran: dict):
    before, after = ran["before"], ran["after"]
    node = provider["node"]
    assert total(after, "polyfabric_heartbeats_received_total") > total(before, "polyfabric_heartbeats_received_total")
    assert total(after, "polyfabric_task_outcomes_total", status="succeeded") >= \
        total(before, "polyfabric_task_outcomes_total", status="succeeded") + 3
    assert total(after, "polyfabric_scheduling_pass_seconds_count") > \
        total(before, "polyfabric_scheduling_pass_seconds_count")
    assert total(after, "polyfabric_scheduling_placements_total") >= \
        total(before, "polyfabric_scheduling_placements_total") + 3
    assert total(after, "polyfabric_store_commit_seconds_count") > \
        total(before, "polyfabric_store_commit_seconds_count")
    assert total(after, "polyfabric_runtime_group_commit_seconds_count") > \
        total(before, "polyfabric_runtime_group_commit_seconds_count")
    assert total(after, "polyfabric_ledger_rows_total") >= total(before, "polyfabric_ledger_rows_total") + 3
    # API latency by route template (never the id itself), method and status.
    assert total(after, "polyfabric_api_request_seconds_count", route="/v1/jobs", method="POST", status="201") >= 1
    assert total(after, "polyfabric_api_request_seconds_count", route="/v1/agent/report", method="POST") >= 1
    assert not any(n == "polyfabric_api_request_seconds_count" and ("route", f"/v1/jobs/{ran['job']}") in ls
                   for n, ls in after)
    # Live state, read at scrape time: the queue is empty again, the node's telemetry is there.
    assert total(after, "polyfabric_queue_depth") == 0
    assert ("polyfabric_node_cpu_percent", frozenset({("node", node), ("domain", PROVIDER)})) in after
    assert total(after, "polyfabric_node_memory_used_bytes", node=node) > 0
    assert total(after, "polyfabric_nodes", state="active") >= 1
    assert total(after, "polyfabric_coordinator_leader") == 1


def test_the_agent_serves_its_own_metrics_when_asked(provider: dict, ran: dict):
    samples = wait_until(lambda: (s := scrape(provider["metrics"], None))
                         and total(s, "polyfabric_agent_heartbeat_seconds_count") > 0 and s,
                         timeout=20, message="agent metrics")
    assert total(samples, "polyfabric_agent_slots") == 2
    assert total(samples, "polyfabric_agent_tasks_running") == 0
    assert total(samples, "polyfabric_agent_slots_free") == 2
    assert total(samples, "polyfabric_agent_node_state", state="active") == 1


# -- the ledger ------------------------------------------------------------------------------------


def test_the_ledger_holds_what_each_attempt_measurably_used(fabric: Fabric, provider: dict, ran: dict):
    rows = {r["task_key"]: r for r in fabric.admin.get("/v1/usage/attempts", job=ran["job"])}
    assert set(rows) == {"burn-command", "burn-function", "sleep"}
    for row in rows.values():
        assert row["consumer_domain"] == CONSUMER and row["provider_domain"] == PROVIDER
        assert row["node_id"] == provider["node"] and row["outcome"] == "succeeded"
        assert row["gpu_s"] == 0.0  # no GPUs allocated
        assert row["memory_byte_s"] > 0 and row["max_rss_bytes"] > 0
    command, function, sleep = rows["burn-command"], rows["burn-function"], rows["sleep"]
    # ~1 s of CPU, measured by the kernel (wait4) / the worker's CPU time: a sane band on a loaded box.
    assert 0.8 * BURN_S <= command["cpu_s"] <= 3 * BURN_S, command
    assert command["wall_s"] >= command["cpu_s"] * 0.9 and command["method"].startswith("wait4")
    assert 0.8 * BURN_S <= function["cpu_s"] <= 3 * BURN_S, function
    assert function["method"].startswith("worker-cpu-delta")
    assert sleep["cpu_s"] < 0.5 and 0.9 <= sleep["wall_s"] <= 30, sleep
    # Memory-seconds are average RSS x wall time: at most the peak RSS x wall time.
    for row in rows.values():
        assert row["memory_byte_s"] <= row["max_rss_bytes"] * row["wall_s"] * 1.01 + 1, row


def test_usage_per_domain_equals_the_sum_of_the_attempts(fabric: Fabric, ran: dict):
    rows = fabric.admin.get("/v1/usage/attempts", limit=10000)
    assert rows, "no ledger rows"
    sums: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for row in rows:
        for side, key in (("consumed", "consumer_domain"), ("contributed", "provider_domain")):
            bucket = sums[(row[key], side)]
            bucket["attempts"] += 1
            for figure in ("cpu_s", "memory_byte_s", "gpu_s", "wall_s"):
                bucket[figure] += row[figure]
    report = fabric.admin.get("/v1/usage")
    by_domain = {d["domain"]: d for d in report["domains"]}
    assert {CONSUMER, PROVIDER} <= set(by_domain)
    for (domain, side), expected in sums.items():
        got = by_domain[domain][side]
        assert got["attempts"] == expected["attempts"]
        for figure in ("cpu_s", "memory_byte_s", "gpu_s", "wall_s"):
            assert got[figure] == pytest.approx(expected[figure], rel=1e-9, abs=1e-6), (domain, side, figure)
    consumer, contributor = by_domain[CONSUMER], by_domain[PROVIDER]
    assert consumer["contributed"]["attempts"] == 0 and contributor["consumed"]["attempts"] == 0
    assert consumer["consumed"]["cpu_s"] >= 2 * 0.8 * BURN_S
    assert contributor["balance_cpu_s"] == pytest.approx(contributor["contributed"]["cpu_s"])
    assert consumer["balance_cpu_s"] == pytest.approx(-consumer["consumed"]["cpu_s"])


def test_usage_cli_json_and_domain_scoping(fabric: Fabric, ran: dict):
    report = fabric.cli_json("usage")
    assert report == fabric.admin.get("/v1/usage")
    only = fabric.cli_json("usage", "--domain", PROVIDER, "--since", "1h")
    assert [d["domain"] for d in only["domains"]] == [PROVIDER] and only["since"] is not None
    attempts = fabric.cli_json("usage", "--attempts", "--job", ran["job"])
    assert {r["task_key"] for r in attempts} == {"burn-command", "burn-function", "sleep"}
    table = fabric.cli("usage")
    assert table.returncode == 0 and PROVIDER in table.stdout and "BALANCE" in table.stdout
    # A token of one domain sees that domain only, and is refused another one.
    narrow = fabric.api_token("viewer", [CONSUMER])["token"]
    mine = fabric.cli("usage", "--json", token=narrow)
    assert mine.returncode == 0, mine.stderr
    assert [d["domain"] for d in json.loads(mine.stdout)["domains"]] == [CONSUMER]
    refused = fabric.cli("usage", "--domain", PROVIDER, token=narrow)
    assert refused.returncode == 1 and "usage.read in domain 'lab-b' is not allowed" in refused.stderr
    bad = fabric.cli("usage", "--since", "yesterday")
    assert bad.returncode == 1 and "since 'yesterday'" in bad.stderr and "Traceback" not in bad.stderr


# -- telemetry history -----------------------------------------------------------------------------


def test_node_telemetry_history_is_kept_and_shown(fabric: Fabric, provider: dict):
    node = provider["node"]

    def enough() -> dict | None:
        data = fabric.admin.get(f"/v1/nodes/{node}/metrics", since="10m")
        return data if len(data["points"]) >= 3 else None

    data = wait_until(enough, timeout=30, message="three telemetry history points")
    assert data["node_id"] == node and data["resolution_s"] == 1
    assert [t["resolution_s"] for t in data["retention"]] == [1, 60, 600]
    points = data["points"]
    assert [p["at"] for p in points] == sorted({p["at"] for p in points})  # one point per bucket, in order
    assert all(p["memory_used_bytes"] and p["memory_used_bytes"] > 0 for p in points)
    assert all(p["cpu_percent"] is not None and 0 <= p["cpu_percent"] <= 100 * 64 for p in points)
    # The CLI shows the same history (by node name too).
    shown = fabric.cli_json("node", "metrics", "lab-b-1", "--since", "10m")
    assert shown["node_id"] == node and len(shown["points"]) >= 3
    text = fabric.cli("node", "metrics", node, "--since", "10m")
    assert text.returncode == 0 and "CPU%" in text.stdout
    # Bad input is a 4xx naming the problem; another domain's viewer may not read it.
    assert fabric.http("GET", f"/v1/nodes/{node}/metrics", params={"since": "soon"}).status_code == 400
    assert fabric.http("GET", f"/v1/nodes/{node}/metrics", params={"resolution": 7}).status_code == 400
    assert fabric.http("GET", "/v1/nodes/no-such-node/metrics").status_code == 404
    narrow = fabric.api_token("viewer", [CONSUMER])["token"]
    assert fabric.http("GET", f"/v1/nodes/{node}/metrics", token=narrow).status_code == 403


def test_history_rows_are_in_the_database_in_batches(fabric: Fabric, provider: dict):
    """Points are stored rows (not memory), one per node and bucket: no row per heartbeat."""
    import sqlalchemy as sa

    with fabric.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT at FROM node_metrics WHERE node_id = :n AND resolution = 1"),
                            {"n": provider["node"]}).scalars().all()
    assert rows and len(rows) == len(set(rows))


# -- parked tasks ------------------------------------------------------------------------------------


def test_a_task_no_node_may_take_is_counted_unschedulable_until_a_node_that_fits_joins(fabric: Fabric,
                                                                                      provider: dict, workflows):
    """A task whose every node is ruled out for good (here: a label no node has) is parked by the
    coordinator and counted by the gauge; a node joining with the label takes it at once."""
    job_id = workflows.submit({"name": "needs-gpu", "tasks": {"a": {"command": ["true"],
                                                                   "constraints": {"gpu": "yes"}}}})
    wait_until(lambda: total(scrape(fabric.url + "/metrics", fabric.admin_token),
                             "polyfabric_queue_unschedulable") == 1, timeout=30, message="the task counted parked")
    assert "missing label gpu=yes" in (workflows.task(job_id, "a")["pending_reason"] or "")
    gpu = fabric.agent("lab-b-gpu", join_token=fabric.join_token(PROVIDER)["token"], labels="gpu=yes",
                       extra_args=["--slots", "1"])
    node = fabric.wait_state(gpu, "active", timeout=30)
    assert workflows.wait(job_id, timeout=60)["status"] == "succeeded"
    assert workflows.task(job_id, "a")["node_id"] == node["id"]
    assert total(scrape(fabric.url + "/metrics", fabric.admin_token), "polyfabric_queue_unschedulable") == 0
