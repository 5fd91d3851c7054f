"""API keys, administered over HTTP (admin only): what ``pendra keys create/revoke`` call on the
running control plane.

``POST /keys`` makes a key and returns it once (``key``, with ``Cache-Control: no-store``);
``POST /keys/revoke`` revokes the key named in the body by its id, prefix or raw value (revoking
twice is not an error; the name is in the body, not the path, so a raw key never reaches an
access log). Both go through the app's key index (server/key_index.py), so the change counts on
the very next request to this control plane; the answer comes after the store has it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from pendra.server.admin_auth import Admin
from pendra.server.deps import KeyIndexDep
from pendra.server.store.tables import NAME_MAX_CHARS, ApiKey

router = APIRouter(tags=["keys"])
# A bound on the body only: ``clean_name`` (store/tables.py) holds the rule for names, after trimming.
NAME_FIELD_MAX_CHARS = 4 * NAME_MAX_CHARS
# A raw key, the longest way to name one, is 50 characters; ids and prefixes are shorter.
KEY_REF_MAX_CHARS = 200


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=NAME_FIELD_MAX_CHARS, description="What the key is for")


class KeyRevoke(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=KEY_REF_MAX_CHARS,
                     description="The key's id, its prefix (as listed), or the key itself")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def key_public(row: ApiKey) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "prefix": row.prefix,
            "created_at": _iso(row.created_at), "revoked_at": _iso(row.revoked_at)}


@router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, keys: KeyIndexDep, response: Response,
                     _: Admin) -> dict[str, Any]:
    row, raw = await keys.create(body.name)
    response.headers["Cache-Control"] = "no-store"
    return key_public(row) | {"key": raw}


@router.post("/keys/revoke")
async def revoke_key(body: KeyRevoke, keys: KeyIndexDep, _: Admin) -> dict[str, Any]:
    return key_public(await keys.revoke(body.key))
