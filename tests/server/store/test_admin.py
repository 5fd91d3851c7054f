"""The admin account: generated once, stored as salted scrypt, changeable."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.exc import IntegrityError

from pendra.errors import InvalidRequest
from pendra.server.store import admin
from pendra.server.store.db import Store
from pendra.server.store.tables import Admin, utcnow

STORED = re.compile(r"^scrypt\$16384\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$")


async def test_ensure_admin_generates_a_password_once(store: Store) -> None:
    """The first call makes the admin with a generated password and returns it; later calls return
    None and leave the password alone."""
    async with store.session() as session:
        assert await admin.get_admin(session) is None
        password = await admin.ensure_admin(session)
        await session.commit()
    assert password is not None and len(password) == 16
    async with store.session() as session:
        assert await admin.ensure_admin(session) is None
        assert await admin.verify_admin_password(session, password)
        row = await admin.get_admin(session)
    assert row is not None and row.id == 1
    assert STORED.match(row.password_hash) and password not in row.password_hash


async def test_verify_rejects_wrong_passwords(store: Store) -> None:
    """Only the exact password verifies; with no admin yet, nothing does."""
    async with store.session() as session:
        assert not await admin.verify_admin_password(session, "anything")
        await admin.set_admin_password(session, "correct horse")
        await session.commit()
        assert await admin.verify_admin_password(session, "correct horse")
        for wrong in ("correct horse ", "Correct horse", "", "x" * 5000):
            assert not await admin.verify_admin_password(session, wrong)


async def test_change_password(store: Store) -> None:
    """Setting a new password replaces the old one (new salt, later ``updated_at``)."""
    async with store.session() as session:
        first = await admin.ensure_admin(session)
        await session.commit()
        row = await admin.get_admin(session)
        assert row is not None and first is not None
        old_hash, created = row.password_hash, row.created_at
        await admin.set_admin_password(session, "a new password")
        await session.commit()
    async with store.session() as session:
        assert await admin.verify_admin_password(session, "a new password")
        assert not await admin.verify_admin_password(session, first)
        row = await admin.get_admin(session)
        assert row is not None
        assert row.password_hash != old_hash
        assert row.created_at == created and row.updated_at >= created


@pytest.mark.parametrize("password", ["", "short", "y" * 1025])
async def test_set_refuses_unreasonable_passwords(store: Store, password: str) -> None:
    """A new admin password must be 8 to 1024 characters."""
    async with store.session() as session:
        with pytest.raises(InvalidRequest, match="8 to 1024"):
            await admin.set_admin_password(session, password)


async def test_there_is_only_ever_one_admin_row(store: Store) -> None:
    """The table refuses a second admin row."""
    async with store.session() as session:
        await admin.ensure_admin(session)
        session.add(Admin(id=2, password_hash="x", created_at=utcnow(), updated_at=utcnow()))
        with pytest.raises(IntegrityError):
            await session.flush()


def test_malformed_stored_hashes_never_verify() -> None:
    """A stored value that is not a well-formed scrypt hash verifies nothing, without raising."""
    good = admin.hash_password("password1")
    assert admin.check_password("password1", good)
    for bad in ("", "plain", good.replace("scrypt", "bcrypt"), good + "$extra",
                "scrypt$16384$8$1$!!$!!", "scrypt$3$8$1$AAAA$AAAA",
                "scrypt$1099511627776$8$1$AAAA$AAAA", "scrypt$16384$8$1$AAAA$AAAA"):
        assert not admin.check_password("password1", bad)
