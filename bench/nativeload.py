"""The closed-loop load run of :func:`loadgen.run_load`, driven by ``bench/loadclient.c``.

On a two-core machine the load client shares the cores with the servers it measures, and the
Python client (asyncio streams, even on uvloop) costs 0.1-0.15 ms of CPU per request: next to a
server answering in under a millisecond that is CPU taken from it, and it is on every request's
timed path at concurrency 1. The C client costs a few microseconds per request. Python still
builds every request (the same request sources as the Python client) and judges every answer
(the same verdicts); the C program only sends, times and reads.

Requests are built before the clock starts: each connection gets a list longer than its share of
the run's bound. A source that hands out fresh codes advances its accounts' counters as it
builds, so the accounts are wound back afterwards to exactly what was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from loadgen import REQUEST_TIMEOUT_SECONDS, LoadStats, RequestSource, Response, Verdict

__all__ = ["LoadClientError", "client_binary", "run_native"]

SOURCE = Path(__file__).with_name("loadclient.c")
BUILD_DIR = Path(__file__).with_name(".build")
_SPARE = 4  # each connection gets this many times its fair share of the run's requests, +64


class LoadClientError(RuntimeError):
    """The C client cannot be built here (no C compiler)."""


class Counted(Protocol):
    """An account whose next code's counter a request source advances."""

    next_counter: int


def client_binary() -> Path:
    """The compiled client, built with the system's C compiler when the source changed."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    binary = BUILD_DIR / f"loadclient-{digest}"
    if binary.exists():
        return binary
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise LoadClientError("no C compiler (cc, gcc or clang) to build bench/loadclient.c")
    BUILD_DIR.mkdir(exist_ok=True)
    built = binary.with_suffix(".tmp")
    argv = [compiler, "-O2", "-std=c11", "-Wall", "-Wextra", "-o", str(built), str(SOURCE)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LoadClientError(f"building bench/loadclient.c failed:\n{done.stderr}")
    built.replace(binary)
    return binary


def _input_file(
    plans: Sequence[tuple[int, Sequence[bytes]]], max_requests: int, max_seconds: float
) -> bytes:
    timeout_ms = int(REQUEST_TIMEOUT_SECONDS * 1000)
    bounds = struct.pack("<4I", len(plans), max_requests, int(max_seconds * 1000), timeout_ms)
    parts = [b"SKLC", bounds]
    for port, requests in plans:
        parts.append(struct.pack("<2I", port, len(requests)))
        for request in requests:
            parts += [struct.pack("<I", len(request)), request]
    return b"".join(parts)


def _read_output(
    data: bytes, connections: int, verdict: Verdict | None
) -> tuple[LoadStats, list[int]]:
    if data[:4] != b"SKLR":
        raise RuntimeError("the load client wrote no result")
    elapsed_ns, _, records = struct.unpack_from("<QQI", data, 4)
    stats = LoadStats(elapsed=elapsed_ns / 1e9)
    sent = [0] * connections
    at = 24
    for _ in range(records):
        connection, ok, latency_ns, status, length = struct.unpack_from("<IIQII", data, at)
        at += 24
        body = data[at : at + length]
        at += length
        sent[connection] += 1
        if ok:
            stats.record(latency_ns / 1e9, Response(status, body), verdict)
        else:
            stats.fail(ConnectionError(body.decode("utf-8", "replace")))
    return stats, sent


async def run_native(
    ports: Sequence[int],
    make_sources: Callable[[], Sequence[RequestSource]],
    accounts: Sequence[Counted],
    *,
    max_requests: int,
    max_seconds: float,
    verdict: Verdict | None = None,
    on_start: Callable[[], None] | None = None,
    on_stop: Callable[[float], None] | None = None,
) -> LoadStats:
    """One bounded closed-loop run: connection ``i`` to ``ports[i]`` sends what source ``i`` of
    ``make_sources()`` builds, in order, one at a time.

    ``make_sources`` builds fresh sources from the accounts as they are; ``accounts`` are every
    account those sources may advance. ``on_start`` runs once every connection is open, right
    before the first request, and ``on_stop`` as soon as the client has exited, with the CPU
    seconds it spent sending and reading (start and read a CPU meter there).
    """
    binary = client_binary()
    share = _SPARE * math.ceil(max_requests / len(ports)) + 64
    per_connection = min(max_requests, share)
    before = [a.next_counter for a in accounts]
    sources = make_sources()
    plans = [
        (port, [source() for _ in range(per_connection)])
        for port, source in zip(ports, sources, strict=True)
    ]
    _wind(accounts, before)
    with tempfile.TemporaryDirectory(prefix="sparekey-load-") as folder:
        given, taken = Path(folder) / "in", Path(folder) / "out"
        given.write_bytes(_input_file(plans, max_requests, max_seconds))
        del plans
        process = await asyncio.create_subprocess_exec(
            str(binary),
            str(given),
            str(taken),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        ready = await process.stdout.readline()
        if ready.strip() != b"ready":
            _, error = await process.communicate()
            raise RuntimeError(f"the load client did not start: {error.decode().strip()}")
        if on_start is not None:
            on_start()
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        _, error = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"the load client failed: {error.decode().strip()}")
        output = taken.read_bytes()
        if on_stop is not None:
            on_stop(struct.unpack_from("<Q", output, 12)[0] / 1e9 if output[:4] == b"SKLR" else 0.0)
        stats, sent = _read_output(output, len(ports), verdict)
    for source, count in zip(make_sources(), sent, strict=True):  # advance what was sent
        for _ in range(count):
            source()
    return stats


def _wind(accounts: Sequence[Counted], counters: Sequence[int]) -> None:
    for account, counter in zip(accounts, counters, strict=True):
        account.next_counter = counter
