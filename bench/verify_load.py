"""Load benchmark of Sparekey's verify endpoint, on SQLite and on PostgreSQL, against a ceiling.

Starts real servers on loopback (``sparekey serve`` on SQLite, on a fresh PostgreSQL database, and
the bare Starlette endpoint of ``bench/bare_app.py``), enrolls users with HOTP factors through the
HTTP API, then measures POST /v1/users/{id}/verify with fresh valid codes, with a wrong code, and
the same request against the bare endpoint, each at several concurrencies. Every measured run is
bounded by a request count and a time limit. Prints a table and writes JSON to bench/results/.

    .venv/bin/python bench/verify_load.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from cpu import CpuMeter, background_cpu
from loadgen import Connection, RequestSource, build_request, positive_ints, run_load
from servers import (
    REPO,
    Server,
    ServerError,
    bare_argv,
    free_port,
    postgres_database,
    running,
    server_env,
    sparekey_argv,
    sparekey_init,
    wait_ready,
)
from verify_report import (
    SPAREKEY_BACKENDS,
    BackendResult,
    RunResult,
    ceiling_rows,
    findings,
    pct,
    print_background,
    print_ceiling,
    print_checks,
    print_table,
    progress_line,
    summarize,
)

RESULTS_DIR = REPO / "bench" / "results"
ALL_BACKENDS = (*SPAREKEY_BACKENDS, "bare")
SETUP_CONNECTIONS = 4
WRONG_CODE_MARGIN = 50  # counters either side of the next one that a wrong code must not match
HOTP_NOTE = (
    "Factors are HOTP (RFC 4226, SHA-1, 6 digits), not TOTP: Sparekey's replay protection accepts "
    "each TOTP time step once, so a TOTP factor verifies about one code per period (30 s) and "
    "cannot carry a load test, while an HOTP counter advances with every code."
)
# Wrong codes are spread over enough users that none exceeds the free failures between two
# valid-code runs (a success resets the count): the workload measures checking and recording a
# wrong code, not refusing a locked user.
THROTTLE = {"SPAREKEY_THROTTLE_FREE_FAILURES": "20"}
# The shape of a real API key; the bare endpoint gets the real one when Sparekey ran first.
BARE_TOKEN = "sk_" + "b" * 13 + "_" + "x" * 43


@dataclass(frozen=True, kw_only=True)
class Config:
    users: int
    concurrencies: tuple[int, ...]
    max_requests: int
    max_seconds: float
    warmup_requests: int
    warmup_seconds: float
    backends: tuple[str, ...] = ALL_BACKENDS
    processes: int = 1  # `sparekey serve` processes on the one database, the load split evenly


FULL = Config(
    users=512,
    concurrencies=(1, 8, 32),
    max_requests=5_000,
    max_seconds=10.0,
    warmup_requests=500,
    warmup_seconds=1.5,
)
QUICK = Config(
    users=64,
    concurrencies=(1, 8, 32),
    max_requests=300,
    max_seconds=2.0,
    warmup_requests=64,
    warmup_seconds=0.5,
)


# --- HOTP, computed here so that the server's answers are checked against RFC 4226 itself ---


def hotp(secret: bytes, counter: int) -> str:
    """RFC 4226 section 5.3 with HMAC-SHA-1 and 6 digits."""
    digest = hmac.new(secret, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def b32decode(text: str) -> bytes:
    return base64.b32decode(text.upper() + "=" * (-len(text) % 8))


@dataclass
class Account:
    """A user with one confirmed HOTP factor; ``next_counter`` is the next unused counter."""

    user_id: str
    secret: bytes
    next_counter: int = 1

    def take_code(self) -> str:
        code = hotp(self.secret, self.next_counter)
        self.next_counter += 1
        return code

    def wrong_code(self) -> str:
        """A 6-digit code that none of the counters near the next one produces."""
        low = max(0, self.next_counter - WRONG_CODE_MARGIN)
        near = {hotp(self.secret, c) for c in range(low, self.next_counter + WRONG_CODE_MARGIN)}
        return next(code for code in (f"{n:06d}" for n in range(1_000_000)) if code not in near)


# --- Setup through the HTTP API ---


async def api_call(
    connection: Connection,
    token: str,
    method: str,
    path: str,
    payload: object,
    expect: int,
    *,
    assurance: str | None = None,
) -> Any:
    """One JSON request with ``token`` (and a step-up ``assurance`` token, for a sensitive
    change); returns the JSON answer, or raises if not ``expect``."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if assurance is not None:
        headers["Sparekey-Assurance"] = assurance
    body = json.dumps(payload).encode()
    request = build_request(method, connection.port, path, headers=headers, body=body)
    response = await connection.send(request)
    if response.status != expect:
        raise ServerError(f"{method} {path} answered {response.status}: {response.body[:300]!r}")
    return response.json()


