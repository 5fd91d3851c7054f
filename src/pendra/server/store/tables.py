"""The store's schema: one declarative model per table.

Rules:
- Every timestamp is a timezone-aware UTC ``datetime`` in Python. ``UTCDateTime`` stores it as
  ``timestamptz`` on PostgreSQL and as a naive UTC string on SQLite, and hands back aware UTC values
  on both; a naive ``datetime`` is refused rather than guessed at.
- Constraint names come from ``NAMING_CONVENTION`` so migrations can name (and later drop) them on
  every backend.
- ``usage`` never holds prompt or completion content: only counts, names, timings and status.
  ``stored_responses`` is the one table that holds content (a client asked for it with the
  Responses API's ``store``), each row until its ``expires_at`` (see store/responses.py).
- This file and ``migrations/versions`` must agree; a test compares them on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, Dialect, ForeignKey, Index, Integer,
                        MetaData, String, Text, TypeDecorator)
from sqlalchemy import DateTime as _DateTime
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pendra.errors import InvalidRequest

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Usage kinds: one per request kind, and one per API dialect answered through chat ("responses",
# "messages", and "count_tokens" for Anthropic's token counting).
USAGE_KINDS = frozenset({"chat", "completions", "embed", "image", "transcribe", "responses",
                         "messages", "count_tokens"})
# How people read a usage kind (the console and `pendra usage`): the API or dialect it came in by.
# An unknown kind shows as it is.
USAGE_KIND_LABELS = {"chat": "Chat completions", "completions": "Completions",
                     "messages": "Anthropic Messages", "count_tokens": "Anthropic token counts",
                     "responses": "Responses", "embed": "Embeddings", "image": "Images",
                     "transcribe": "Transcriptions"}


def usage_kind_label(kind: str | None) -> str:
    """``USAGE_KIND_LABELS``' name for ``kind`` (the kind itself when it has none)."""
    return USAGE_KIND_LABELS.get(kind or "", kind or "")
INSTALL_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
INSTALL_ACTIVE_STATES = ("queued", "running")
# Row ids: 64 bits of randomness is plenty for tables of thousands of rows, and short to type.
ID_MAX_CHARS = 40
NAME_MAX_CHARS = 100
# Ollama tags and OpenAI model names are short; anything longer is clipped before it is stored.
MODEL_MAX_CHARS = 200
REQUEST_ID_MAX_CHARS = 100
# Console session ids are 16 random bytes, 22 characters in base64url; room to grow.
SESSION_ID_MAX_CHARS = 64
# Usage errors are a one-line reason for the operator, not a stack trace.
USAGE_ERROR_MAX_CHARS = 500
# Console users' roles (server/roles.py says what each may do).
ROLES = ("owner", "member")
# Audit rows: who did it (a user's name, "admin token", "cli"), from where, to what.
AUDIT_ACTOR_MAX_CHARS = NAME_MAX_CHARS + 20
AUDIT_ADDRESS_MAX_CHARS = 64
AUDIT_ACTION_MAX_CHARS = 40
AUDIT_TARGET_MAX_CHARS = 200
AUDIT_DETAIL_MAX_CHARS = 500

# SQLite only auto-increments an ``INTEGER PRIMARY KEY``; PostgreSQL gets a 64-bit identity.
_ROW_ID = BigInteger().with_variant(Integer(), "sqlite")


def clean_name(name: str, what: str) -> str:
    """A name people give a thing (a key, a worker): trimmed, 1 to NAME_MAX_CHARS printable
    characters (it is shown in the console, the CLI and headers); InvalidRequest otherwise."""
    name = name.strip()
    if not name:
        raise InvalidRequest(f"a {what} needs a name")
    if len(name) > NAME_MAX_CHARS:
        raise InvalidRequest(f"a {what} name is at most {NAME_MAX_CHARS} characters")
    if not name.isprintable():
        raise InvalidRequest(f"a {what} name may not contain control characters")
    return name


