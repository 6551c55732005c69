"""Per-call costs of the configuration manager, secret sealing and result manifests (issue 6).

In-process: `Services` over a real SQLite store in a temporary directory, FakeClock. Run:
    .venv/bin/python -m benchmarks.config_secrets
Figures are recorded in docs/performance.md ("Configuration, secrets and signed results").
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from polyfabric.coordinator.bootstrap import UuidIds
from polyfabric.domain.access import Principal, Role
from polyfabric.domain.resources import Resources
from polyfabric.security.keys import b64e, generate_private_key, public_key_raw
from polyfabric.security.manifests import check_manifest, make_manifest, result_digest
from polyfabric.security.sealing import open_sealed
from polyfabric.security.signing import sign_bytes
from polyfabric.services.container import Services
from polyfabric.services.context import ServiceContext
from polyfabric.services.nodes import Registration
from polyfabric.store import migrate
from polyfabric.store.unit_of_work import SqlStore
from polyfabric.testing import FakeClock

ADMIN = Principal("token", "at-admin", "admin", Role.ADMIN, ("*",))


class _Signer:
    def __init__(self) -> None:
        self._key = generate_private_key()
        self.key_id = "c-bench"
        self.public_key_b64 = b64e(public_key_raw(self._key))

    def sign(self, data: bytes) -> bytes:
        return sign_bytes(self._key, data)


def _per_call(label: str, n: int, fn) -> None:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(n):
        fn()
    print(f"{label}: {(time.perf_counter() - start) / n * 1e3:.3f} ms per call")


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    store = SqlStore(f"sqlite:///{tmp / 'db.sqlite'}")
    migrate.upgrade(store.engine)
    services = Services.build(ServiceContext(store=store, clock=FakeClock(), ids=UuidIds(), signer=_Signer()))
    services.secrets.configure(tmp / "secrets.key")
    token = services.tokens.create_join(ADMIN, domain="test", ttl_s=None, uses=None).token
    key = generate_private_key()
    node = services.nodes.register(Registration(public_key=public_key_raw(key), name="a", labels={"zone": "a"},
                                                capacity=Resources(slots=2)), token)
    scopes = ["network", "domain:test", "selector:zone=a", f"node:{node.id}"]
    for i in range(50):
        services.config.publish(ADMIN, {"labels": {f"k{i % 5}": str(i)}, "max_concurrent_tasks": i % 4},
                                scopes[i % 4])
    reply = services.config.agent_sync(node.id, None, None)
    ack = {"version": reply["version"], "docs": reply["docs"], "applied": {}}
    services.config.agent_sync(node.id, ack, None)
    _per_call("agent_sync (50 documents, nothing changed)", 500, lambda: services.config.agent_sync(node.id, ack, None))

    services.secrets.set(ADMIN, "test", "api", b"x" * 64)
    lease = {"task_id": "t-1", "job_id": "j", "attempt": 1,
             "secret_refs": {"domain": "test", "items": {"A": ("env", "api")}}}
    _per_call("seal_leases (1 lease, 1 secret)", 300, lambda: services.secrets.seal_leases(node.id, [dict(lease)]))
    envelope = services.secrets.seal_leases(node.id, [dict(lease)])[0]["secrets"]["sealed"]
    _per_call("open_sealed (agent)", 300, lambda: open_sealed(key, envelope, f"{node.id}|t-1|1"))

    result = {"rows": list(range(100))}

    def sign() -> dict:
        return make_manifest(key, job_id="j", task_id="t", key="k", attempt=1, node_id=node.id, status="succeeded",
                             exit_code=0, inputs_sha256="x", result_sha256=result_digest(result), started_at=1.0,
                             finished_at=2.0)

    manifest = sign()
    _per_call("sign a manifest (agent)", 300, sign)
    _per_call("check a manifest (coordinator)", 300, lambda: check_manifest(
        manifest, public_key_raw(key), node_id=node.id, task_id="t", attempt=1, result=result))
    store.close()


if __name__ == "__main__":
    main()