async def enroll_user(connection: Connection, token: str, user_id: str) -> Account:
    """Create the user, enroll an HOTP factor and confirm it with the code of counter 0."""
    await api_call(connection, token, "POST", "/v1/users", {"id": user_id}, 201)
    factors = f"/v1/users/{user_id}/factors"
    factor = await api_call(connection, token, "POST", factors, {"type": "hotp"}, 201)
    secret = b32decode(factor["secret"])
    confirm = f"{factors}/{factor['id']}/confirm"
    await api_call(connection, token, "POST", confirm, {"code": hotp(secret, 0)}, 200)
    return Account(user_id=user_id, secret=secret, next_counter=1)


async def enroll_users(port: int, token: str, count: int) -> list[Account]:
    """``count`` enrolled users, u00001 onwards, set up over a few connections at once."""
    user_ids = [f"u{n:05d}" for n in range(1, count + 1)]

    async def enroll_share(share: Sequence[str]) -> list[Account]:
        connection = Connection(port)
        try:
            return [await enroll_user(connection, token, user_id) for user_id in share]
        finally:
            await connection.close()

    shares = [user_ids[i::SETUP_CONNECTIONS] for i in range(SETUP_CONNECTIONS)]
    enrolled = await asyncio.gather(*(enroll_share(share) for share in shares))
    return sorted(itertools.chain.from_iterable(enrolled), key=lambda a: a.user_id)


# --- Workloads: one request source per worker ---


def verify_request(port: int, token: str, user_id: str, code: str) -> bytes:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"code": code}).encode()
    return build_request("POST", port, f"/v1/users/{user_id}/verify", headers=headers, body=body)


def partition(accounts: Sequence[Account], workers: int) -> list[list[Account]]:
    """Each worker owns every ``workers``-th account, so no two workers ever share a user."""
    shares = [list(accounts[i::workers]) for i in range(workers)]
    if not all(shares):
        raise ValueError(f"{len(accounts)} users cannot feed {workers} workers")
    return shares


def valid_source(port: int, token: str, owned: Sequence[Account]) -> RequestSource:
    """A fresh valid code each time: the worker's users in turn, each on its next counter."""
    turn = itertools.cycle(owned)

    def next_request() -> bytes:
        account = next(turn)
        return verify_request(port, token, account.user_id, account.take_code())

    return next_request


def fixed_code_source(port: int, token: str, requests: Sequence[tuple[str, str]]) -> RequestSource:
    """The same (user, code) requests in turn: wrong codes, or the bare endpoint's dummy code."""
    turn = itertools.cycle([verify_request(port, token, user, code) for user, code in requests])
    return lambda: next(turn)


def wrong_source(port: int, token: str, owned: Sequence[Account]) -> RequestSource:
    return fixed_code_source(port, token, [(a.user_id, a.wrong_code()) for a in owned])


def bare_source(port: int, token: str, owned: Sequence[Account]) -> RequestSource:
    return fixed_code_source(port, token, [(a.user_id, "123456") for a in owned])


Workload = Callable[[int, str, Sequence[Account]], RequestSource]
SPAREKEY_WORKLOADS: dict[str, Workload] = {
    "verify-valid": valid_source,
    "verify-wrong": wrong_source,
}


# --- Measuring ---


async def measure(
    servers: Sequence[Server],
    backend: str,
    workload: str,
    sources: Sequence[RequestSource],
    config: Config,
) -> RunResult:
    """Warm up, then one bounded measured run, with one keep-alive connection per worker; worker
    ``i`` talks to ``servers[i % len(servers)]`` (its source must build requests for that port)."""
    connections = [Connection(servers[i % len(servers)].port) for i in range(len(sources))]
    try:
        await asyncio.gather(*(c.connect() for c in connections))
        await run_load(
            connections,
            sources,
            max_requests=config.warmup_requests,
            max_seconds=config.warmup_seconds,
        )
        meter = CpuMeter(*(server.pid for server in servers))
        meter.start()
        stats = await run_load(
            connections, sources, max_requests=config.max_requests, max_seconds=config.max_seconds
        )
        cpu = meter.read()
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    for server in servers:
        server.check_alive()
    result = summarize(backend, workload, len(sources), stats, cpu)
    print(progress_line(result), file=sys.stderr, flush=True)
    return result


