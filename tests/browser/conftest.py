"""Browser fixtures: Debian's Chromium driven headless by playwright, against a real coordinator.

Chromium is never downloaded: the tests launch /usr/bin/chromium (`apt-get install chromium`).
Where it (or playwright) is missing the browser tests skip with the reason; with CI=true they fail
instead, since CI installs it. One coordinator (SQLite) and two agents serve the whole module;
every page a test opens is checked for console errors and for content past the viewport's right
edge, and screenshotted at 1280x800 into the artifact dir (POLYFABRIC_UI_ARTIFACTS, else a tmp dir).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from polyfabric.client import ApiClient
from polyfabric.testing import AgentProcess, CoordinatorProcess

CHROMIUM = os.environ.get("POLYFABRIC_CHROMIUM", "/usr/bin/chromium")
AGENT_CAPACITY = ["--cpu", "2", "--memory", "4Gi", "--disk", "20Gi", "--gpus", "0", "--slots", "6"]
VIEWPORT = {"width": 1280, "height": 800}

# Everything on the page that sticks out past the viewport's right edge, outside a scrolling region.
OVERFLOW_JS = """() => {
  const width = document.documentElement.clientWidth;
  const out = [];
  const scroll = document.documentElement.scrollWidth;
  if (scroll > width + 1) out.push(`page scrollWidth ${scroll} > ${width}`);
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('.scroll') && !el.classList.contains('scroll')) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    const style = getComputedStyle(el);
    if (style.position === 'absolute' && r.right < 0) continue;  // visually hidden on purpose
    const name = `${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}.${el.className}`;
    if (r.right > width + 1 || r.left < -1) out.push(`${name} [${Math.round(r.left)}, ${Math.round(r.right)}]`);
  }
  return out.slice(0, 10);
}"""


def browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the python package playwright is not installed (pip install -e '.[dev]')"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    return None


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    reason = browser_missing()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests are required when CI=true: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("POLYFABRIC_UI_ARTIFACTS")
    path = Path(where) if where else tmp_path_factory.mktemp("ui-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


class UiFabric:
    """A coordinator with agents, tokens for each role, and pages signed in with one of them."""

    def __init__(self, coordinator: CoordinatorProcess, root: Path) -> None:
        self.coordinator = coordinator
        self.root = root
        self.url = coordinator.url
        self.admin = ApiClient(self.url, coordinator.admin_token)
        self.agents: list[AgentProcess] = []

    def token(self, role: str, domains: list[str] | None = None) -> str:
        reply = self.admin.post("/v1/tokens/api", {"name": f"ui-{role}-{len(self.agents)}-{os.urandom(3).hex()}",
                                                   "role": role, "domains": domains or ["*"]})
        return str(reply["token"])

    def start_agents(self, names: list[str], domain: str = "test") -> list[str]:
        join = self.coordinator.join_token(domain, uses=len(names))
        for i, name in enumerate(names):
            agent = AgentProcess(self.url, self.root / "agents" / name, name=name, join_token=join,
                                 labels=f"region=local,zone={'ab'[i % 2]},rack=r{i}",
                                 extra_args=[*AGENT_CAPACITY, "--kill-grace", "2", "--stop-grace", "0"])
            agent.start()
            self.agents.append(agent)

        def active() -> bool:
            states = {n["name"]: n["state"] for n in self.admin.get("/v1/nodes")}
            return all(states.get(name) == "active" for name in names)

        deadline = time.monotonic() + 60
        while not active():  # a poll with a deadline that fails at once if an agent died
            dead = [a for a in self.agents if not a.alive()]
            if dead:
                raise AssertionError(f"agent {dead[0].name} exited:\n{dead[0].log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"agents {names} not active within 60 s")
            time.sleep(0.2)
        return [self.admin.get(f"/v1/nodes/{name}")["id"] for name in names]

    def register_nodes(self, names: list[str], domain: str = "test") -> None:
        """Nodes without agents: each registers once with a fresh key (a real signed request) and stays Pending."""
        import json

        from polyfabric.agent.identity import NodeIdentity
        from polyfabric.security import http_signatures
        from polyfabric.security.keys import b64e, generate_private_key

        join = self.coordinator.join_token(domain, uses=len(names))
        capacity = {"cpu_millis": 1000, "memory_bytes": 1 << 30, "disk_bytes": 1 << 30, "gpus": 0, "slots": 1}
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for name in names:
                identity = NodeIdentity.from_private_key(generate_private_key())
                body = json.dumps({"join_token": join, "public_key": b64e(identity.public_key_raw), "node": {
                    "name": name, "labels": {"kind": "paging"}, "capacity": capacity,
                    "agent_version": "test"}}).encode()
                headers = {"content-type": "application/json"}
                headers.update(http_signatures.sign_request(
                    method="POST", url=self.url + "/v1/agent/register", headers=headers, body=body,
                    private_key=identity.private_key, key_id=identity.node_id, now=time.time()))
                reply = client.post("/v1/agent/register", content=body, headers=headers)
                assert reply.status_code == 201, reply.text

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.admin.close()


def start_fabric(root: Path, db_url: str | None = None) -> Iterator[UiFabric]:
    # Telemetry history every second (not 10): the nodes table's sparklines have points within seconds.
    coordinator = CoordinatorProcess(root / "coordinator", db_url, heartbeat_interval=0.5, unreachable_after=3,
                                     down_after=6, extra_args=["--telemetry-interval", "1"])
    coordinator.start()
    fab = UiFabric(coordinator, root)
    try:
        yield fab
    finally:
        fab.close()
        coordinator.stop()


@pytest.fixture(scope="session")
def fabric_factory() -> Any:
    """`start_fabric(root, db_url)` for modules that want their own store (a generator: `yield from`)."""
    return start_fabric


@pytest.fixture(scope="module")
def ui_fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiFabric]:
    """SQLite: what the browser sees does not depend on the store (test_ui_api.py runs both)."""
    yield from start_fabric(tmp_path_factory.mktemp("ui-fabric"))


class Page:
    """A playwright page that records console errors and failed page loads."""

    def __init__(self, page: Any, base: str, artifacts: Path) -> None:
        self.page = page
        self.base = base
        self.artifacts = artifacts
        self.errors: list[str] = []
        page.on("console", lambda msg: self.errors.append(f"console.{msg.type}: {msg.text}")
                if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def sign_in(self, token: str) -> None:
        self.page.goto(self.base + "/ui/")
        self.page.get_by_label("API token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.locator("#nav").wait_for(state="visible")

    def go(self, fragment: str) -> None:
        self.page.evaluate("(f) => { window.location.hash = f; }", fragment)

    def check_layout(self, name: str) -> None:
        """Screenshot the page and fail on console errors or content past the viewport's edge."""
        self.page.screenshot(path=str(self.artifacts / f"{name}.png"), full_page=False)
        overflow = self.page.evaluate(OVERFLOW_JS)
        assert overflow == [], f"{name}: content overflows the viewport horizontally: {overflow}"
        assert self.errors == [], f"{name}: console errors: {self.errors}"


@pytest.fixture
def open_page(chromium: Any, ui_fabric: UiFabric, artifacts: Path) -> Iterator[Any]:
    """`open_page(token, viewport=...)`: a fresh browser context (its own sessionStorage), signed in."""
    contexts: list[Any] = []

    def make(token: str | None = None, viewport: dict[str, int] | None = None) -> Page:
        context = chromium.new_context(viewport=viewport or VIEWPORT)
        context.set_default_timeout(30_000)
        contexts.append(context)
        page = Page(context.new_page(), ui_fabric.url, artifacts)
        if token is not None:
            page.sign_in(token)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def raw() -> Any:
    """`raw(url, method, path, token, ...)`: a request with no error mapping (token None: no header)."""

    def request(url: str, method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, url + path, headers=headers, timeout=30, **kwargs)

    return request
