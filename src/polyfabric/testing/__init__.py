"""The public test kit: real processes on loopback, fresh databases, a fake clock, polling.

Imported only by tests and benchmarks, never by a package module (a test checks that).
"""

from polyfabric.testing.clock import FakeClock
from polyfabric.testing.databases import fresh_postgres_url, postgres_available, postgres_base_url
from polyfabric.testing.processes import AgentProcess, CoordinatorProcess, free_port
from polyfabric.testing.waiting import wait_until

__all__ = [
    "AgentProcess",
    "CoordinatorProcess",
    "FakeClock",
    "free_port",
    "fresh_postgres_url",
    "postgres_available",
    "postgres_base_url",
    "wait_until",
]
