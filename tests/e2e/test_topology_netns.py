"""Topology with each agent in its own network namespace: latency measured across real interfaces.

Like tests/e2e/test_topology.py, but every agent runs in a network namespace of its own (`ip netns`),
joined to the host by a veth pair (host 10.231.N.1, agent 10.231.N.2). The kernel here has no netem,
so a delaying TCP proxy on the host sits on every link: each agent reaches the coordinator through a
proxy on its own host address (5 ms each way), and each agent's echo endpoint is advertised as a
proxy on the host that delays by the caller's namespace address:

    a (zone z1) ── 1 ms ── b (zone z1),   a ── 25 ms ── c (zone z2),   b ── 25 ms ── c

Checked: the coordinates measured across the namespaces order the pairs, and
`locality: near(tasks.src)` puts the sink on b, next to src's node a. Skipped, with the reason,
where namespaces cannot be made (not root, no `ip`, or a kernel or container that forbids them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from polyfabric.testing import free_port, wait_until
from polyfabric.testing.delay_proxy import ProxyLoop

pytestmark = pytest.mark.e2e

COORD_DELAY = 0.005
NEAR_DELAY = 0.001
FAR_DELAY = 0.025
INDEX = {"a": 1, "b": 2, "c": 3}
LINKS = {frozenset("ab"): NEAR_DELAY, frozenset("ac"): FAR_DELAY, frozenset("bc"): FAR_DELAY}
SPEC = {"a": ("1", "z1"), "b": ("4", "z1"), "c": ("2", "z2")}  # binpack alone would put the sink on c


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _host(name: str) -> str:
    return f"10.231.{INDEX[name]}.1"


def _inside(name: str) -> str:
    return f"10.231.{INDEX[name]}.2"


@pytest.fixture(scope="module")
def namespaces(fabric: Any) -> Iterator[dict[str, str]]:
    if fabric.backend != "sqlite":
        pytest.skip("the network path is the same on every store; test_topology.py covers PostgreSQL")
    if sys.platform != "linux" or shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("network namespaces need Linux, iproute2 and root")
    tag = f"pf{os.getpid() % 100000}"
    made: dict[str, str] = {}
    try:
        for name in INDEX:
            ns, host_if, ns_if = f"{tag}-{name}", f"{tag}{name}h", f"{tag}{name}n"
            _ip("netns", "add", ns)
            made[name] = ns
            _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _ip("link", "set", ns_if, "netns", ns)
            _ip("addr", "add", f"{_host(name)}/24", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("netns", "exec", ns, "ip", "addr", "add", f"{_inside(name)}/24", "dev", ns_if)
            _ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
            _ip("netns", "exec", ns, "ip", "route", "add", "default", "via", _host(name))
    except subprocess.CalledProcessError as exc:
        for ns in made.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"cannot make network namespaces here: {exc.stderr.strip() or exc}")
    try:
        yield made
    finally:
        for ns in made.values():  # deleting a namespace deletes its veth pair with it
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def net(fabric: Any, workflows: Any, namespaces: dict[str, str]) -> Iterator[dict[str, Any]]:
    proxies = ProxyLoop()
    join = fabric.join_token("test")["token"]
    coord_port = int(fabric.url.rsplit(":", 1)[1])
    agents, names = {}, {}
    try:
        for name in INDEX:
            echo_port = free_port()
            delays = {_inside(o): LINKS[frozenset(name + o)] for o in INDEX if o != name}
            echo_proxy = proxies.proxy((_inside(name), echo_port), delays, listen_host=_host(name),
                                       default_s=FAR_DELAY)
            coord_proxy = proxies.proxy(("127.0.0.1", coord_port), COORD_DELAY, listen_host=_host(name))
            cpu, zone = SPEC[name]
            node_name = fabric.unique(f"netns-{name}")
            labels = f"region=r9,zone={zone},rack=n-{name},host=ns{name}"
            agent = fabric.agent(node_name, join_token=join, labels=labels,
                                 extra_args=["--cpu", cpu, "--slots", "4", "--kill-grace", "2", "--stop-grace", "0",
                                             "--echo-listen", f"{_inside(name)}:{echo_port}",
                                             "--echo-advertise", echo_proxy.address, "--probe-interval", "0.2"],
                                 start=False)
            agent.args[agent.args.index("--coordinator") + 1] = f"http://{coord_proxy.address}"
            agent.netns = namespaces[name]
            agent.start()
            agents[name], names[name] = agent, node_name
        ids = {name: fabric.wait_state(agent, "active", timeout=60)["id"] for name, agent in agents.items()}
        workflows.workers.extend(agents.values())
        yield {"fabric": fabric, "workflows": workflows, "agents": agents, "names": names, "ids": ids}
    finally:
        for agent in agents.values():
            agent.stop()
        proxies.close()


def _estimates(net: dict[str, Any]) -> dict[str, float] | None:
    out = {}
    for pair in ("ab", "ac", "bc"):
        reply = net["fabric"].http("GET", "/v1/topology/rtt",
                                   params={"from": net["names"][pair[0]], "to": net["names"][pair[1]]})
        if reply.status_code != 200 or reply.json()["estimated_rtt_s"] is None:
            return None
        out[pair] = float(reply.json()["estimated_rtt_s"])
    # Coordinates start at the origin and move a little with every probe: the order of the pairs
    # appears long before the distances reach the links' delays (on a loaded machine the far
    # pairs were seen at 10 ms, already three times the near one). Wait for both.
    ordered = out["ab"] * 3 < min(out["ac"], out["bc"])
    return out if ordered and out["ab"] < 0.03 and min(out["ac"], out["bc"]) > FAR_DELAY else None


def test_agents_in_their_own_namespaces_measure_the_links_and_near_follows_them(net: dict[str, Any]) -> None:
    fabric, workflows = net["fabric"], net["workflows"]
    # The agents really are elsewhere: each reached the coordinator from its namespace's address.
    for name, agent in net["agents"].items():
        inside = subprocess.run(["ip", "netns", "exec", agent.netns, "ip", "-4", "addr", "show"],
                                capture_output=True, text=True, check=True).stdout
        assert _inside(name) in inside and "127.0.0.1" in inside and _host(name) not in inside
    est = wait_until(lambda: _estimates(net), timeout=90, interval=1.0,
                     message="coordinates measured across namespaces to order a-b before a-c and b-c, "
                             "with a-c and b-c past the far links' delay")
    assert est["ab"] < 0.03 and 0.025 < est["ac"] < 0.2 and 0.025 < est["bc"] < 0.2, est
    coords = {r["name"]: r for r in fabric.http("GET", "/v1/topology/coordinates").json()}
    for name in INDEX:
        row = coords[net["names"][name]]
        assert row["rtt_to_coordinator_s"] is not None and row["rtt_to_coordinator_s"] >= 2 * COORD_DELAY
        assert row["echo"].startswith(_host(name) + ":")
    doc = {"name": "near-netns", "tasks": {
        "src": {"command": ["true"], "constraints": {"host": "nsa"}, "resources": {"cpu": "500m"}},
        "sink": {"command": ["true"], "depends_on": ["src"], "locality": "near(tasks.src)", "resources": {"cpu": 2}},
    }}
    job_id = workflows.submit(doc)
    assert workflows.wait(job_id, timeout=90)["status"] == "succeeded"
    tasks = workflows.tasks(job_id)
    assert tasks["src"]["node_id"] == net["ids"]["a"]
    assert tasks["sink"]["node_id"] == net["ids"]["b"], "near(tasks.src) should pick b, the node close to a"