# --- Backends ---


def record_exit(result: BackendResult, servers: Sequence[Server]) -> None:
    """The first server's exit status and log file; clean only if every server exited so."""
    first = servers[0]
    result.exit_status = first.process.returncode
    result.exited_cleanly = all(server.exited_cleanly for server in servers)
    result.log_file = str(first.log_path.relative_to(REPO))
    lines = [line for server in servers for line in server.notable_log_lines()]
    result.notable_log_lines = lines[:50]


@contextlib.contextmanager
def sparekey_env(backend: str) -> Iterator[dict[str, str]]:
    """The servers' environment; for PostgreSQL, with a fresh database for the block."""
    if backend == "sqlite":
        yield server_env(**THROTTLE)
        return
    with postgres_database(f"sparekey_bench_{os.getpid()}") as url:
        yield server_env(SPAREKEY_DATABASE_URL=url, **THROTTLE)


async def bench_sparekey(config: Config, work: Path, stamp: str, result: BackendResult) -> str:
    """Every Sparekey workload on ``result.backend``; returns the admin API key it used."""
    backend = result.backend
    with sparekey_env(backend) as env:
        data_dir = work / backend
        token = sparekey_init(data_dir, env)
        with contextlib.ExitStack() as stack:
            servers = []
            for n in range(config.processes):
                port = free_port()
                suffix = f"-{n + 1}" if config.processes > 1 else ""
                log_path = RESULTS_DIR / f"verify_load-{stamp}-{backend}{suffix}.log"
                started = running(
                    f"sparekey ({backend}{suffix})",
                    sparekey_argv(data_dir, port),
                    port=port,
                    env=env,
                    log_path=log_path,
                )
                servers.append(stack.enter_context(started))
            try:
                await run_sparekey(servers, backend, token, config, result)
            finally:
                for server in servers:
                    server.stop()
                record_exit(result, servers)
    return token


async def run_sparekey(
    servers: Sequence[Server], backend: str, token: str, config: Config, result: BackendResult
) -> None:
    for server in servers:
        await wait_ready(server, build_request("GET", server.port, "/healthz", headers={}))
    started = time.perf_counter()
    try:
        accounts = await enroll_users(servers[0].port, token, config.users)
    except (OSError, EOFError):
        servers[0].check_alive()  # a server that died says so, with its log
        raise
    result.users = len(accounts)
    result.setup_seconds = round(time.perf_counter() - started, 2)
    print(
        f"  {backend}: {len(accounts)} users enrolled in {result.setup_seconds} s",
        file=sys.stderr,
        flush=True,
    )
    for concurrency in config.concurrencies:
        shares = partition(accounts, concurrency)
        for workload, make_source in SPAREKEY_WORKLOADS.items():
            sources = [
                make_source(servers[i % len(servers)].port, token, share)
                for i, share in enumerate(shares)
            ]
            result.runs.append(await measure(servers, backend, workload, sources, config))


async def bench_bare(config: Config, token: str, stamp: str, result: BackendResult) -> None:
    port = free_port()
    log_path = RESULTS_DIR / f"verify_load-{stamp}-bare.log"
    accounts = [Account(user_id=f"u{n:05d}", secret=b"") for n in range(1, config.users + 1)]
    with running(
        "bare starlette", bare_argv(port), port=port, env=server_env(), log_path=log_path
    ) as server:
        try:
            await wait_ready(server, verify_request(port, token, "u00001", "123456"))
            result.users = len(accounts)
            for concurrency in config.concurrencies:
                sources = [bare_source(port, token, s) for s in partition(accounts, concurrency)]
                result.runs.append(await measure([server], "bare", "bare", sources, config))
        finally:
            server.stop()
            record_exit(result, [server])


# --- Report ---


def print_report(backends: Sequence[BackendResult], config: Config) -> list[dict[str, Any]]:
    """The table, the ceiling, warnings and checks; returns the ceiling rows."""
    print(f"\n{HOTP_NOTE}")
    if config.processes > 1:
        print(
            f"Sparekey: {config.processes} `sparekey serve` processes on one database, each "
            "worker's connection to one of them in turn; server CPU is theirs together."
        )
    print(
        f"Each measured run: at most {config.max_requests} requests or {config.max_seconds:g} s, "
        f"after a warm-up of {config.warmup_requests} requests or {config.warmup_seconds:g} s. "
        "CPU: server and client in % of one core; host (busy, without steal) and steal (taken "
        "by the hypervisor for other guests) in % of all cores.\n"
    )
    runs = [r for b in backends for r in b.runs]
    print_table(runs)
    rows = ceiling_rows(runs, config.concurrencies)
    print_ceiling(rows)
    print_background(backends)
    print_checks(findings(backends))
    return rows


