"""Request-rate limits that protect the service itself: per client IP and per API key.

The algorithm is GCRA, the generic cell rate algorithm, in its virtual scheduling form (ITU-T
Recommendation I.371, *Traffic control and congestion control in B-ISDN*; the same algorithm as
the ATM Forum's UNI specification). A ``Limit(requests=n, per_seconds=p)`` gives each key an
emission interval ``T = p / n`` and a burst tolerance ``tau = (n - 1) * T``. The one value stored
per key is its theoretical arrival time (TAT): the moment the key's budget is whole again. A
request at ``now``, with ``tat = max(stored TAT or now, now)``, is

* refused if ``tat - tau > now``; it must wait ``tat - tau - now`` and the TAT is left alone,
  so refused requests never consume budget;
* allowed otherwise, and the TAT becomes ``tat + T``.

So a fresh key may send a burst of ``n`` requests at once, then one every ``T``; a client sending
exactly ``n`` per ``p`` seconds is never refused. It is the token bucket of capacity ``n`` and
refill rate ``n / p``, kept as one timestamp instead of a count and a time. Times are whole
microseconds (``T`` is rounded to the microsecond), so the arithmetic is exact and identical in
Python and in Redis's Lua (doubles hold integers exactly up to 2**53 µs, the year 2255).

``RedisRateLimiter`` shares the budgets between all nodes: the read, decision and write are one
Lua script, atomic in Redis, with ``now`` sent by the caller (so tests inject the clock, and nodes
should keep their clocks in sync with NTP: a node whose clock is ahead by ``d`` gives its keys
``d`` of extra budget). The key expires when its TAT passes, as its state is then equal to none.
If Redis is unreachable the limiter **fails open**: the request is allowed and a warning is
logged at most once every 30 seconds. These limits protect the service from load, not accounts
from guessing (that is the database-backed ``throttle`` module), so while Redis is down protection
degrades rather than every user being refused.

``InProcessRateLimiter`` keeps the same state in a dict under a lock, for a single node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from itertools import islice
from typing import Protocol

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sparekey.domain.errors import RateLimitedError
from sparekey.domain.ports import Clock

__all__ = [
    "Decision",
    "InProcessRateLimiter",
    "Limit",
    "RateLimiter",
    "RedisRateLimiter",
    "RequestGuard",
    "build_rate_limiter",
]

log = logging.getLogger("sparekey.ratelimit")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_WARN_EVERY_SECONDS = 30.0
_FIRST_SWEEP = 1024

# KEYS[1]: the key. ARGV: now, emission interval, burst tolerance, all in whole microseconds.
# Returns 0 when allowed (the new TAT stored, expiring when it passes), else the wait in µs.
_GCRA_LUA = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or ARGV[1]), now)
local wait = tat - tolerance - now
if wait > 0 then
  return wait
end
local new_tat = tat + interval
local ttl_ms = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
return 0
"""


