"""API keys, administered over HTTP: what ``pendra keys create/revoke/update`` call on the running
control plane (with the admin token, an owner), and what a console user's session may call too.

Roles (server/roles.py): an owner makes keys for anyone (``user``: a user's name or id; the
first owner by default for the admin token, the caller for a signed-in user), revokes any key and
sets limits. A member makes keys only for themselves and without limits (the organisation's
defaults apply), revokes only their own keys, and may not change limits: 403 otherwise. Every
change writes its audit row in the change's own transaction.

``POST /keys`` makes a key, with optional limits, and returns it once (``key``, with
``Cache-Control: no-store``); ``POST /keys/revoke`` revokes the key named in the body by its id,
prefix or raw value (revoking twice is not an error; the name is in the body, not the path, so a
raw key never reaches an access log); ``POST /keys/update`` changes the limits given in the body
(an absent or null limit stays as it is, 0 removes it, ``models: []`` allows every model). All
go through the app's key index (server/key_index.py), so the change counts on the very next
request to this control plane; the answer comes after the store has it. Limits and their bounds
are server/limits.py's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from pendra.server.admin_auth import Admin
from pendra.server.deps import KeyIndexDep, StoreDep
from pendra.server.people import key_owner
from pendra.server.roles import require_owner
from pendra.server.limits import (BOUNDS, MAX_MODEL_PATTERNS, MODEL_PATTERN_MAX_CHARS, KeyLimits,
                                  parse_limits)
from pendra.server.store.keys import limits_of
from pendra.server.store.tables import NAME_MAX_CHARS, ApiKey

router = APIRouter(tags=["keys"])
# A bound on the body only: ``clean_name`` (store/tables.py) holds the rule for names, after trimming.
NAME_FIELD_MAX_CHARS = 4 * NAME_MAX_CHARS
# A raw key, the longest way to name one, is 50 characters; ids and prefixes are shorter.
KEY_REF_MAX_CHARS = 200


def _limit(name: str, what: str) -> Any:
    low, high = BOUNDS[name]
    return Field(None, ge=low, le=high, description=f"{what}; 0 = no limit, absent = the default")


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rpm: int | None = _limit("rpm", "Requests per minute")
    tpm: int | None = _limit("tpm", "Tokens (prompt + completion) per minute")
    max_concurrent: int | None = _limit("max_concurrent", "Requests in flight at once")
    monthly_tokens: int | None = _limit("monthly_tokens", "Tokens per calendar month (UTC)")
    models: list[Annotated[str, Field(max_length=MODEL_PATTERN_MAX_CHARS)]] | None = Field(
        None, max_length=MAX_MODEL_PATTERNS,
        description="Model ids or patterns (llama3.*) the key may use; [] = every model")

    def limits(self) -> KeyLimits:
        return parse_limits(self.model_dump())


class KeyCreate(Limits):
    name: str = Field(max_length=NAME_FIELD_MAX_CHARS, description="What the key is for")
    user: str | None = Field(None, max_length=NAME_FIELD_MAX_CHARS,
                             description="Whose key it is: a user's name or id (owners only)")


class KeyRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=KEY_REF_MAX_CHARS,
                     description="The key's id, its prefix (as listed), or the key itself")


class KeyRevoke(KeyRef):
    pass


class KeyUpdate(KeyRef, Limits):
    pass


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def key_public(row: ApiKey) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "prefix": row.prefix,
            "created_at": _iso(row.created_at), "revoked_at": _iso(row.revoked_at),
            "limits": limits_of(row).as_dict(), "user_id": row.user_id}


@router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, keys: KeyIndexDep, store: StoreDep, response: Response,
                     admin: Admin) -> dict[str, Any]:
    limits = body.limits()
    if limits != KeyLimits():
        require_owner(admin, "set key limits")
    row, raw = await keys.create(body.name, limits, user_id=await key_owner(store, admin, body.user),
                                 actor=admin)
    response.headers["Cache-Control"] = "no-store"
    return key_public(row) | {"key": raw}


@router.post("/keys/revoke")
async def revoke_key(body: KeyRevoke, keys: KeyIndexDep, admin: Admin) -> dict[str, Any]:
    only_of = None if admin.is_owner else admin.user_id or ""
    return key_public(await keys.revoke(body.key, actor=admin, only_of=only_of))


@router.post("/keys/update")
async def update_key(body: KeyUpdate, keys: KeyIndexDep, admin: Admin) -> dict[str, Any]:
    require_owner(admin, "change key limits")
    return key_public(await keys.set_limits(body.key, body.limits(), actor=admin))