def source_state() -> dict[str, Any]:
    """The commit measured, and whether src/ had uncommitted changes: Sparekey is installed from
    the working tree, so those changes are what ran."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "src_changed": bool(git("status", "--porcelain", "src")),
    }


def write_json(
    stamp: str, config: Config, backends: Sequence[BackendResult], ceiling: Sequence[dict[str, Any]]
) -> Path:
    document = {
        "benchmark": "verify_load",
        "started_at": stamp,
        "command": [Path(sys.executable).name, *sys.argv],
        "config": asdict(config),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "client_event_loop": loop_name(),
            "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "source": source_state(),
        "note": HOTP_NOTE,
        "backends": [asdict(b) for b in backends],
        "ceiling": list(ceiling),
    }
    path = RESULTS_DIR / f"verify_load-{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


# --- Entry point ---


async def run_benchmark(config: Config, stamp: str) -> list[BackendResult]:
    """Every backend in turn, one server at a time; a SIGTERM stops the servers like Ctrl-C."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    results: list[BackendResult] = []
    token = BARE_TOKEN
    with tempfile.TemporaryDirectory(prefix="sparekey-bench-") as work:
        for backend in config.backends:
            busy, steal = await background_cpu()
            result = BackendResult(
                backend=backend, background_cpu_pct=busy, background_steal_pct=steal
            )
            results.append(result)
            print(
                f"{backend}: (before start: host {pct(busy, 0)} busy, {pct(steal, 0)} stolen)",
                file=sys.stderr,
            )
            try:
                if backend == "bare":
                    await bench_bare(config, token, stamp, result)
                else:
                    token = await bench_sparekey(config, Path(work), stamp, result)
            except ServerError as exc:  # reported with the results; the other backends still run
                result.error = str(exc)
                print(f"  {backend}: {exc}", file=sys.stderr)
    return results


def loop_name() -> str:
    return "uvloop" if _uvloop_factory() else "asyncio"


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # optional; uvicorn uses it too when it is installed
    except ImportError:
        return None
    return uvloop.new_event_loop


T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a benchmark on uvloop when it is installed. An interrupt (Ctrl-C, SIGTERM) or a server
    that failed ends the program with one line and status 130 or 1; the servers are stopped by
    then (each benchmark starts them in context managers)."""
    try:
        with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
            return runner.run(coroutine)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; the servers were stopped", file=sys.stderr)
        raise SystemExit(130) from None
    except ServerError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def results_stamp() -> str:
    """The UTC time that names a run's files in bench/results/ (made if missing)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description="Load benchmark of Sparekey's verify endpoint.")
    parser.add_argument("--quick", action="store_true", help="small runs, well under a minute")
    parser.add_argument("--requests", type=int, help="request bound of each measured run")
    parser.add_argument("--seconds", type=float, help="time bound of each measured run")
    parser.add_argument("--users", type=int, help="users to enroll per Sparekey backend")
    parser.add_argument(
        "--concurrency",
        type=positive_ints,
        default=FULL.concurrencies,
        help="comma-separated requests in flight, one run each [1,8,32]",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="`sparekey serve` processes on the one database, the load split evenly [1]",
    )
    parser.add_argument(
        "--backends",
        default=",".join(ALL_BACKENDS),
        help=f"comma-separated, from {','.join(ALL_BACKENDS)} [all]",
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    if not backends or set(backends) - set(ALL_BACKENDS):
        parser.error(f"--backends takes names from {','.join(ALL_BACKENDS)}")
    concurrencies = args.concurrency
    config = replace(
        config,
        backends=backends,
        concurrencies=concurrencies,
        max_requests=args.requests or config.max_requests,
        max_seconds=args.seconds or config.max_seconds,
        users=args.users or config.users,
        processes=args.processes,
    )
    if config.processes < 1:
        parser.error("--processes must be at least 1")
    if config.users < max(config.concurrencies):
        parser.error(f"--users must be at least {max(config.concurrencies)}")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    stamp = results_stamp()
    backends = run(run_benchmark(config, stamp))
    ceiling = print_report(backends, config)
    path = write_json(stamp, config, backends, ceiling)
    print(f"\nResults: {path.relative_to(REPO)}")
    return 1 if findings(backends) else 0


if __name__ == "__main__":
    sys.exit(main())
