"""Databases for tests: a fresh PostgreSQL database per caller, so parallel tests never share."""

from __future__ import annotations

import os
import uuid

__all__ = ["drop_postgres_database", "fresh_postgres_url", "postgres_available", "postgres_base_url"]


def postgres_base_url() -> str | None:
    return os.environ.get("POLYFABRIC_TEST_PG") or None


def postgres_available() -> bool:
    url = postgres_base_url()
    if not url:
        return False
    import sqlalchemy as sa

    from polyfabric.store.engine import normalize_url

    try:
        engine = sa.create_engine(normalize_url(url))
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
        return True
    except Exception:
        return False


def fresh_postgres_url(prefix: str = "pft") -> str:
    """Create an empty database next to POLYFABRIC_TEST_PG's and return its URL."""
    import sqlalchemy as sa

    from polyfabric.store.engine import normalize_url

    base = postgres_base_url()
    if not base:
        raise RuntimeError("POLYFABRIC_TEST_PG is not set")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(normalize_url(base), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return base.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(url: str) -> None:
    import sqlalchemy as sa

    from polyfabric.store.engine import normalize_url

    base = postgres_base_url()
    if not base:
        return
    name = url.rsplit("/", 1)[1]
    engine = sa.create_engine(normalize_url(base), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()
