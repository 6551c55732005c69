"""policy finding sets: a placement's findings stored once per distinct set, not per decision (issue 6)

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_finding_sets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_finding_sets")),
        sa.UniqueConstraint("digest", name=op.f("uq_policy_finding_sets_digest")),
    )
    with op.batch_alter_table("policy_decisions") as batch:
        batch.alter_column("findings", existing_type=sa.JSON(), nullable=True)
        batch.add_column(sa.Column("findings_set", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_policy_decisions_findings_set_policy_finding_sets"),
                                 "policy_finding_sets", ["findings_set"], ["id"])


def downgrade() -> None:
    op.execute("UPDATE policy_decisions SET findings = (SELECT s.findings FROM policy_finding_sets s "
               "WHERE s.id = policy_decisions.findings_set) WHERE findings IS NULL")
    with op.batch_alter_table("policy_decisions") as batch:
        batch.alter_column("findings", existing_type=sa.JSON(), nullable=False)
        batch.drop_constraint(op.f("fk_policy_decisions_findings_set_policy_finding_sets"), type_="foreignkey")
        batch.drop_column("findings_set")
    op.drop_table("policy_finding_sets")
