"""placement findings on the attempt: which policy versions allowed a placement is a column of
the attempt (`task_attempts.findings_set`), not a policy_decisions row per placement (issue 6)

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_attempts") as batch:
        batch.add_column(sa.Column("findings_set", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_task_attempts_findings_set_policy_finding_sets"),
                                 "policy_finding_sets", ["findings_set"], ["id"])


def downgrade() -> None:
    # Each placement's findings back to a policy_decisions row, as revision 0014 wrote them.
    op.execute("INSERT INTO policy_decisions (job_id, task_id, attempt, node_id, kind, allowed, findings, at, "
               "findings_set) SELECT t.job_id, a.task_id, a.attempt, a.node_id, 'placement', true, NULL, "
               "a.leased_at, a.findings_set FROM task_attempts a JOIN tasks t ON t.id = a.task_id "
               "WHERE a.findings_set IS NOT NULL ORDER BY a.leased_at, a.task_id, a.attempt")
    with op.batch_alter_table("task_attempts") as batch:
        batch.drop_constraint(op.f("fk_task_attempts_findings_set_policy_finding_sets"), type_="foreignkey")
        batch.drop_column("findings_set")
