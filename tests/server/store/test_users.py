"""Console users: the first owner, invites, roles, disabling and removal, passwords."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.exc import IntegrityError

from pendra.errors import Conflict, InvalidRequest, NotFound
from pendra.server.store import admin, keys, users
from pendra.server.store.db import Store
from pendra.server.store.tables import User, utcnow

STORED = re.compile(r"^scrypt\$16384\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$")


async def test_first_owner_is_made_once_and_adopts_keys(store: Store) -> None:
    """The first start makes an owner named admin with a generated password, once; keys made
    before it (a tool seeding the store) become its keys."""
    async with store.session() as session:
        orphan, _ = await keys.create_key(session, "early")
        assert orphan.user_id is None
        password = await users.ensure_first_owner(session)
        await session.commit()
    assert password is not None and len(password) == 16
    async with store.session() as session:
        assert await users.ensure_first_owner(session) is None
        row = await admin.get_admin(session)
        assert row is not None and row.name == "admin" and row.role == "owner"
        assert row.id.startswith("user_") and not row.must_change_password
        assert STORED.match(row.password_hash) and password not in row.password_hash
        assert await users.verify_password(password, row.password_hash)
        assert (await keys.find_key(session, orphan.id)).user_id == row.id
        made, _ = await keys.create_key(session, "later")
        assert made.user_id == row.id  # no user named: the first owner


async def test_added_users_must_change_their_password(store: Store) -> None:
    """An invited user gets a one-time password and must change it; names are unique (ignoring
    case when looked up); roles are owner or member."""
    async with store.session() as session:
        await users.ensure_first_owner(session)
        row, password = await users.add_user(session, "ada@example.com", "member")
        await session.commit()
    assert row.must_change_password and row.role == "member"
    async with store.session() as session:
        found = await users.credentials(session, "ADA@example.com")
        assert found is not None and found.id == row.id
        assert await users.verify_password(password, found.password_hash)
        with pytest.raises(Conflict, match="already a user"):
            await users.add_user(session, "ada@example.com", "owner")
        with pytest.raises(InvalidRequest, match="role"):
            await users.add_user(session, "bob", "admin")
        with pytest.raises(InvalidRequest, match="name"):
            await users.add_user(session, "  ", "member")
        before = found.password_hash
        changed = await users.set_password(session, row.id, "my own password")
        assert not changed.must_change_password and changed.password_hash != before


async def test_the_last_owner_stays(store: Store) -> None:
    """The last enabled owner cannot be disabled, removed or made a member."""
    async with store.session() as session:
        await users.ensure_first_owner(session)
        await session.commit()
        with pytest.raises(Conflict, match="last owner"):
            await users.set_disabled(session, "admin", True)
        with pytest.raises(Conflict, match="last owner"):
            await users.set_role(session, "admin", "member")
        with pytest.raises(Conflict, match="last owner"):
            await users.remove_user(session, "admin", None)
        second, _ = await users.add_user(session, "second", "owner")
        await users.set_disabled(session, "admin", True)
        assert (await users.credentials(session, "admin")) is None  # disabled: no sign-in
        with pytest.raises(Conflict, match="last owner"):
            await users.set_disabled(session, second.id, True)


async def test_disabling_revokes_keys_and_removal_hands_them_over(store: Store) -> None:
    """Disabling a user revokes their live keys (enabling does not bring them back); removing a
    user revokes theirs and hands every key of theirs to the owner removing them."""
    async with store.session() as session:
        await users.ensure_first_owner(session)
        owner = await users.first_owner(session)
        assert owner is not None
        member, _ = await users.add_user(session, "member", "member")
        key, _ = await keys.create_key(session, "m1", user_id=member.id)
        mine, _ = await keys.create_key(session, "o1", user_id=owner.id)
        row, revoked = await users.set_disabled(session, "member", True)
        assert row.disabled and [k.id for k in revoked] == [key.id]
        row, revoked = await users.set_disabled(session, "member", False)
        assert not row.disabled and revoked == []
        assert (await keys.find_key(session, key.id)).revoked
        with pytest.raises(InvalidRequest, match="enabled user"):
            await users.set_disabled(session, "member", True)
            await keys.create_key(session, "x", user_id=member.id)
        await users.set_disabled(session, "member", False)
        second, _ = await keys.create_key(session, "m2", user_id=member.id)
        removed, revoked, heir = await users.remove_user(session, "member", owner.id)
        assert heir.id == owner.id
        assert [k.id for k in revoked] == [second.id]
        await session.commit()
    async with store.session() as session:
        with pytest.raises(NotFound):
            await users.find_user(session, "member")
        assert {k.id for k in await keys.list_keys(session, owner.id)} == {key.id, second.id,
                                                                          mine.id}
        assert not (await keys.find_key(session, mine.id)).revoked


async def test_names_are_unique_in_the_table(store: Store) -> None:
    """The table itself refuses two users with one name."""
    async with store.session() as session:
        now = utcnow()
        for n in (1, 2):
            session.add(User(id=f"user_{n}", name="same", role="member", password_hash="x",
                             must_change_password=False, created_at=now, password_changed_at=now))
        with pytest.raises(IntegrityError):
            await session.flush()


@pytest.mark.parametrize("password", ["", "short", "y" * 1025])
async def test_set_refuses_unreasonable_passwords(store: Store, password: str) -> None:
    """A new password must be 8 to 1024 characters."""
    async with store.session() as session:
        with pytest.raises(InvalidRequest, match="8 to 1024"):
            await users.add_user(session, "someone", "member", password)
        with pytest.raises(InvalidRequest, match="8 to 1024"):
            await admin.set_admin_password(session, password)


def test_malformed_stored_hashes_never_verify() -> None:
    """A stored value that is not a well-formed scrypt hash verifies nothing, without raising."""
    good = users.hash_password("password1")
    assert users.check_password("password1", good)
    for bad in ("", "plain", good.replace("scrypt", "bcrypt"), good + "$extra",
                "scrypt$16384$8$1$!!$!!", "scrypt$3$8$1$AAAA$AAAA",
                "scrypt$1099511627776$8$1$AAAA$AAAA", "scrypt$16384$8$1$AAAA$AAAA"):
        assert not users.check_password("password1", bad)