def utcnow() -> datetime:
    """Now, as the store keeps time: aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC ``datetime`` on both backends (SQLite has no time zones, so it stores UTC)."""

    impl = _DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store only takes aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ApiKey(Base):
    """A client API key. Only its SHA-256 is kept; ``prefix`` lets people tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(ID_MAX_CHARS), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    prefix: Mapped[str] = mapped_column(String(12))
    hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Limits (server/limits.py): NULL is "the organisation's default", 0 "no limit".
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(BigInteger)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    monthly_tokens: Mapped[int | None] = mapped_column(BigInteger)
    models: Mapped[str | None] = mapped_column(Text)  # a JSON list of ids and patterns
    # When the limits last changed (the key index's version check watches it).
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Whose key it is (a console user). NULL only for a key made before any user existed (a tool
    # seeding an empty store); the first owner adopts those when it is created (store/users.py).
    user_id: Mapped[str | None] = mapped_column(
        String(ID_MAX_CHARS), ForeignKey("users.id", ondelete="RESTRICT"), index=True)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class Worker(Base):
    """An enrolled GPU worker; it proves who it is by signing with its private key."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(ID_MAX_CHARS), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_CHARS), unique=True)
    public_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Usage(Base):
    """One row per API request; ``worker_id`` has no foreign key so removed workers keep history."""

    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_MAX_CHARS))
    key_id: Mapped[str | None] = mapped_column(
        String(ID_MAX_CHARS), ForeignKey("api_keys.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    model_requested: Mapped[str] = mapped_column(String(MODEL_MAX_CHARS))
    model_served: Mapped[str | None] = mapped_column(String(MODEL_MAX_CHARS))
    worker_id: Mapped[str | None] = mapped_column(String(ID_MAX_CHARS))
    worker_name: Mapped[str | None] = mapped_column(String(NAME_MAX_CHARS))
    status: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(String(USAGE_ERROR_MAX_CHARS))


class User(Base):
    """A console user: a name (an email or a name) and a password, an ``owner`` or a ``member``
    (server/roles.py). A disabled user (``disabled_at``) cannot sign in and their sessions end."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('owner', 'member')", name="role"),)

    id: Mapped[str] = mapped_column(String(ID_MAX_CHARS), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_CHARS), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    # Set for a password someone else chose (an invite, a reset): the console asks for a new one.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


class Audit(Base):
    """Who changed what, when, from where: one row per administrative change, written in the
    change's own transaction (store/audit.py). Never prompt content, never secrets."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # The user's id when a console user did it; NULL for the admin token or the CLI.
    user_id: Mapped[str | None] = mapped_column(String(ID_MAX_CHARS))
    actor: Mapped[str] = mapped_column(String(AUDIT_ACTOR_MAX_CHARS))
    address: Mapped[str] = mapped_column(String(AUDIT_ADDRESS_MAX_CHARS), default="")
    action: Mapped[str] = mapped_column(String(AUDIT_ACTION_MAX_CHARS))
    target: Mapped[str] = mapped_column(String(AUDIT_TARGET_MAX_CHARS), default="")
    detail: Mapped[str] = mapped_column(String(AUDIT_DETAIL_MAX_CHARS), default="")


class RevokedSession(Base):
    """A console session signed out before it expired; kept until then, so sign-out survives a
    restart (the cookie itself stays valid until ``expires_at``)."""

    __tablename__ = "revoked_sessions"

    sid: Mapped[str] = mapped_column(String(SESSION_ID_MAX_CHARS), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Install(Base):
    """A model install on a worker, from request to its end (see ``pendra.server.installs``)."""

    __tablename__ = "installs"
    __table_args__ = (
        CheckConstraint("state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
                        name="state"),
        Index("ix_installs_worker_id_model_tag_state", "worker_id", "model_tag", "state"),
    )

    id: Mapped[str] = mapped_column(String(ID_MAX_CHARS), primary_key=True)
    catalogue_id: Mapped[str] = mapped_column(String(MODEL_MAX_CHARS))
    variant: Mapped[str] = mapped_column(String(MODEL_MAX_CHARS))
    model_tag: Mapped[str] = mapped_column(String(MODEL_MAX_CHARS))
    backend: Mapped[str] = mapped_column(String(32))
    worker_id: Mapped[str] = mapped_column(String(ID_MAX_CHARS))
    state: Mapped[str] = mapped_column(String(16))
    status_text: Mapped[str] = mapped_column(String(200), default="")
    completed: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(NAME_MAX_CHARS), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StoredResponse(Base):
    """A Responses API answer kept for ``previous_response_id`` and ``GET /responses/{id}``: the
    whole conversation that led to it (``input_items``, JSON) and the response object
    (``response``, JSON). It belongs to the API key that created it; it goes with that key."""

    __tablename__ = "stored_responses"

    id: Mapped[str] = mapped_column(String(ID_MAX_CHARS), primary_key=True)
    key_id: Mapped[str] = mapped_column(
        String(ID_MAX_CHARS), ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(MODEL_MAX_CHARS))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    input_items: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text)
