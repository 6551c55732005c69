"""leadership: the lease row several coordinators on one PostgreSQL elect their leader with

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leadership",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("epoch", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("renewed_at", sa.Float(), nullable=False),
        sa.Column("leader_url", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leadership")),
    )
    # The one row every election locks: no lease yet (epoch 0, long expired).
    op.execute("INSERT INTO leadership (id, holder, epoch, expires_at, acquired_at, renewed_at, leader_url) "
               "VALUES (1, '', 0, 0, 0, 0, '')")


def downgrade() -> None:
    op.drop_table("leadership")
