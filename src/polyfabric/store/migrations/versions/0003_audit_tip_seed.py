"""seed the audit chain's tip row, so that the very first appends serialize on it too

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO audit_tip (id, seq, hash) SELECT 1, 0, '" + "0" * 64 + "' "
        "WHERE NOT EXISTS (SELECT 1 FROM audit_tip WHERE id = 1)"
    )


def downgrade() -> None:
    op.execute("DELETE FROM audit_tip WHERE id = 1 AND seq = 0")
