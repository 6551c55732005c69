"""Engine setup: the durability and concurrency settings each database needs.

SQLite: WAL journal, `synchronous=FULL` (an acknowledged commit survives power loss, not only
a process kill), foreign keys on, a busy timeout, and `BEGIN IMMEDIATE` so that writers queue
for the lock at the start of a transaction instead of deadlocking on upgrade.
PostgreSQL: psycopg 3, a small pool, pre-ping so that a restarted server is survived.
Both: JSON columns are written and read with orjson (the standard library's json where orjson
refuses a value: integers past 64 bits), several times faster than `json` on the rows every
placement and report writes (events, policy decisions, audit details).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from polyfabric.domain.errors import ValidationError

__all__ = ["create_engine", "is_sqlite", "json_dumps", "json_loads", "normalize_url", "session_name"]


def json_dumps(value: Any) -> str:
    """A JSON column's text: compact, UTF-8, keys that are not strings written as strings (as
    `json.dumps` does)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # what orjson refuses and json takes (integers past 64 bits)
        return json.dumps(value)


def json_loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # what orjson refuses and json takes (integers past 64 bits, NaN)
        return json.loads(text)


def normalize_url(url: str) -> str:
    """Accept the forms users write and pick the driver we ship."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite:///", "postgresql+psycopg://")):
        return url
    raise ValidationError(
        f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
    )


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def session_name(owner: str) -> str:
    """The PostgreSQL `application_name` of every session a coordinator opens: it names the
    coordinator (its key id), so that a successor can end the sessions of one whose lease ran out
    (services/leadership.py)."""
    return f"polyfabric {owner}"[:63]


def create_engine(url: str, *, pool_size: int = 8, owner: str | None = None) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
            json_serializer=json_dumps,
            json_deserializer=json_loads,
        )
        _configure_sqlite(engine)
        return engine
    connect_args = {"application_name": session_name(owner)} if owner else {}
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                            connect_args=connect_args, json_serializer=json_dumps, json_deserializer=json_loads)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see `_on_begin`).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers take no lock; writers take the write lock up front.
        if connection.get_execution_options().get("polyfabric_readonly"):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
