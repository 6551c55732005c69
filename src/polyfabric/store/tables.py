"""Table definitions: the one source of the schema for SQLite and PostgreSQL.

Times are float unix seconds (UTC). JSON columns hold small documents (labels, capacity,
telemetry). Every mutable row has a `version` for optimistic concurrency where two writers race.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "api_tokens",
    "job_events",
    "jobs",
    "leadership",
    "limits",
    "semaphores",
    "task_attempts",
    "task_logs",
    "tasks",
    "audit_heads",
    "audit_records",
    "audit_tip",
    "coordinator_keys",
    "domains",
    "join_tokens",
    "metadata",
    "nodes",
]

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

domains = sa.Table(
    "domains",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
)

join_tokens = sa.Table(
    "join_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("domain", sa.String(63), sa.ForeignKey("domains.name"), nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("uses_allowed", sa.Integer, nullable=True),
    sa.Column("uses", sa.Integer, nullable=False, default=0),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("domains", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("domain", sa.String(63), sa.ForeignKey("domains.name"), nullable=False, index=True),
    sa.Column("public_key", sa.LargeBinary(32), nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("capacity", sa.JSON, nullable=False),
    sa.Column("facts", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("state_since", sa.Float, nullable=False),
    sa.Column("resume_state", sa.String(16), nullable=True),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("registered_at", sa.Float, nullable=False),
    sa.Column("join_token_id", sa.String(32), nullable=True),
    sa.Column("last_heartbeat_at", sa.Float, nullable=True),
    sa.Column("telemetry", sa.JSON, nullable=False),
    sa.Column("health", sa.JSON, nullable=False),
    sa.Column("conditions", sa.JSON, nullable=False),
    sa.Column("down_times", sa.JSON, nullable=False),
    sa.Column("agent_version", sa.String(32), nullable=False, default=""),
    sa.Column("version", sa.Integer, nullable=False, default=1),
    sa.Column("drain_deadline", sa.Float, nullable=True),  # `node drain --deadline`: attempts move after it
    sa.Column("quarantine", sa.JSON, nullable=True),  # the current (or last) quarantine: trigger, reason, times
)

audit_records = sa.Table(
    "audit_records",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=False),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False, index=True),
    sa.Column("subject", sa.String(200), nullable=False, index=True),
    sa.Column("domain", sa.String(63), nullable=True),
    sa.Column("cause", sa.Text, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

audit_tip = sa.Table(
    "audit_tip",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

audit_heads = sa.Table(
    "audit_heads",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
)

coordinator_keys = sa.Table(
    "coordinator_keys",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# -- jobs (workflow runs) and their tasks --------------------------------------------------------

_BIGINT = sa.BigInteger().with_variant(sa.Integer, "sqlite")

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("seq", _BIGINT, nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("domain", sa.String(63), sa.ForeignKey("domains.name"), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("flags", sa.JSON, nullable=False),
    sa.Column("submitted_by", sa.String(200), nullable=False),
    sa.Column("submitted_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("task", sa.String(200), nullable=False),
    sa.Column("item_index", sa.Integer, nullable=True),
    sa.Column("is_group", sa.Boolean, nullable=False, default=False),
    sa.Column("item", sa.JSON, nullable=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("preemptions", sa.Integer, nullable=False),
    sa.Column("not_before", sa.Float, nullable=True),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("queue_seq", _BIGINT, nullable=False),
    sa.Column("payload", sa.JSON, nullable=True),
    sa.Column("node_id", sa.String(32), nullable=True, index=True),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.UniqueConstraint("job_id", "key"),
)

task_attempts = sa.Table(
    "task_attempts",
    metadata,
    sa.Column("task_id", sa.String(32), sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("node_id", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("leased_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("preempted_by", sa.String(32), nullable=True),
)

task_logs = sa.Table(
    "task_logs",
    metadata,
    sa.Column("seq", _BIGINT, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(32), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("stream", sa.String(8), nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.UniqueConstraint("task_id", "attempt", "stream", "offset"),
)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("seq", _BIGINT, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("task_id", sa.String(32), nullable=True),
    sa.Column("key", sa.String(200), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("node_id", sa.String(32), nullable=True),
    sa.Column("at", sa.Float, nullable=False),
)

semaphores = sa.Table(
    "semaphores",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

limits = sa.Table(
    "limits",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("global_max", sa.Integer, nullable=True),
    sa.Column("per_domain", sa.JSON, nullable=False),
    sa.Column("per_node", sa.Integer, nullable=True),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# -- which coordinator leads (PostgreSQL with several coordinators; see services/leadership.py) ---

leadership = sa.Table(
    "leadership",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),  # always 1: one lease row
    sa.Column("holder", sa.String(200), nullable=False),  # the leader's key id ("" before the first)
    sa.Column("epoch", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),  # fencing token
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("acquired_at", sa.Float, nullable=False),
    sa.Column("renewed_at", sa.Float, nullable=False),
    sa.Column("leader_url", sa.String(500), nullable=False),  # the leader's --advertise URL
)
