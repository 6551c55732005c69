"""Batch writes straight through the driver (executemany), for the hot paths.

A scheduling pass or an agent report writes thousands of rows, and SQLAlchemy's per-row parameter
processing would cost more than the database itself. Statements are plain SQL text in the
driver's parameter style; JSON columns are encoded here, with orjson (`engine.json_dumps`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from polyfabric.store.engine import json_dumps

__all__ = ["insert_many", "quote", "raw_many"]

_JSON_COLUMNS: dict[str, frozenset[str]] = {}


def _json_columns(table: sa.Table) -> frozenset[str]:
    found = _JSON_COLUMNS.get(table.name)
    if found is None:
        found = _JSON_COLUMNS[table.name] = frozenset(c.name for c in table.c if isinstance(c.type, sa.JSON))
    return found


def quote(column: str) -> str:
    """Quote a column name (`key` and `offset` are reserved words somewhere)."""
    return f'"{column}"'


def raw_many(conn: Connection, sql_of: Callable[[Callable[[str], str]], str], table: sa.Table,
             rows: list[dict[str, Any]]) -> None:
    """executemany of `sql_of(param)`, where `param(name)` renders one named parameter in the
    driver's style; every row carries the same keys, JSON columns as Python values."""
    if not rows:
        return
    pg = conn.dialect.name == "postgresql"
    json_cols = _json_columns(table)

    def param(name: str) -> str:
        if pg:
            return f"%({name})s::json" if name in json_cols else f"%({name})s"
        return f":{name}"

    if json_cols:
        rows = [{k: (json_dumps(v) if k in json_cols and v is not None else v) for k, v in row.items()}
                for row in rows]
    conn.exec_driver_sql(sql_of(param), rows)  # type: ignore[arg-type]


def insert_many(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], *, skip_existing: bool = False) -> None:
    """INSERT every row (the same keys in each) into `table`; with `skip_existing`, a row whose key
    is there already is left out (ON CONFLICT DO NOTHING: a retried write)."""
    if rows:
        columns = list(rows[0])
        tail = " ON CONFLICT DO NOTHING" if skip_existing else ""
        raw_many(conn, lambda p: f"INSERT INTO {table.name} ({', '.join(quote(c) for c in columns)}) "
                 f"VALUES ({', '.join(p(c) for c in columns)}){tail}", table, rows)
