"""Users, per-category preferences, feedback events and the bandit's statistics.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(120), primary_key=True),
        sa.Column("opted_in", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "preferences",
        sa.Column("user_id", sa.String(120), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("category", sa.String(16), primary_key=True),
        sa.Column("strategy", sa.String(16), nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(120), nullable=True, index=True),
        sa.Column("session_id", sa.String(120), nullable=True, index=True),
        sa.Column("item_id", sa.String(120), sa.ForeignKey("items.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("context", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )
    op.create_table(
        "bandit_arms",
        sa.Column("item_id", sa.String(120), sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("a", sa.JSON, nullable=False),
        sa.Column("b", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("bandit_arms", "events", "preferences", "users"):
        op.drop_table(table)
