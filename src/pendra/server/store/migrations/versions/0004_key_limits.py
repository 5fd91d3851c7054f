"""Per-key limits: requests and tokens per minute, concurrency, a monthly token quota, models.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08

Every column is nullable: NULL means "the organisation's default" (server/limits.py). ``updated_at``
moves when a key's limits change, so the key index's cheap version check sees edits as well as
creations and revocations.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("rpm", "tpm", "max_concurrent", "monthly_tokens", "models", "updated_at")


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.add_column(sa.Column("rpm", sa.Integer(), nullable=True))
        table.add_column(sa.Column("tpm", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("max_concurrent", sa.Integer(), nullable=True))
        table.add_column(sa.Column("monthly_tokens", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("models", sa.Text(), nullable=True))
        table.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        for name in reversed(COLUMNS):
            table.drop_column(name)
