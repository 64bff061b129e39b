"""A minimal asyncio HTTP/1.1 keep-alive client and a bounded, closed-loop load runner.

Kept deliberately small so that the client costs little CPU next to the server it measures on the
same machine: a request is one pre-encoded ``bytes`` written in one call, and a response is read by
its ``Content-Length`` (or chunked encoding). Nothing else of HTTP is implemented.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Connection",
    "LoadStats",
    "Response",
    "Verdict",
    "build_request",
    "is_verified",
    "percentile",
    "positive_ints",
    "run_load",
]

HOST = "127.0.0.1"
REQUEST_TIMEOUT_SECONDS = 30.0
_ERROR_SAMPLES = 5

RequestSource = Callable[[], bytes]
"""Returns the next request of one worker, fully encoded."""

Verdict = Callable[["Response"], bool]
"""Whether a 200 answer says the code was verified; each server says it its own way."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def build_request(
    method: str, port: int, path: str, *, headers: Mapping[str, str], body: bytes = b""
) -> bytes:
    """One HTTP/1.1 request to ``HOST:port``, ready to write to a socket."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    if not version.startswith("HTTP/1."):
        raise ConnectionError(f"not an HTTP/1.x response: {status_line!r}")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are expected
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    """The next response on ``reader``, and whether the connection stays open after it."""
    status, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Response(status, body), headers.get("connection", "").lower() != "close"


class Connection:
    """One keep-alive connection to ``HOST:port``; it reconnects after the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(HOST, self.port)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def send(self, request: bytes) -> Response:
        """Write ``request`` and read its response; on any failure the connection is dropped."""
        if self._writer is None:
            await self.connect()
        assert self._reader is not None
        assert self._writer is not None
        try:
            self._writer.write(request)
            response, keep_alive = await _read_response(self._reader)
        except BaseException:  # also a timeout's cancellation: the stream is mid-response
            await self.close()
            raise
        if not keep_alive:
            await self.close()
        return response


@dataclass(slots=True)
class LoadStats:
    """What one bounded run observed."""

    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    verified: int = 0
    failures: int = 0
    samples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.failures

    @property
    def errors(self) -> int:
        """Requests that failed in transport or were not answered 200."""
        return self.failures + sum(n for status, n in self.statuses.items() if status != 200)

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    def record(self, seconds: float, response: Response, verdict: Verdict | None = None) -> None:
        self.latencies.append(seconds)
        self.statuses[response.status] += 1
        if response.status != 200:
            self._sample(f"HTTP {response.status}: {response.body[:300]!r}")
        elif (verdict or is_verified)(response):
            self.verified += 1

    def _sample(self, text: str) -> None:
        if len(self.samples) < _ERROR_SAMPLES:
            self.samples.append(text)

    def fail(self, exc: BaseException) -> None:
        self.failures += 1
        self._sample(f"{type(exc).__name__}: {exc}")


def is_verified(response: Response) -> bool:
    """Whether a 200 answer is Sparekey's ``{"verified": true, ...}``; a body that is not JSON is
    not."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("verified") is True


class _Budget:
    """The shared bound of a run: at most ``requests`` started, none after ``seconds``."""

    def __init__(self, requests: int, seconds: float) -> None:
        self._left = requests
        self._deadline = time.perf_counter() + seconds

    def take(self) -> bool:
        if self._left <= 0 or time.perf_counter() >= self._deadline:
            return False
        self._left -= 1
        return True


async def _worker(
    connection: Connection,
    source: RequestSource,
    budget: _Budget,
    stats: LoadStats,
    verdict: Verdict | None,
) -> None:
    while budget.take():
        request = source()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                response = await connection.send(request)
        except (OSError, EOFError, ValueError, TimeoutError) as exc:
            stats.fail(exc)  # IncompleteReadError is an EOFError, ConnectionError an OSError
            continue
        stats.record(time.perf_counter() - started, response, verdict)


async def run_load(
    connections: Sequence[Connection],
    sources: Sequence[RequestSource],
    *,
    max_requests: int,
    max_seconds: float,
    verdict: Verdict | None = None,
) -> LoadStats:
    """Closed loop: worker i sends ``sources[i]()`` on ``connections[i]``, one at a time.

    The run ends when ``max_requests`` have been started or ``max_seconds`` have passed; requests
    in flight at the deadline are completed and counted. ``verdict`` tells a verified answer
    (Sparekey's ``{"verified": true}`` by default).
    """
    if len(connections) != len(sources):
        raise ValueError("one request source per connection")
    budget = _Budget(max_requests, max_seconds)
    stats = LoadStats()
    started = time.perf_counter()
    await asyncio.gather(
        *(_worker(c, s, budget, stats, verdict) for c, s in zip(connections, sources, strict=True))
    )
    stats.elapsed = time.perf_counter() - started
    return stats


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence; NaN when it is empty."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(fraction * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def positive_ints(text: str) -> tuple[int, ...]:
    """``--concurrency 1,8,32`` and the like, as an argparse ``type``."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"takes positive integers, like 1,8,32, not {text!r}")
    return values
