"""Ed25519 keys and the handshake signature of /ws/gpu.

Rules:
- The control plane stores only a worker's public key; the private key lives on the worker host.
  Both travel as standard base64 of their raw 32 bytes (the private key is the Ed25519 seed).
- What a worker signs is domain-separated: ``b"pendra-ws-v1\\0" + nonce + b"\\0" + worker_id``, so
  a signature made for this handshake is worthless anywhere else, and it names the worker, so it
  cannot be presented under another id. The nonce is fresh per connection (``new_nonce``), so a
  hello captured on one connection is refused on the next.
- ``verify`` never raises: any malformed key or signature is simply ``False``. A malformed *private*
  key is the operator's configuration, so it raises ``ConfigError`` saying what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pendra.errors import ConfigError

_RAW = serialization.Encoding.Raw
DOMAIN = b"pendra-ws-v1"
KEY_BYTES = 32
NONCE_BYTES = 32


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional; ValueError for anything else."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    text = text.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded.encode("ascii"))
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not base64") from exc


def _private(private_b64: str) -> Ed25519PrivateKey:
    try:
        raw = _b64decode(private_b64)
    except ValueError as exc:
        raise ConfigError("the worker private key (GPU_WORKER_PRIVATE_KEY) is not valid base64; "
                          "copy it again from `pendra workers add`") from exc
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"the worker private key (GPU_WORKER_PRIVATE_KEY) must decode to "
                          f"{KEY_BYTES} bytes of Ed25519 seed, not {len(raw)}; copy it again from "
                          "`pendra workers add`")
    return Ed25519PrivateKey.from_private_bytes(raw)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def generate_keypair() -> tuple[str, str]:
    """A new key pair as (base64 private seed, base64 public key)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return _b64(private), _b64(key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw))


def public_key_of(private_b64: str) -> str:
    """The base64 public key of a base64 private key (ConfigError if the private key is bad)."""
    return _b64(_private(private_b64).public_key().public_bytes(_RAW, serialization.PublicFormat.Raw))


def new_nonce() -> str:
    """A fresh single-use challenge: 32 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(NONCE_BYTES)).decode("ascii").rstrip("=")


def handshake_message(nonce: str, worker_id: str) -> bytes:
    """Exactly the bytes a worker signs to answer ``nonce`` as ``worker_id``."""
    return DOMAIN + b"\0" + nonce.encode("utf-8") + b"\0" + worker_id.encode("utf-8")


def sign(private_b64: str, message: bytes) -> str:
    """Base64 Ed25519 signature of ``message`` (ConfigError if the private key is bad)."""
    return _b64(_private(private_b64).sign(message))


def verify(public_b64: str, message: bytes, signature_b64: str) -> bool:
    """True only for a valid signature; any malformed input is simply False."""
    try:
        public = Ed25519PublicKey.from_public_bytes(_b64decode(public_b64))
        public.verify(_b64decode(signature_b64), message)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
