"""Console users with roles, every key owned by one, and the audit log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08

The single ``admin`` row becomes the first user: an **owner** named ``admin`` with the same password
hash (so existing sessions' password fingerprints still match and nobody is signed out), and every
existing API key is given to it. The ``admin`` table is then dropped. Downgrading turns the oldest
owner back into the admin row and drops users, key owners and the audit log.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIRST_OWNER_NAME = "admin"

_when = sa.DateTime(timezone=True)
_admin = sa.table("admin", sa.column("id", sa.Integer()), sa.column("password_hash", sa.String()),
                  sa.column("created_at", _when), sa.column("updated_at", _when))
_users = sa.table("users", sa.column("id", sa.String()), sa.column("name", sa.String()),
                  sa.column("role", sa.String()), sa.column("password_hash", sa.String()),
                  sa.column("must_change_password", sa.Boolean()),
                  sa.column("created_at", _when), sa.column("password_changed_at", _when),
                  sa.column("disabled_at", _when))
_keys = sa.table("api_keys", sa.column("user_id", sa.String()))


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("must_change_password", sa.Boolean(), nullable=False),
        sa.Column("created_at", _when, nullable=False),
        sa.Column("password_changed_at", _when, nullable=False),
        sa.Column("disabled_at", _when, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
        sa.CheckConstraint("role IN ('owner', 'member')", name=op.f("ck_users_role")),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
                  nullable=False),
        sa.Column("created_at", _when, nullable=False),
        sa.Column("user_id", sa.String(40), nullable=True),
        sa.Column("actor", sa.String(120), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    op.create_index(op.f("ix_audit_created_at"), "audit", ["created_at"])
    with op.batch_alter_table("api_keys") as table:
        table.add_column(sa.Column("user_id", sa.String(40), nullable=True))
        table.create_index(op.f("ix_api_keys_user_id"), ["user_id"])
        table.create_foreign_key(op.f("fk_api_keys_user_id_users"), "users", ["user_id"], ["id"],
                                 ondelete="RESTRICT")

    bind = op.get_bind()
    admin = bind.execute(sa.select(_admin.c.password_hash, _admin.c.created_at,
                                   _admin.c.updated_at)).first()
    if admin is not None:
        owner_id = "user_" + secrets.token_hex(8)
        bind.execute(_users.insert().values(
            id=owner_id, name=FIRST_OWNER_NAME, role="owner", password_hash=admin.password_hash,
            must_change_password=False, created_at=admin.created_at,
            password_changed_at=admin.updated_at, disabled_at=None))
        bind.execute(_keys.update().values(user_id=owner_id))
    op.drop_table("admin")


def downgrade() -> None:
    op.create_table(
        "admin",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", _when, nullable=False),
        sa.Column("updated_at", _when, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin")),
        sa.CheckConstraint("id = 1", name=op.f("ck_admin_single_row")),
    )
    bind = op.get_bind()
    owner = bind.execute(sa.select(_users.c.password_hash, _users.c.created_at,
                                   _users.c.password_changed_at)
                         .where(_users.c.role == "owner")
                         .order_by(_users.c.created_at, _users.c.id).limit(1)).first()
    if owner is not None:
        bind.execute(_admin.insert().values(id=1, password_hash=owner.password_hash,
                                            created_at=owner.created_at,
                                            updated_at=owner.password_changed_at))
    with op.batch_alter_table("api_keys") as table:
        table.drop_constraint(op.f("fk_api_keys_user_id_users"), type_="foreignkey")
        table.drop_index(op.f("ix_api_keys_user_id"))
        table.drop_column("user_id")
    op.drop_index(op.f("ix_audit_created_at"), table_name="audit")
    op.drop_table("audit")
    op.drop_table("users")