@dataclass(frozen=True, kw_only=True)
class Limit:
    """At most ``requests`` per ``per_seconds``, of which all may come at once."""

    requests: int
    per_seconds: float

    def __post_init__(self) -> None:
        if self.requests < 1 or not self.per_seconds > 0:
            raise ValueError(f"a limit needs requests >= 1 and per_seconds > 0, not {self}")

    @cached_property
    def interval_us(self) -> int:
        """The emission interval ``T``, in whole microseconds (at least one)."""
        return max(1, timedelta(seconds=self.per_seconds / self.requests) // _MICROSECOND)

    @cached_property
    def tolerance_us(self) -> int:
        """The burst tolerance ``tau``: how far ahead of ``now`` the TAT may run (worked out
        once per limit, as the interval: every request asks for both)."""
        return self.interval_us * (self.requests - 1)


@dataclass(frozen=True, kw_only=True)
class Decision:
    """Whether a request may go ahead; if not, the seconds until the next one may (> 0)."""

    allowed: bool
    retry_after: float


_ALLOWED = Decision(allowed=True, retry_after=0.0)


class RateLimiter(Protocol):
    def hit(self, key: str, limit: Limit, *, now: datetime) -> Decision:
        """Count one request against ``key`` at ``now`` (timezone-aware) and decide on it.

        A refused request is not counted. ``key`` is stored as it is: never pass a secret
        (use an API key's id, not its token).
        """
        ...


class InProcessRateLimiter:
    """GCRA state in this process's memory: exact, thread-safe, no I/O.

    Memory is bounded: when the dict has doubled since the last sweep, keys whose TAT has passed
    (state equal to none) are dropped; if more than ``max_keys // 2`` are still live (a flood of
    distinct keys), the least recently allowed are forgotten too, which hands them a fresh budget.
    """

    def __init__(self, *, max_keys: int = 100_000) -> None:
        if max_keys < 2:
            raise ValueError("max_keys must be at least 2")
        self._max_keys = max_keys
        self._sweep_at = min(_FIRST_SWEEP, max_keys)
        self._tats: dict[str, int] = {}  # oldest allowed first
        self._lock = threading.Lock()

    def hit(self, key: str, limit: Limit, *, now: datetime) -> Decision:
        now_us = _micros(now)
        with self._lock:
            tat = max(self._tats.get(key, now_us), now_us)
            wait_us = tat - limit.tolerance_us - now_us
            if wait_us > 0:
                return _refused(wait_us)
            self._tats.pop(key, None)  # re-insert at the end: the dict stays in allowed order
            self._tats[key] = tat + limit.interval_us
            if len(self._tats) > self._sweep_at:
                self._sweep(now_us)
        return _ALLOWED

    def __len__(self) -> int:
        """How many keys this limiter holds state for (idle ones included until a sweep)."""
        with self._lock:
            return len(self._tats)

    def _sweep(self, now_us: int) -> None:
        live = {key: tat for key, tat in self._tats.items() if tat > now_us}
        keep = self._max_keys // 2
        if len(live) > keep:
            live = dict(islice(live.items(), len(live) - keep, None))
        self._tats = live
        self._sweep_at = min(max(2 * len(live), _FIRST_SWEEP), self._max_keys)


class RedisRateLimiter:
    """GCRA state in Redis, shared by every node: one atomic Lua script per request.

    Fails open: if Redis cannot be reached (connection error or timeout) the request is allowed
    and a warning logged, at most once per 30 seconds of ``monotonic`` time. Any other Redis error
    (a script or server error) is a bug or a misconfiguration and propagates.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "sparekey:rl:",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._script = client.register_script(_GCRA_LUA)
        self._prefix = prefix
        self._monotonic = monotonic
        self._warned_at: float | None = None
        self._warn_lock = threading.Lock()

    def hit(self, key: str, limit: Limit, *, now: datetime) -> Decision:
        args = [_micros(now), limit.interval_us, limit.tolerance_us]
        try:
            wait_us = int(self._script(keys=[self._prefix + key], args=args))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self._warn_unreachable(exc)
            return _ALLOWED
        return _refused(wait_us) if wait_us > 0 else _ALLOWED

    def _warn_unreachable(self, exc: Exception) -> None:
        at = self._monotonic()
        with self._warn_lock:
            if self._warned_at is not None and at - self._warned_at < _WARN_EVERY_SECONDS:
                return
            self._warned_at = at
        log.warning("Redis unreachable; request rate limits are not enforced: %s", exc)


def build_rate_limiter(redis_url: str | None) -> RateLimiter:
    """A limiter shared through Redis at ``redis_url``, or this process's own without one."""
    if not redis_url:
        return InProcessRateLimiter()
    client = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return RedisRateLimiter(client)


def _micros(now: datetime) -> int:
    """Whole microseconds since the Unix epoch; a naive ``now`` raises TypeError."""
    return (now - _EPOCH) // _MICROSECOND


def _refused(wait_us: int) -> Decision:
    return Decision(allowed=False, retry_after=wait_us / 1_000_000)


class RequestGuard:
    """The service's own limits: requests per API key, and verifications per end-user IP.

    Either limit may be None (off). Refusals raise :class:`RateLimitedError` (HTTP 429).
    """

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        clock: Clock,
        per_api_key: Limit | None,
        per_ip: Limit | None,
    ) -> None:
        self._limiter = limiter
        self._clock = clock
        self._per_api_key = per_api_key
        self._per_ip = per_ip

    def api_key(self, key_id: str) -> None:
        if self._per_api_key is not None:
            self._check(f"key:{key_id}", self._per_api_key, "API key")

    def ip(self, ip: str | None) -> None:
        if ip is not None and self._per_ip is not None:
            self._check(f"ip:{ip}", self._per_ip, "IP address")

    def _check(self, key: str, limit: Limit, what: str) -> None:
        decision = self._limiter.hit(key, limit, now=self._clock.now())
        if not decision.allowed:
            raise RateLimitedError(what, decision.retry_after)
