"""nodes: the drain deadline and the current (or last) quarantine record

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("drain_deadline", sa.Float(), nullable=True))
        batch.add_column(sa.Column("quarantine", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("quarantine")
        batch.drop_column("drain_deadline")
