"""Request-rate limits: the same behaviour in process and through Redis, on an injected clock.

The Redis tests use the server on 127.0.0.1:6379 (database 0), each under a random key prefix of
its own that is deleted afterwards. An unreachable server fails the test: CI always runs one.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from sparekey.services.ratelimit import (
    Decision,
    InProcessRateLimiter,
    Limit,
    RateLimiter,
    RedisRateLimiter,
    build_rate_limiter,
)
from tests.helpers import race

REDIS_URL = "redis://127.0.0.1:6379/0"
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
START = datetime(2026, 1, 1, tzinfo=UTC)
ALLOWED = Decision(allowed=True, retry_after=0.0)


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = _client(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:  # the server is part of the test environment
        client.close()
        pytest.fail(f"Redis at {REDIS_URL} is not reachable (start redis-server): {exc}")
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = f"sparekey-test:rl:{secrets.token_hex(8)}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(params=["in_process", "redis"])
def limiter(request: pytest.FixtureRequest) -> RateLimiter:
    if request.param == "in_process":
        return InProcessRateLimiter()
    client: redis.Redis = request.getfixturevalue("redis_client")
    return RedisRateLimiter(client, prefix=request.getfixturevalue("prefix"))


def hits(
    limiter: RateLimiter, limit: Limit, *, count: int, at: datetime, key: str = "k"
) -> list[Decision]:
    return [limiter.hit(key, limit, now=at) for _ in range(count)]


def test_a_burst_of_requests_is_allowed_then_refused_for_one_interval(
    limiter: RateLimiter,
) -> None:
    limit = Limit(requests=5, per_seconds=10)
    assert hits(limiter, limit, count=5, at=START) == [ALLOWED] * 5
    assert limiter.hit("k", limit, now=START) == Decision(allowed=False, retry_after=2.0)
    later = START + timedelta(seconds=0.5)
    assert limiter.hit("k", limit, now=later) == Decision(allowed=False, retry_after=1.5)


def test_the_request_after_retry_after_is_allowed_and_not_one_microsecond_sooner(
    limiter: RateLimiter,
) -> None:
    limit = Limit(requests=3, per_seconds=1)  # an interval of 333333 µs
    hits(limiter, limit, count=3, at=START)
    refused = limiter.hit("k", limit, now=START)
    assert refused == Decision(allowed=False, retry_after=0.333333)
    ready = START + timedelta(seconds=refused.retry_after)
    early = ready - timedelta(microseconds=1)
    assert limiter.hit("k", limit, now=early) == Decision(allowed=False, retry_after=0.000001)
    assert limiter.hit("k", limit, now=ready) == ALLOWED
    assert not limiter.hit("k", limit, now=ready).allowed


def test_refused_requests_do_not_consume_budget(limiter: RateLimiter) -> None:
    limit = Limit(requests=2, per_seconds=60)  # one every 30 s
    assert hits(limiter, limit, count=2, at=START) == [ALLOWED] * 2
    hammering = [START + timedelta(seconds=0.25 * i) for i in range(120)]  # 0 to 29.75 s
    refusals = [limiter.hit("k", limit, now=at) for at in hammering]
    assert not any(decision.allowed for decision in refusals)
    assert refusals[-1] == Decision(allowed=False, retry_after=0.25)
    after_one_interval = START + timedelta(seconds=30)
    assert limiter.hit("k", limit, now=after_one_interval) == ALLOWED
    assert not limiter.hit("k", limit, now=after_one_interval).allowed


def test_a_steady_rate_at_the_limit_is_always_allowed_and_keeps_the_burst(
    limiter: RateLimiter,
) -> None:
    limit = Limit(requests=10, per_seconds=1)
    at = START
    for _ in range(300):
        at += timedelta(seconds=0.1)
        assert limiter.hit("k", limit, now=at) == ALLOWED
    burst = hits(limiter, limit, count=10, at=at)
    assert [d.allowed for d in burst] == [True] * 9 + [False]


def test_a_rate_just_above_the_limit_is_refused_once_the_burst_is_spent(
    limiter: RateLimiter,
) -> None:
    limit = Limit(requests=10, per_seconds=1)  # every 0.09 s runs 0.01 s ahead; tau is 0.9 s
    decisions = [
        limiter.hit("k", limit, now=START + timedelta(seconds=0.09 * i)) for i in range(100)
    ]
    first_refused = next(i for i, d in enumerate(decisions) if not d.allowed)
    assert first_refused == 91
    assert decisions[91] == Decision(allowed=False, retry_after=0.01)


def test_keys_are_independent(limiter: RateLimiter) -> None:
    limit = Limit(requests=2, per_seconds=60)
    assert hits(limiter, limit, count=3, at=START, key="ip:192.0.2.1") == [
        ALLOWED,
        ALLOWED,
        Decision(allowed=False, retry_after=30.0),
    ]
    assert hits(limiter, limit, count=2, at=START, key="ip:192.0.2.2") == [ALLOWED] * 2
    assert hits(limiter, limit, count=2, at=START, key="api-key:abc") == [ALLOWED] * 2


def test_fifty_threads_at_one_instant_get_exactly_the_limit(limiter: RateLimiter) -> None:
    limit = Limit(requests=10, per_seconds=60)
    decisions = race(lambda: limiter.hit("k", limit, now=START), threads=50)
    assert sum(d.allowed for d in decisions) == 10
    refused = [d for d in decisions if not d.allowed]
    assert refused == [Decision(allowed=False, retry_after=6.0)] * 40


def test_a_naive_now_is_refused(limiter: RateLimiter) -> None:
    with pytest.raises(TypeError):
        limiter.hit("k", Limit(requests=1, per_seconds=1), now=datetime(2026, 1, 1))


@pytest.mark.parametrize(("requests", "per_seconds"), [(0, 1), (-1, 1), (1, 0), (1, -5)])
def test_a_limit_needs_positive_requests_and_period(requests: int, per_seconds: float) -> None:
    with pytest.raises(ValueError, match="requests >= 1 and per_seconds > 0"):
        Limit(requests=requests, per_seconds=per_seconds)


# Redis only, and the builder


def test_two_nodes_share_one_budget(redis_client: redis.Redis, prefix: str) -> None:
    node_a = RedisRateLimiter(redis_client, prefix=prefix)
    other_client = _client(REDIS_URL)
    try:
        node_b = RedisRateLimiter(other_client, prefix=prefix)
        limit = Limit(requests=4, per_seconds=60)
        assert hits(node_a, limit, count=2, at=START) == [ALLOWED] * 2
        assert hits(node_b, limit, count=2, at=START) == [ALLOWED] * 2
        assert node_a.hit("k", limit, now=START) == Decision(allowed=False, retry_after=15.0)
        assert node_b.hit("k", limit, now=START) == Decision(allowed=False, retry_after=15.0)
        assert node_b.hit("k", limit, now=START + timedelta(seconds=15)) == ALLOWED
        assert not node_a.hit("k", limit, now=START + timedelta(seconds=15)).allowed
    finally:
        other_client.close()


def test_redis_state_is_one_timestamp_under_the_prefix_expiring_when_the_budget_is_whole(
    redis_client: redis.Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_client, prefix=prefix)
    limit = Limit(requests=5, per_seconds=10)
    hits(limiter, limit, count=5, at=START)
    assert list(redis_client.scan_iter(match=f"{prefix}*")) == [f"{prefix}k".encode()]
    tat = START + timedelta(seconds=10)  # the budget is whole again 10 s from now
    assert redis_client.get(f"{prefix}k") == str(int(tat.timestamp()) * 1_000_000).encode()
    assert 9_000 < redis_client.pttl(f"{prefix}k") <= 10_000


def test_an_unreachable_redis_fails_open_at_once() -> None:
    limiter = build_rate_limiter(DEAD_REDIS_URL)
    assert isinstance(limiter, RedisRateLimiter)
    limit = Limit(requests=1, per_seconds=60)
    started = time.monotonic()
    decisions = hits(limiter, limit, count=3, at=START)
    elapsed = time.monotonic() - started
    assert decisions == [ALLOWED] * 3  # over the limit, but nothing to count it in
    assert elapsed < 2.0, f"three refused connections took {elapsed:.2f} s"


def test_an_unreachable_redis_is_reported_at_most_every_30_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monotonic = [1000.0]
    client = _client(DEAD_REDIS_URL)
    limiter = RedisRateLimiter(client, monotonic=lambda: monotonic[0])
    limit = Limit(requests=1, per_seconds=60)

    def warnings_after(seconds: float) -> int:
        monotonic[0] = 1000.0 + seconds
        assert limiter.hit("k", limit, now=START) == ALLOWED
        return len([r for r in caplog.records if r.name == "sparekey.ratelimit"])

    with caplog.at_level(logging.WARNING, logger="sparekey.ratelimit"):
        assert [warnings_after(s) for s in (0, 0, 10, 29.9, 30, 45, 60)] == [1, 1, 1, 1, 2, 2, 3]
    client.close()
    assert "Redis unreachable" in caplog.records[0].getMessage()
    assert caplog.records[0].levelno == logging.WARNING


def test_build_rate_limiter_without_a_url_keeps_budgets_in_process() -> None:
    assert isinstance(build_rate_limiter(None), InProcessRateLimiter)
    assert isinstance(build_rate_limiter(""), InProcessRateLimiter)


# In process only


def test_in_process_forgets_keys_whose_budget_is_whole_again() -> None:
    limiter = InProcessRateLimiter(max_keys=100)
    limit = Limit(requests=1, per_seconds=1)
    for i in range(60):
        limiter.hit(f"old-{i}", limit, now=START)
    assert len(limiter) == 60
    later = START + timedelta(seconds=1)  # every old key's TAT has passed
    for i in range(41):
        limiter.hit(f"new-{i}", limit, now=later)
    assert len(limiter) == 41  # the 101st key swept the 60 idle ones
    assert not limiter.hit("new-0", limit, now=later).allowed  # live state survives a sweep


def test_in_process_stays_bounded_under_a_flood_of_distinct_keys() -> None:
    limiter = InProcessRateLimiter(max_keys=100)
    limit = Limit(requests=1, per_seconds=60)
    sizes: list[int] = []
    for i in range(1000):
        assert limiter.hit(f"ip:{i}", limit, now=START) == ALLOWED
        sizes.append(len(limiter))
    assert max(sizes) <= 100
    assert min(sizes[100:]) >= 50  # keeps at least the 50 most recently allowed
    assert not limiter.hit("ip:999", limit, now=START).allowed
    assert limiter.hit("ip:0", limit, now=START) == ALLOWED  # forgotten: a fresh budget


def test_in_process_needs_room_for_two_keys() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        InProcessRateLimiter(max_keys=1)
