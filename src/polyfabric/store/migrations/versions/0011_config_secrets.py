"""config_secrets: versioned configuration, sealed secrets and signed result manifests (issue 6)

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "config_docs",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("scope", sa.String(300), nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("canary_nodes", sa.JSON, nullable=True),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("published_by", sa.String(200), nullable=False),
        sa.Column("published_at", sa.Float, nullable=False),
        sa.Column("halted_reason", sa.Text, nullable=True),
        sa.Column("changed_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_config_docs"),
    )
    op.create_index("ix_config_docs_scope", "config_docs", ["scope"])
    op.create_table(
        "config_nodes",
        sa.Column("node_id", sa.String(32), nullable=False),
        sa.Column("acked_version", sa.Integer, nullable=True),
        sa.Column("acked_docs", sa.JSON, nullable=False),
        sa.Column("acked_at", sa.Float, nullable=True),
        sa.Column("applied", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("error_version", sa.Integer, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("node_id", name="pk_config_nodes"),
    )
    op.create_table(
        "secrets",
        sa.Column("domain", sa.String(63), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(["domain"], ["domains.name"], name="fk_secrets_domain_domains"),
        sa.PrimaryKeyConstraint("domain", "name", name="pk_secrets"),
    )
    op.create_table(
        "result_manifests",
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("node_id", sa.String(32), nullable=False),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("signature", sa.String(100), nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("problem", sa.Text, nullable=True),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_result_manifests_task_id_tasks",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id", "attempt", name="pk_result_manifests"),
    )
    op.create_index("ix_result_manifests_job_id", "result_manifests", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_result_manifests_job_id", table_name="result_manifests")
    op.drop_table("result_manifests")
    op.drop_table("secrets")
    op.drop_table("config_nodes")
    op.drop_index("ix_config_docs_scope", table_name="config_docs")
    op.drop_table("config_docs")
