"""pools: elastic node pools, their members and per-domain node quotas (issue 7)

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("domain", sa.String(length=63), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("min_nodes", sa.Integer(), nullable=False),
        sa.Column("max_nodes", sa.Integer(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("idle_s", sa.Float(), nullable=False),
        sa.Column("scale_up_after_s", sa.Float(), nullable=False),
        sa.Column("start_timeout_s", sa.Float(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("cpu_millis", sa.BigInteger(), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("provider_config", sa.JSON(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("last_reason", sa.Text(), nullable=False),
        sa.Column("last_signal", sa.JSON(), nullable=False),
        sa.Column("last_decision_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["domain"], ["domains.name"], name=op.f("fk_pools_domain_domains")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_pools")),
    )
    op.create_table(
        "pool_members",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("pool", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=True),
        sa.Column("handle", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("idle_since", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["pool"], ["pools.name"], name=op.f("fk_pool_members_pool_pools"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_members")),
    )
    op.create_index(op.f("ix_pool_members_pool"), "pool_members", ["pool"], unique=False)
    op.create_table(
        "domain_quotas",
        sa.Column("domain", sa.String(length=63), nullable=False),
        sa.Column("max_nodes", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["domain"], ["domains.name"], name=op.f("fk_domain_quotas_domain_domains")),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_domain_quotas")),
    )


def downgrade() -> None:
    op.drop_table("domain_quotas")
    op.drop_index(op.f("ix_pool_members_pool"), table_name="pool_members")
    op.drop_table("pool_members")
    op.drop_table("pools")
