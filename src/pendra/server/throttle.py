"""How often anyone may try the admin password: per client address, and in total.

Rules:
- Every attempt (the sign-in form, and the current password in a password change) takes a token
  from its address's bucket and one from the global bucket *before* any password is hashed, in
  the same step, so parallel attempts cannot slip past a check that is still waiting. An attempt
  with either bucket empty is refused at once with ``SignInThrottled`` (429, ``Retry-After``),
  costs no password hashing and no database work, and takes no token from the other bucket.
- An address may try a burst of ``per_address_per_minute`` attempts (config
  ``sign_in_attempts_per_address_per_minute``), then that many a minute;
  everyone together a burst of ``GLOBAL_BURST_S`` seconds' worth, then ``global_per_second``
  (``sign_in_attempts_per_second``).
  Success earns nothing back: the limits are far above what a person types.
- Addresses live in a table of at most ``TABLE_MAX`` buckets (least recently used leave first, so
  a flood of addresses cannot grow memory; each is still held by the global bucket).
- Refusals are logged once per run of refusals (per address, and for the global bucket), so a
  flood cannot flood the log; addresses are clipped to ``ADDRESS_LOG_CHARS``.
- The clock is passed in (``now``, monotonic seconds): this module does no I/O.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict

from pendra.config import SIGN_IN_PER_ADDRESS_PER_MINUTE, SIGN_IN_PER_SECOND
from pendra.errors import PendraError

log = logging.getLogger(__name__)

# The global bucket holds this many seconds of attempts, for a burst of honest sign-ins.
GLOBAL_BURST_S = 5.0
# Addresses remembered at once; beyond this the least recently seen is forgotten.
TABLE_MAX = 4096
ADDRESS_LOG_CHARS = 64


class SignInThrottled(PendraError):
    """Too many password attempts from this address, or from everyone; try again later."""

    status = 429
    kind = "rate_limit_error"


def clip_address(client: str) -> str:
    return client if len(client) <= ADDRESS_LOG_CHARS else client[: ADDRESS_LOG_CHARS - 1] + "…"


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate_per_s``; an attempt takes one."""

    __slots__ = ("capacity", "rate_per_s", "tokens", "updated", "refusals")

    def __init__(self, capacity: float, rate_per_s: float, now: float) -> None:
        self.capacity, self.rate_per_s = capacity, rate_per_s
        self.tokens, self.updated = capacity, now
        self.refusals = 0  # refused attempts since the last admitted one

    def wait_s(self, now: float) -> float:
        """Seconds until a token is there (0 if one is there now); refills first."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate_per_s

    def take(self) -> None:
        self.tokens -= 1
        self.refusals = 0


class SignInThrottle:
    """The per-address and global buckets of one app."""

    def __init__(self, *, per_address_per_minute: float = SIGN_IN_PER_ADDRESS_PER_MINUTE,
                 global_per_second: float = SIGN_IN_PER_SECOND, table_max: int = TABLE_MAX,
                 now: float = 0.0) -> None:
        self._address_capacity = max(1.0, float(per_address_per_minute))
        self._address_rate = max(1.0, float(per_address_per_minute)) / 60
        self._global = TokenBucket(max(1.0, global_per_second * GLOBAL_BURST_S),
                                   max(0.01, global_per_second), now)
        self._addresses: OrderedDict[str, TokenBucket] = OrderedDict()
        self._table_max = table_max

    def _bucket(self, client: str, now: float) -> TokenBucket:
        bucket = self._addresses.pop(client, None)
        if bucket is None:
            bucket = TokenBucket(self._address_capacity, self._address_rate, now)
        self._addresses[client] = bucket
        while len(self._addresses) > self._table_max:
            self._addresses.popitem(last=False)
        return bucket

    def admit(self, client: str, now: float) -> None:
        """Count one password attempt from ``client``; SignInThrottled if it must wait."""
        bucket = self._bucket(client, now)
        own_wait, global_wait = bucket.wait_s(now), self._global.wait_s(now)
        if own_wait > 0:
            bucket.refusals += 1
            if bucket.refusals == 1:
                log.warning("throttling console sign-in attempts from %s (more than %.0f a "
                            "minute)", clip_address(client), self._address_capacity)
            raise SignInThrottled("too many sign-in attempts from this address; try again in "
                                  f"{math.ceil(own_wait)} s", retry_after_s=math.ceil(own_wait))
        if global_wait > 0:
            self._global.refusals += 1
            if self._global.refusals == 1:
                log.warning("throttling console sign-in attempts from everyone (more than %.1f "
                            "a second); the latest from %s", self._global.rate_per_s,
                            clip_address(client))
            raise SignInThrottled("too many sign-in attempts right now; try again in "
                                  f"{math.ceil(global_wait)} s",
                                  retry_after_s=math.ceil(global_wait))
        bucket.take()
        self._global.take()
