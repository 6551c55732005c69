"""triggers: cron schedules, webhook triggers and retention (issue 7)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("domain", sa.String(length=63), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("concurrency", sa.String(length=16), nullable=False),
        sa.Column("catch_up", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["domain"], ["domains.name"], name=op.f("fk_schedules_domain_domains")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("name", name=op.f("uq_schedules_name")),
    )
    op.create_table(
        "schedule_fires",
        sa.Column("schedule_id", sa.String(length=32), nullable=False),
        sa.Column("scheduled_at", sa.Float(), autoincrement=False, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("catch_up", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("fired_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["schedule_id"], ["schedules.id"], name=op.f("fk_schedule_fires_schedule_id_schedules"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("schedule_id", "scheduled_at", name=op.f("pk_schedule_fires")),
    )
    op.create_index(op.f("ix_schedule_fires_job_id"), "schedule_fires", ["job_id"], unique=False)
    op.create_table(
        "triggers",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("domain", sa.String(length=63), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("secret_sealed", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("fired", sa.Integer(), nullable=False),
        sa.Column("last_fired_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["domain"], ["domains.name"], name=op.f("fk_triggers_domain_domains")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triggers")),
        sa.UniqueConstraint("name", name=op.f("uq_triggers_name")),
    )
    op.create_table(
        "trigger_deliveries",
        sa.Column("trigger_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["trigger_id"], ["triggers.id"],
                                name=op.f("fk_trigger_deliveries_trigger_id_triggers"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trigger_id", "signature", name=op.f("pk_trigger_deliveries")),
    )
    op.create_index(op.f("ix_trigger_deliveries_received_at"), "trigger_deliveries", ["received_at"], unique=False)
    op.create_table(
        "trigger_keys",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger_keys")),
    )
    op.create_table(
        "job_retention",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("collected_at", sa.Float(), nullable=False),
        sa.Column("kept", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_retention_job_id_jobs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_retention")),
    )


def downgrade() -> None:
    op.drop_table("job_retention")
    op.drop_table("trigger_keys")
    op.drop_index(op.f("ix_trigger_deliveries_received_at"), table_name="trigger_deliveries")
    op.drop_table("trigger_deliveries")
    op.drop_table("triggers")
    op.drop_index(op.f("ix_schedule_fires_job_id"), table_name="schedule_fires")
    op.drop_table("schedule_fires")
    op.drop_table("schedules")
