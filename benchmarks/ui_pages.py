"""ui_pages: how fast the web UI's heaviest pages are, in a real browser against a real coordinator.

A real `polyfabric server` (SQLite in a temporary directory) with `--nodes` simulated nodes
registered through real signed `POST /v1/agent/register` requests (the `FastSigner` of
benchmarks._hbload, several threads; they stay Pending: no heartbeats, which do not change what the
page reads), and one real agent that runs a workflow of `--tasks` function tasks (one foreach
task of `nap` items) plus three gate tasks that each wait for a file the benchmark creates.
Debian's Chromium (/usr/bin/chromium, headless, via playwright) then measures:

    nodes full load        a reload of the page (modules, sign-in from the tab's token) until 50 rows show
    nodes first render     navigation to #/nodes until the first page of rows is in the DOM
    nodes filter           a server-side label filter (rack=r7 of 100 racks) until its rows show
    nodes next page        the Next button until page 2's rows show
    workflow first render  navigation to #/jobs/ID (10,000 tasks, running) until the DAG and the
                           first page of tasks are drawn
    update latency         from a gate task's `succeeded` event (its `at`, the coordinator's clock)
                           to the browser drawing that step green (a MutationObserver's Date.now(),
                           same machine, same clock), while the 10,000 items keep the events flowing
    event visible in API   from the same `at` to the event reaching a Python client long-polling the
                           same events endpoint: the coordinator's share of the update latency

Each timing is the median of `--repeat` tries; the JSON line keeps every try.

    python -m benchmarks.ui_pages                       # 10,000 nodes, a 10,000-task workflow
    python -m benchmarks.ui_pages --nodes 1000 --tasks 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson

from benchmarks._common import describe_machine, emit_json, log, machine, print_table, repo_root
from benchmarks._hbload import REGISTER_PATH, FastSigner

CHROMIUM = "/usr/bin/chromium"


def register_nodes(url: str, join_token: str, count: int, threads: int = 6) -> float:
    """Register `count` simulated nodes (labels rack=r0..r99, zone=a/b); seconds it took."""
    from polyfabric.domain.ids import node_id_from_public_key
    from polyfabric.security.keys import b64e, generate_private_key, public_key_raw

    local = threading.local()
    capacity = {"cpu_millis": 4000, "memory_bytes": 8 << 30, "disk_bytes": 100 << 30, "gpus": 0, "slots": 4}

    def one(i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=60)
        key = generate_private_key()
        node_id = node_id_from_public_key(public_key_raw(key))
        body = orjson.dumps({"join_token": join_token, "public_key": b64e(public_key_raw(key)), "node": {
            "name": f"sim-{i:05d}", "labels": {"rack": f"r{i % 100}", "zone": "ab"[i % 2], "bench": "ui"},
            "capacity": capacity, "agent_version": "bench"}})
        digest, sig_input, signature = FastSigner(key, node_id).headers("POST", url + REGISTER_PATH, body, time.time())
        reply = client.post(REGISTER_PATH, content=body, headers={
            "content-type": "application/json", "Content-Digest": digest, "Signature-Input": sig_input,
            "Signature": signature})
        if reply.status_code not in (201, 409):
            raise RuntimeError(f"register sim-{i}: {reply.status_code} {reply.text[:200]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for n, _ in enumerate(pool.map(one, range(count)), 1):
            if n % 2000 == 0:
                log(f"  {n}/{count} nodes registered")
    return time.perf_counter() - started


def workflow(tasks: int, gates: Path) -> dict[str, Any]:
    wait = "while [ ! -f '{}' ]; do sleep 0.05; done"
    doc: dict[str, Any] = {"name": "ui-bench", "tasks": {
        "fan": {"function": "benchmarks.workloads:nap", "foreach": list(range(tasks)),
                "args": {"seconds": 0.02, "i": "{{ item }}"}},
    }}
    for g in range(3):
        # Before the fan-out's items (priority), so they run while the items keep the events flowing.
        doc["tasks"][f"gate{g}"] = {"command": ["sh", "-c", wait.format(gates / f"gate{g}")], "priority": 100}
    doc["tasks"]["join"] = {"depends_on": ["fan", "gate0", "gate1", "gate2"], "command": ["true"]}
    return doc


_OBSERVE = """() => {
  window.__seen = {};
  const note = (step) => {
    const key = `${step.dataset.step}:${step.dataset.status}`;
    if (!(key in window.__seen)) window.__seen[key] = Date.now();
  };
  new MutationObserver((changes) => {
    for (const c of changes) {
      if (c.type === 'attributes' && c.target.dataset && c.target.dataset.step) note(c.target);
      for (const el of c.addedNodes) {
        if (el instanceof Element) el.querySelectorAll('[data-step]').forEach(note);
      }
    }
  }).observe(document.getElementById('main'), {childList: true, subtree: true, attributes: true,
                                                attributeFilter: ['data-status']});
}"""


def ms(f: Any) -> float:
    started = time.perf_counter()
    f()
    return (time.perf_counter() - started) * 1000


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from polyfabric.client import ApiClient
    from polyfabric.client.errors import ApiError
    from polyfabric.testing import AgentProcess, CoordinatorProcess, wait_until

    root = Path(tempfile.mkdtemp(prefix="pf-ui-bench-"))
    coordinator = CoordinatorProcess(root / "coordinator", heartbeat_interval=2.0, unreachable_after=5.0,
                                     down_after=8.0)
    coordinator.start()
    agent = None
    out: dict[str, Any] = {"nodes": args.nodes, "tasks": args.tasks, "repeat": args.repeat}
    try:
        api = ApiClient(coordinator.url, coordinator.admin_token)
        join = api.post("/v1/tokens/join", {"domain": "bench", "uses": args.nodes + 1})["token"]
        log(f"registering {args.nodes} simulated nodes")
        out["register_s"] = round(register_nodes(coordinator.url, join, args.nodes), 1)
        agent = AgentProcess(coordinator.url, root / "agents" / "a1", name="bench-agent", join_token=join,
                             labels="rack=agent",
                             extra_args=["--slots", str(args.slots), "--pythonpath", str(repo_root()),
                                         "--stop-grace", "0", "--kill-grace", "1"])
        agent.start()
        wait_until(lambda: api.get("/v1/nodes/bench-agent")["state"] == "active", timeout=120,
                   message="the agent to be active")
        token = api.post("/v1/tokens/api", {"name": "ui-bench", "role": "admin", "domains": ["*"]})["token"]

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.set_default_timeout(120_000)
            page.goto(coordinator.url + "/ui/")
            page.get_by_label("API token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            page.locator("tr[data-node]").first.wait_for()

            first, filtered, nexts, loads = [], [], [], []
            for _ in range(args.repeat):
                loads.append(ms(lambda: (page.reload(), page.locator("tr[data-node]").nth(49).wait_for())))
                page.evaluate("() => { window.location.hash = '#/audit'; }")
                page.get_by_role("heading", name="Audit").wait_for()
                first.append(ms(lambda: (page.evaluate("() => { window.location.hash = '#/nodes'; }"),
                                         page.locator("tr[data-node]").nth(49).wait_for())))
                last = page.locator("tr[data-node]").nth(49).get_attribute("data-node")
                nexts.append(ms(lambda: (page.get_by_role("button", name="Next").click(),
                                         page.get_by_role("table", name="Nodes, page 2").wait_for())))
                following = page.locator("tr[data-node]").first.get_attribute("data-node")
                assert following > last, f"page 2 starts at {following}, page 1 ended at {last}"
                page.get_by_label("Label").fill("rack=r7")
                filtered.append(ms(lambda: (page.get_by_role("button", name="Filter").click(),
                                            page.locator('tr[data-node="sim-00007"]').wait_for())))
                page.get_by_label("Label").fill("")
                page.get_by_role("button", name="Filter").click()
                page.get_by_role("table", name="Nodes, page 1").wait_for()
            out["nodes_full_load_ms"] = loads
            out["nodes_first_render_ms"] = first
            out["nodes_next_page_ms"] = nexts
            out["nodes_filter_ms"] = filtered
            log(f"nodes page: {({k: out[k] for k in out if k.startswith('nodes_')})}")

            gates = root / "gates"
            gates.mkdir()
            log(f"submitting a workflow of {args.tasks} tasks")
            job = api.post("/v1/jobs", {"workflow": workflow(args.tasks, gates), "params": {}, "domain": "bench"})
            wait_until(lambda: api.get(f"/v1/jobs/{job['id']}/graph")["job"]["total"] >= args.tasks,
                       timeout=300, interval=0.5, message="the fan-out's items to exist")
            renders = []
            for _ in range(args.repeat):
                page.evaluate("() => { window.location.hash = '#/jobs'; }")
                page.get_by_role("heading", name="Workflows").wait_for()
                renders.append(ms(lambda: (page.evaluate(f"() => {{ window.location.hash = '#/jobs/{job['id']}'; }}"),
                                           page.locator('svg.dag [data-step="fan"]').wait_for(),
                                           page.locator("tr[data-key]").first.wait_for())))
            out["workflow_first_render_ms"] = renders
            log(f"workflow page first render: {renders}")
            page.evaluate(_OBSERVE)
            # The same events, followed from Python too: when each gate's `succeeded` becomes visible
            # through the API, to tell the coordinator's share of the latency from the page's.
            seen_api: dict[str, float] = {}
            stop_follow = threading.Event()

            def follow(after: int) -> None:
                with ApiClient(coordinator.url, token) as client:
                    while not stop_follow.is_set():
                        answer = client.get(f"/v1/jobs/{job['id']}/events", after=after, wait_s=5)
                        now = time.time() * 1000
                        for e in answer["events"]:
                            if e["status"] == "succeeded" and e["key"] and e["key"].startswith("gate"):
                                seen_api.setdefault(e["key"], now)
                        after = answer["next"]

            follower = threading.Thread(target=follow, args=(api.get(f"/v1/jobs/{job['id']}/graph")["events_next"],),
                                        daemon=True)
            follower.start()
            latencies, api_visible = [], []
            for g in range(3):
                name = f"gate{g}"
                page.locator(f'svg.dag [data-step="{name}"][data-status="running"]').wait_for(timeout=600_000)
                (gates / name).touch()
                page.wait_for_function(f"() => window.__seen['{name}:succeeded']", timeout=120_000)
                seen_ms = page.evaluate(f"() => window.__seen['{name}:succeeded']")
                task_id = next(s["task_id"] for s in api.get(f"/v1/jobs/{job['id']}/graph")["steps"]
                               if s["name"] == name)
                events, after = [], 0
                while True:
                    answer = api.get(f"/v1/jobs/{job['id']}/events", after=after)
                    events += [e for e in answer["events"] if e["task_id"] == task_id and e["status"] == "succeeded"]
                    if not answer["events"]:
                        break
                    after = answer["next"]
                latencies.append(round(seen_ms - events[0]["at"] * 1000, 1))
                wait_until(lambda n=name: n in seen_api, timeout=60, message=f"{name} seen through the API")
                api_visible.append(round(seen_api[name] - events[0]["at"] * 1000, 1))
                counts = api.get(f"/v1/jobs/{job['id']}/graph")["job"]["counts"]
                log(f"  {name}: drawn green {latencies[-1]} ms after its event, visible through the API after "
                    f"{api_visible[-1]} ms (job counts now {counts})")
            out["update_latency_ms"] = latencies
            out["event_visible_in_api_ms"] = api_visible
            stop_follow.set()
            out["fan_still_running"] = api.get(f"/v1/jobs/{job['id']}/graph")["job"]["counts"].get("succeeded", 0) \
                < args.tasks
            graph_ms = []
            for _ in range(5):
                t0 = time.perf_counter()
                api.get(f"/v1/jobs/{job['id']}/graph")
                graph_ms.append((time.perf_counter() - t0) * 1000)
            out["graph_endpoint_ms"] = [round(x, 1) for x in graph_ms]
            with contextlib.suppress(ApiError):  # already finished
                api.post(f"/v1/jobs/{job['id']}/cancel", {"reason": "benchmark done"})
            browser.close()
        api.close()
    finally:
        if agent is not None:
            agent.stop()
        coordinator.stop()
        shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000, help="simulated nodes to register (default 10,000)")
    parser.add_argument("--tasks", type=int, default=10_000, help="items of the workflow's fan-out (default 10,000)")
    parser.add_argument("--slots", type=int, default=4, help="slots of the one real agent")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the processes
    info = machine()
    log(describe_machine(info))
    out = run(args)
    med = {k: round(statistics.median(v), 1) for k, v in out.items() if isinstance(v, list) and v}
    rows = [{"measure": k, "median_ms": v, "tries": ", ".join(f"{x:.0f}" for x in out[k])} for k, v in med.items()]
    print_table(rows, [("measure", "measure"), ("median_ms", "median ms"), ("tries", "tries (ms)")],
                title=f"ui_pages: {args.nodes} nodes, a workflow of {args.tasks} tasks")
    emit_json("ui_pages", {**out, "median": med, "machine": info})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
