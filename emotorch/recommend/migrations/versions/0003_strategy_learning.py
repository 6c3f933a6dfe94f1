"""Learn which strategy works: the strategy behind each impression and click counts per strategy.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("strategy", sa.String(16), nullable=True))
    op.create_table(
        "strategy_stats",
        sa.Column("scope", sa.String(120), primary_key=True),
        sa.Column("category", sa.String(16), primary_key=True),
        sa.Column("negative", sa.Boolean, primary_key=True),
        sa.Column("strategy", sa.String(16), primary_key=True),
        sa.Column("impressions", sa.Integer, nullable=False, server_default="0"),
        sa.Column("clicks", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("strategy_stats")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("strategy")
