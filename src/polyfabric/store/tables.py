"""Table definitions: the one source of the schema for SQLite and PostgreSQL.

Times are float unix seconds (UTC). JSON columns hold small documents (labels, capacity,
telemetry). Every mutable row has a `version` for optimistic concurrency where two writers race.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "artifacts",
    "domain_quotas",
    "pool_members",
    "pools",
    "api_tokens",
    "node_coordinates",
    "policy_decisions",
    "policy_finding_sets",
    "policy_versions",
    "checkpoints",
    "config_docs",
    "config_nodes",
    "result_manifests",
    "secrets",
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
    "job_retention",
    "schedule_fires",
    "schedules",
    "trigger_deliveries",
    "trigger_keys",
    "triggers",
    "metadata",
    "nodes",
    "node_metrics",
    "usage_ledger",
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
    # No index on status or node_id: every task is read by its id or its job's; each index on a
    # column a report changes cost every agent's report a page written per task (revision 0016).
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("preemptions", sa.Integer, nullable=False),
    sa.Column("not_before", sa.Float, nullable=True),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("queue_seq", _BIGINT, nullable=False),
    sa.Column("payload", sa.JSON, nullable=True),
    sa.Column("node_id", sa.String(32), nullable=True),
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
    # Which policy versions allowed this placement (allows, and what a dry-run policy would have
    # denied): a set of findings shared by every placement alike (policy_finding_sets; issue 6).
    # Null where no policy applied. Placements before revision 0015 have a policy_decisions row.
    sa.Column("findings_set", sa.Integer, sa.ForeignKey("policy_finding_sets.id"), nullable=True),
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

# -- triggers (cron schedules, webhooks) and retention (issue 7; services/schedules.py, triggers.py, gc.py) --

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("domain", sa.String(63), sa.ForeignKey("domains.name"), nullable=False),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("cron", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("concurrency", sa.String(16), nullable=False),
    sa.Column("catch_up", sa.Integer, nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("next_at", sa.Float, nullable=False),  # the earliest due time not yet fired or skipped
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

schedule_fires = sa.Table(
    "schedule_fires",
    metadata,
    sa.Column("schedule_id", sa.String(32), sa.ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("scheduled_at", sa.Float, primary_key=True, autoincrement=False),
    sa.Column("job_id", sa.String(32), nullable=True, index=True),  # chosen before submitting: the idempotency key
    sa.Column("outcome", sa.String(16), nullable=False),  # pending, submitted, skipped, missed, failed
    sa.Column("catch_up", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("fired_at", sa.Float, nullable=False),
)

triggers = sa.Table(
    "triggers",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("domain", sa.String(63), sa.ForeignKey("domains.name"), nullable=False),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Column("secret_sealed", sa.Text, nullable=False),  # AES-256-GCM, see services/triggers.py
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("fired", sa.Integer, nullable=False),
    sa.Column("last_fired_at", sa.Float, nullable=True),
)

trigger_deliveries = sa.Table(
    "trigger_deliveries",
    metadata,
    sa.Column("trigger_id", sa.String(32), sa.ForeignKey("triggers.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("signature", sa.String(64), primary_key=True),  # SHA-256 of the signature: a replay is refused
    sa.Column("received_at", sa.Float, nullable=False, index=True),
    sa.Column("job_id", sa.String(32), nullable=True),
)

trigger_keys = sa.Table(
    "trigger_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),  # always 1
    sa.Column("key", sa.String(64), nullable=False),  # base64 AES key sealing webhook secrets (unless set by env)
    sa.Column("created_at", sa.Float, nullable=False),
)

job_retention = sa.Table(
    "job_retention",
    metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("collected_at", sa.Float, nullable=False),
    sa.Column("kept", sa.JSON, nullable=False),  # the task keys whose outputs were kept
)

# -- observability: per-node telemetry history and the contribution ledger (issue 7) -----------------

node_metrics = sa.Table(
    "node_metrics",
    metadata,
    sa.Column("node_id", sa.String(32), primary_key=True),
    sa.Column("resolution", sa.Integer, primary_key=True, autoincrement=False),  # seconds a point covers
    sa.Column("at", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=False),  # the bucket's start (unix seconds, a multiple of resolution)
    sa.Column("samples", sa.Integer, nullable=False),
    sa.Column("cpu_percent", sa.Float, nullable=True),
    sa.Column("memory_percent", sa.Float, nullable=True),
    sa.Column("memory_used_bytes", sa.Float, nullable=True),
    sa.Column("disk_percent", sa.Float, nullable=True),
    sa.Column("load1", sa.Float, nullable=True),
    sa.Column("gpu_percent", sa.Float, nullable=True),
    sa.Column("gpu_memory_used_bytes", sa.Float, nullable=True),
    sa.Index("ix_node_metrics_resolution_at", "resolution", "at"),  # retention deletes by tier and age
)

usage_ledger = sa.Table(
    "usage_ledger",
    metadata,
    sa.Column("task_id", sa.String(32), primary_key=True),  # no foreign key: the ledger outlives jobs
    sa.Column("attempt", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("task_key", sa.String(200), nullable=False),
    sa.Column("node_id", sa.String(32), nullable=False),
    sa.Column("consumer_domain", sa.String(63), nullable=False),  # the job's domain
    sa.Column("provider_domain", sa.String(63), nullable=False),  # the domain of the node that ran it
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("finished_at", sa.Float, nullable=False),
    sa.Column("wall_s", sa.Float, nullable=False),
    sa.Column("cpu_s", sa.Float, nullable=False),
    sa.Column("memory_byte_s", sa.Float, nullable=False),
    sa.Column("max_rss_bytes", sa.BigInteger, nullable=False),
    sa.Column("gpu_s", sa.Float, nullable=False),
    sa.Column("method", sa.String(64), nullable=False),  # how the agent measured it
    sa.Index("ix_usage_ledger_consumer_domain_finished_at", "consumer_domain", "finished_at"),
    sa.Index("ix_usage_ledger_provider_domain_finished_at", "provider_domain", "finished_at"),
    sa.Index("ix_usage_ledger_finished_at", "finished_at"),
)

# -- configuration documents, sealed secrets, signed result manifests (issue 6; services/config.py,
#    secrets.py, manifests.py) ----------------------------------------------------------------------

config_docs = sa.Table(
    "config_docs",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),  # global, increasing
    sa.Column("scope", sa.String(300), nullable=False, index=True),  # network | domain:D | selector:k=v | node:ID
    sa.Column("document", sa.JSON, nullable=False),  # validated (domain/configdoc.py), unset fields left out
    sa.Column("state", sa.String(16), nullable=False),  # canary | active | halted | rolled_back
    sa.Column("canary_nodes", sa.JSON, nullable=True),  # the nodes a canary goes to first
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("published_by", sa.String(200), nullable=False),
    sa.Column("published_at", sa.Float, nullable=False),
    sa.Column("halted_reason", sa.Text, nullable=True),
    sa.Column("changed_at", sa.Float, nullable=False),
)

config_nodes = sa.Table(
    "config_nodes",
    metadata,
    sa.Column("node_id", sa.String(32), primary_key=True),
    sa.Column("acked_version", sa.Integer, nullable=True),  # the version the agent says it runs
    sa.Column("acked_docs", sa.JSON, nullable=False),  # the document versions merged into it
    sa.Column("acked_at", sa.Float, nullable=True),
    sa.Column("applied", sa.JSON, nullable=False),  # what the agent applied (its own summary)
    sa.Column("error", sa.Text, nullable=True),  # the last version it could not apply, and why
    sa.Column("error_version", sa.Integer, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)

secrets = sa.Table(
    "secrets",
    metadata,
    sa.Column("domain", sa.String(63), sa.ForeignKey("domains.name"), primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=False),  # the key-file key that wraps the data key
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),  # AES-GCM(kek, data key)
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),  # AES-GCM(data key, value)
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

result_manifests = sa.Table(
    "result_manifests",
    metadata,
    sa.Column("task_id", sa.String(32), sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),
    sa.Column("node_id", sa.String(32), nullable=False),
    sa.Column("manifest", sa.JSON, nullable=False),  # the signed fields (security/manifests.py)
    sa.Column("signature", sa.String(100), nullable=False),  # base64url Ed25519 by the node's key
    sa.Column("verified", sa.Boolean, nullable=False),  # checked by the coordinator when it arrived
    sa.Column("problem", sa.Text, nullable=True),
    sa.Column("received_at", sa.Float, nullable=False),
)

# -- checkpoints (issue 5): the metadata of each task's saved checkpoints; the bytes are files in the
# coordinator's checkpoint directory (services/checkpoints.py) ---------------------------------------

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("task_id", sa.String(32), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),  # the attempt that saved it (current when it did)
    sa.Column("seq", sa.Integer, nullable=False),  # 1, 2, ... per task, across attempts
    sa.Column("node_id", sa.String(32), nullable=False),
    sa.Column("format", sa.String(8), nullable=False),  # json | bytes | tar
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("path", sa.String(500), nullable=False),  # relative to the checkpoint directory
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("task_id", "seq"),
)

# -- policies (issue 6): every applied version of every policy, and the decisions that name them ----

policy_versions = sa.Table(
    "policy_versions",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("scope", sa.String(80), nullable=False),  # network | domain:NAME
    sa.Column("mode", sa.String(8), nullable=False),  # enforce | dry-run
    sa.Column("document", sa.JSON, nullable=False),  # the policy as applied
    sa.Column("removed", sa.Boolean, nullable=False),  # a tombstone version written by `policy rm`
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

policy_decisions = sa.Table(
    "policy_decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),
    sa.Column("task_id", sa.String(32), nullable=True),  # null: the job's admission
    sa.Column("attempt", sa.Integer, nullable=True),
    sa.Column("node_id", sa.String(32), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),  # admission | placement | offer
    sa.Column("allowed", sa.Boolean, nullable=False),
    # What decided it: the findings ([{scope, policy, version, allowed, reason?, dry_run?}]) as a
    # set shared by every decision with the same findings (`findings_set`); rows written before
    # revision 0014 hold them inline (`findings`).
    sa.Column("findings", sa.JSON, nullable=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("findings_set", sa.Integer, sa.ForeignKey("policy_finding_sets.id"), nullable=True),
)

# A pass places thousands of tasks that the same few policy versions allowed: each distinct list of
# findings is stored once, by the SHA-256 of its JSON text, and decisions name it.
policy_finding_sets = sa.Table(
    "policy_finding_sets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("findings", sa.JSON, nullable=False),
)

# -- topology (issue 7): each node's measured network coordinates (Vivaldi) and echo address,
# written in batches from memory (services/topology.py), never per heartbeat --------------------

node_coordinates = sa.Table(
    "node_coordinates",
    metadata,
    sa.Column("node_id", sa.String(32), sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("coords", sa.JSON, nullable=False),  # {"vec": [...], "error", "adjustment", "height"}
    sa.Column("rtt_s", sa.Float, nullable=True),  # the node's last measured round trip to the coordinator
    sa.Column("echo", sa.String(200), nullable=True),  # host:port of its echo endpoint, if it has one
    sa.Column("updated_at", sa.Float, nullable=False),
)

# -- elastic node pools (issue 7): pools, the agents the autoscaler started for them, and each
# domain's node quota (controllers/autoscaler.py) -------------------------------------------------

pools = sa.Table(
    "pools",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("domain", sa.String(63), sa.ForeignKey("domains.name"), nullable=False),
    sa.Column("provider", sa.String(16), nullable=False),  # local | ssh
    sa.Column("min_nodes", sa.Integer, nullable=False),
    sa.Column("max_nodes", sa.Integer, nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("idle_s", sa.Float, nullable=False),
    sa.Column("scale_up_after_s", sa.Float, nullable=False),
    sa.Column("start_timeout_s", sa.Float, nullable=False),
    sa.Column("slots", sa.Integer, nullable=False),
    sa.Column("cpu_millis", sa.BigInteger, nullable=False),
    sa.Column("memory_bytes", sa.BigInteger, nullable=False),
    sa.Column("gpus", sa.Integer, nullable=False),
    sa.Column("provider_config", sa.JSON, nullable=False),  # ssh: hosts, user, port, key file, command
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("target", sa.Integer, nullable=False),  # the alive size the last decision aimed at
    sa.Column("last_reason", sa.Text, nullable=False),
    sa.Column("last_signal", sa.JSON, nullable=False),
    sa.Column("last_decision_at", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
)

pool_members = sa.Table(
    "pool_members",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("pool", sa.String(63), sa.ForeignKey("pools.name", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),  # domain.pools.MemberState
    sa.Column("node_id", sa.String(32), nullable=True),
    sa.Column("handle", sa.JSON, nullable=False),  # what the provider needs to stop it (pid, host, dir)
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("idle_since", sa.Float, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)

domain_quotas = sa.Table(
    "domain_quotas",
    metadata,
    sa.Column("domain", sa.String(63), sa.ForeignKey("domains.name"), primary_key=True),
    sa.Column("max_nodes", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

# -- artifacts (issues 4 and 7): files a task leaves under $POLYFABRIC_ARTIFACTS, uploaded by its
# agent when the attempt ends; the bytes are files in the coordinator's artifact directory
# (services/artifacts.py). A refused file (too large, say) has a row with `problem` and no bytes. --

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("task_id", sa.String(32), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("path", sa.String(400), nullable=False),  # relative to $POLYFABRIC_ARTIFACTS (domain/artifacts.py)
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=True),  # null: refused, not stored
    sa.Column("node_id", sa.String(32), nullable=False),
    sa.Column("problem", sa.Text, nullable=True),  # why the file was refused
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("task_id", "attempt", "path"),
)
