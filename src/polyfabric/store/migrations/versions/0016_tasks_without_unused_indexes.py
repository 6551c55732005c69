"""tasks without the status and node_id indexes: no query reads tasks by them (every task is read
by its id or its job's), and an agent's report changes both columns of every task it reports,
so each cost a page written per task in every report's commit

Revision ID: 0016
Revises: 0015
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index(op.f("ix_tasks_status"), table_name="tasks")
    op.drop_index(op.f("ix_tasks_node_id"), table_name="tasks")


def downgrade() -> None:
    op.create_index(op.f("ix_tasks_node_id"), "tasks", ["node_id"], unique=False)
    op.create_index(op.f("ix_tasks_status"), "tasks", ["status"], unique=False)
