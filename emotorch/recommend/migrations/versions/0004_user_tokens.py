"""Per-user access: the sha256 of each API user's token (users the operator made on the CLI have none).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_sha256", sa.String(64), nullable=True))
    op.create_index("ix_users_token_sha256", "users", ["token_sha256"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_users_token_sha256", "users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_sha256")
