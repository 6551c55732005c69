"""observability: telemetry history and the contribution ledger (issue 7)

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "node_metrics",
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("resolution", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", _BIGINT, autoincrement=False, nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=True),
        sa.Column("memory_percent", sa.Float(), nullable=True),
        sa.Column("memory_used_bytes", sa.Float(), nullable=True),
        sa.Column("disk_percent", sa.Float(), nullable=True),
        sa.Column("load1", sa.Float(), nullable=True),
        sa.Column("gpu_percent", sa.Float(), nullable=True),
        sa.Column("gpu_memory_used_bytes", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("node_id", "resolution", "at", name=op.f("pk_node_metrics")),
    )
    op.create_index("ix_node_metrics_resolution_at", "node_metrics", ["resolution", "at"])
    op.create_table(
        "usage_ledger",
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("task_key", sa.String(length=200), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("consumer_domain", sa.String(length=63), nullable=False),
        sa.Column("provider_domain", sa.String(length=63), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=False),
        sa.Column("wall_s", sa.Float(), nullable=False),
        sa.Column("cpu_s", sa.Float(), nullable=False),
        sa.Column("memory_byte_s", sa.Float(), nullable=False),
        sa.Column("max_rss_bytes", sa.BigInteger(), nullable=False),
        sa.Column("gpu_s", sa.Float(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "attempt", name=op.f("pk_usage_ledger")),
    )
    op.create_index("ix_usage_ledger_consumer_domain_finished_at", "usage_ledger", ["consumer_domain", "finished_at"])
    op.create_index("ix_usage_ledger_provider_domain_finished_at", "usage_ledger", ["provider_domain", "finished_at"])
    op.create_index("ix_usage_ledger_finished_at", "usage_ledger", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_ledger_finished_at", table_name="usage_ledger")
    op.drop_index("ix_usage_ledger_provider_domain_finished_at", table_name="usage_ledger")
    op.drop_index("ix_usage_ledger_consumer_domain_finished_at", table_name="usage_ledger")
    op.drop_table("usage_ledger")
    op.drop_index("ix_node_metrics_resolution_at", table_name="node_metrics")
    op.drop_table("node_metrics")
