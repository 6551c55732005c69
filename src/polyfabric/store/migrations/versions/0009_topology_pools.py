"""topology_pools: network coordinates and elastic node pools (issue 7)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # -- topology: measured network coordinates per node (services/topology.py) --------------------
    op.create_table(
        "node_coordinates",
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("coords", sa.JSON(), nullable=False),
        sa.Column("rtt_s", sa.Float(), nullable=True),
        sa.Column("echo", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name=op.f("fk_node_coordinates_node_id_nodes"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_node_coordinates")),
    )
    # -- pools: (elastic node pools, issue 7) go below -----------------------------------------------


def downgrade() -> None:
    # -- pools: dropped here first, when they exist --------------------------------------------------
    op.drop_table("node_coordinates")
