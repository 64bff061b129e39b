"""The comparison benchmark's C load client (bench/loadclient.c, driven by bench/nativeload.py).

Its figures are the issue's evidence, so what it counts is checked against a small server whose
answers are known: every request sent once and in order per connection, each answer's status and
body, a server that closes after each answer (as gunicorn's sync workers do), one that hangs up
mid-answer, the request bound, and the accounts wound back to exactly what was sent.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))

from loadgen import LoadStats, RequestSource, Response, build_request
from nativeload import run_native

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")


@dataclass
class Seen:
    requests: list[bytes]


@asynccontextmanager
async def server(mode: str) -> AsyncIterator[tuple[int, Seen]]:
    """Answers ``POST /n`` with status 200 + n % 2 * 201... : body ``n``; ``mode`` "close" closes
    after every answer, "hangup" drops the connection instead of answering request 3."""
    seen = Seen([])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                seen.requests.append(body)
                n = int(body)
                if mode == "hangup" and n == 3:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
                    await writer.drain()
                    break
                status = 404 if n % 5 == 4 else 200
                answer = f"answer {n}".encode()
                closing = b"Connection: close\r\n" if mode == "close" else b""
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s"
                    % (status, len(answer), closing, answer)
                )
                await writer.drain()
                if mode == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield port, seen
    finally:
        listener.close()
        await listener.wait_closed()


@dataclass
class Account:
    next_counter: int = 0


def counting_sources(port: int, accounts: Sequence[Account]) -> Callable[[], list[RequestSource]]:
    """One source per account: request bodies are the account's counter, then it advances."""

    def make() -> list[RequestSource]:
        def source(account: Account) -> RequestSource:
            def next_request() -> bytes:
                body = str(account.next_counter).encode()
                account.next_counter += 1
                return build_request("POST", port, "/n", headers={}, body=body)

            return next_request

        return [source(a) for a in accounts]

    return make


def verdict(response: Response) -> bool:
    return response.body.startswith(b"answer")


@pytest.mark.parametrize("mode", ["keep-alive", "close"])
def test_every_request_once_in_order_with_its_answer(mode: str) -> None:
    accounts = [Account(0), Account(1000)]

    async def run() -> tuple[LoadStats, Seen]:
        async with server(mode) as (port, seen):
            stats = await run_native(
                [port, port],
                counting_sources(port, accounts),
                accounts,
                max_requests=40,
                max_seconds=30,
                verdict=verdict,
            )
        return stats, seen

    stats, seen = asyncio.run(run())
    assert stats.requests == 40
    assert stats.failures == 0
    first = [int(b) for b in seen.requests if int(b) < 1000]
    second = [int(b) for b in seen.requests if int(b) >= 1000]
    assert first == list(range(len(first)))
    assert second == list(range(1000, 1000 + len(second)))
    assert len(first) + len(second) == 40
    # wound back to what was sent, not to the longer lists built beforehand
    assert [a.next_counter for a in accounts] == [len(first), 1000 + len(second)]
    not_found = sum(1 for n in first + second if n % 5 == 4)
    assert stats.statuses == {200: 40 - not_found, 404: not_found}
    assert stats.verified == 40 - not_found
    assert len(stats.latencies) == 40
    assert all(0 < s < 30 for s in stats.latencies)
    assert stats.elapsed > 0


def test_a_hangup_mid_answer_is_a_failure_and_the_client_reconnects() -> None:
    accounts = [Account(0)]

    async def run() -> tuple[LoadStats, Seen]:
        async with server("hangup") as (port, seen):
            stats = await run_native(
                [port], counting_sources(port, accounts), accounts, max_requests=6, max_seconds=30
            )
        return stats, seen

    stats, seen = asyncio.run(run())
    assert [int(b) for b in seen.requests] == [0, 1, 2, 3, 4, 5]
    assert stats.failures == 1
    assert stats.samples[0] == "ConnectionError: the server closed the connection mid-answer"
    assert stats.statuses == {200: 4, 404: 1}  # request 4 is answered 404
    assert stats.requests == 6
    assert accounts[0].next_counter == 6


def test_the_start_callback_runs_before_the_first_request() -> None:
    accounts = [Account(0)]
    at_start: list[int] = []
    stopped: list[float] = []

    async def run() -> None:
        async with server("keep-alive") as (port, seen):
            await run_native(
                [port],
                counting_sources(port, accounts),
                accounts,
                max_requests=5,
                max_seconds=30,
                on_start=lambda: at_start.append(len(seen.requests)),
                on_stop=stopped.append,
            )

    asyncio.run(run())
    assert at_start == [0]
    assert len(stopped) == 1
    assert 0 <= stopped[0] < 5
