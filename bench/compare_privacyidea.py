"""Side by side: HOTP verification over HTTP on privacyIDEA and on Sparekey, in one run.

privacyIDEA (a pinned release from PyPI, installed once into a virtual environment of its own
under bench/.privacyidea/) runs under gunicorn with SQLite, its SQL audit on and signed, and tokens
without a PIN; Sparekey runs as ``sparekey serve`` on SQLite, as shipped, as one node or as two
on one database file (each client connection to one of them in turn, as a load balancer would
spread them). Each side gets the best of its layouts in a short probe. Both get the same workload:
fresh valid HOTP codes and wrong codes, at concurrency 1, 8 and 32, with every answer checked.
Prints a table and the ratios, counts the SQL statements of one check on each side, and writes
JSON to bench/results/.

    .venv/bin/python bench/compare_privacyidea.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cpu import CpuMeter, CpuUse, background_cpu
from loadgen import (
    HOST,
    Connection,
    RequestSource,
    Response,
    Verdict,
    build_request,
    is_verified,
    positive_ints,
    run_load,
)
from nativeload import LoadClientError, client_binary, run_native
from servers import (
    REPO,
    Server,
    ServerError,
    free_port,
    running,
    server_env,
    sparekey_argv,
    sparekey_init,
    wait_ready,
)
from verify_load import (
    Account,
    enroll_users,
    loop_name,
    partition,
    results_stamp,
    run,
    source_state,
    valid_source,
    verify_request,
    wrong_source,
)
from verify_report import (
    BackendResult,
    RunResult,
    findings,
    fmt,
    pct,
    print_background,
    print_checks,
    print_table,
    progress_line,
    summarize,
)

RESULTS_DIR = REPO / "bench" / "results"
PI_VERSION = "3.14"  # the latest privacyIDEA on PyPI, and the release the issue measured
GUNICORN_VERSION = "27.0.1"
PI_HOME = REPO / "bench" / ".privacyidea"  # git-ignored: the virtual environment, made once
PI_VENV = PI_HOME / f"venv-{PI_VERSION}"
SQL_TRACE = REPO / "bench" / "sqltrace"  # sitecustomize.py: counts statements when asked
MAX_FAILCOUNT = 1_000_000  # privacyIDEA locks a token after 10 failures by default
# Sparekey's throttle (its highest setting): wrong codes are spread over enough users that none
# reaches this many failures between two valid-code runs, as in verify_load.py
THROTTLE = {"SPAREKEY_THROTTLE_FREE_FAILURES": "20"}
SETUP_CONNECTIONS = 4
TARGET_RATIO = 50.0
ISSUE_PI_RATE = 20.0  # verifications/s the issue recorded for privacyIDEA with light PIN hashing
WORKLOADS = ("verify-valid", "verify-wrong")
BACKGROUND_THREADS = {"audit-sealer", "notification-worker"}  # Sparekey's, outside requests


@dataclass(frozen=True, kw_only=True)
class Config:
    users: int
    concurrencies: tuple[int, ...]
    max_requests: int
    max_seconds: float
    warmup_requests: int
    warmup_seconds: float
    probe_seconds: float
    layouts: tuple[tuple[int, int], ...]  # gunicorn (workers, threads) to try
    sparekey_nodes: tuple[int, ...]  # `sparekey serve` processes on the one database, to try
    count_requests: int  # requests of each kind whose SQL statements are counted
    pi_sqlite_defaults: bool = False  # privacyIDEA's SQLite as it comes: rollback journal, fsync
    client: str = "native"  # the load client: bench/loadclient.c, or "python" (loadgen.py)
    rounds: int = 1  # every cell measured this many times, the rounds in turn; medians compared


FULL = Config(
    users=512,
    concurrencies=(1, 8, 32),
    max_requests=5_000,
    max_seconds=10.0,
    warmup_requests=500,
    warmup_seconds=1.5,
    probe_seconds=4.0,
    layouts=((2, 1), (4, 1), (2, 4), (4, 4)),
    sparekey_nodes=(1, 2),
    count_requests=3,
    rounds=3,
)
QUICK = Config(
    users=64,
    concurrencies=(1, 8, 32),
    max_requests=300,
    max_seconds=2.0,
    warmup_requests=32,
    warmup_seconds=0.5,
    probe_seconds=1.5,
    layouts=((2, 1), (2, 4)),
    sparekey_nodes=(1, 2),
    count_requests=1,
)


# --- privacyIDEA: the virtual environment, the deployment, the server ---


def pi_bin(name: str) -> Path:
    return PI_VENV / "bin" / name


def ensure_privacyidea() -> dict[str, Any]:
    """Install privacyIDEA and gunicorn into their own virtual environment, once; returns what
    was installed (``pip freeze``)."""
    marker = PI_VENV / "installed.json"
    if marker.exists():
        installed: dict[str, Any] = json.loads(marker.read_text(encoding="utf-8"))
        if installed.get("privacyidea") == PI_VERSION:
            return installed
    print(f"installing privacyIDEA {PI_VERSION} into {PI_VENV.relative_to(REPO)} ...", flush=True)
    started = time.perf_counter()
    PI_HOME.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PI_VENV)], check=True)
    packages = [f"privacyidea=={PI_VERSION}", f"gunicorn=={GUNICORN_VERSION}"]
    done = subprocess.run(
        [str(pi_bin("python")), "-m", "pip", "install", "--quiet", *packages],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if done.returncode != 0:
        raise ServerError(f"pip install {' '.join(packages)} failed:\n{done.stderr[-3000:]}")
    freeze = subprocess.run(
        [str(pi_bin("python")), "-m", "pip", "freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    installed = {"privacyidea": PI_VERSION, "gunicorn": GUNICORN_VERSION, "freeze": freeze}
    marker.write_text(json.dumps(installed, indent=2) + "\n", encoding="utf-8")
    print(f"  installed in {time.perf_counter() - started:.0f} s", flush=True)
    return installed


@dataclass(frozen=True)
class PiDeployment:
    """A privacyIDEA instance in a temporary folder: pi.cfg, keys and the SQLite database."""

    config_file: Path
    log_file: Path
    admin_password: str = field(repr=False)

    @property
    def env(self) -> dict[str, str]:
        return server_env(PRIVACYIDEA_CONFIGFILE=str(self.config_file))


# pi.cfg is Python: a connection class for SQLite that runs it as Sparekey does (WAL, and no
# fsync at every commit), passed to SQLAlchemy through privacyIDEA's own engine options, which
# its SQL audit uses too. Without it, privacyIDEA's SQLite keeps a rollback journal and syncs it
# several times per commit.
SQLITE_AS_SPAREKEY = """
import sqlite3


class _SqliteAsSparekey(sqlite3.Connection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA journal_mode=WAL")
        self.execute("PRAGMA synchronous=NORMAL")


SQLALCHEMY_ENGINE_OPTIONS = {"connect_args": {"factory": _SqliteAsSparekey, "timeout": 10}}
"""


def pi_config(home: Path, log_file: Path, *, sqlite_defaults: bool) -> str:
    """pi.cfg: SQLite (run as Sparekey runs it unless ``sqlite_defaults``), the default SQL audit
    (signed), light hashing, logging at WARNING."""
    settings: dict[str, object] = {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{home / 'privacyidea.sqlite'}",
        "SECRET_KEY": secrets.token_hex(32),
        "PI_PEPPER": secrets.token_hex(16),
        "PI_ENCFILE": str(home / "enckey"),
        "PI_AUDIT_MODULE": "privacyidea.lib.auditmodules.sqlaudit",
        "PI_AUDIT_KEY_PRIVATE": str(home / "audit-private.pem"),
        "PI_AUDIT_KEY_PUBLIC": str(home / "audit-public.pem"),
        "PI_LOGFILE": str(log_file),
        "PI_BASE_URL": f"http://{HOST}",
        "PI_NODE": "bench",
        "PI_NODE_UUID": str(uuid.uuid4()),
        # The lightest hashing privacyIDEA accepts (its own test settings). The tokens have no
        # PIN, so a check hashes nothing; this only makes the admin's login cheap.
        "PI_HASH_ALGO_LIST": ["argon2"],
        "PI_HASH_ALGO_PARAMS": {
            "argon2__rounds": 1,
            "argon2__memory_cost": 8,
            "argon2__parallelism": 1,
        },
    }
    lines = ["import logging", "PI_LOGLEVEL = logging.WARNING"]
    lines += [f"{name} = {value!r}" for name, value in settings.items()]
    return "\n".join(lines) + "\n" + ("" if sqlite_defaults else SQLITE_AS_SPAREKEY)


def pi_manage(deployment: PiDeployment, *args: str) -> None:
    done = subprocess.run(
        [str(pi_bin("pi-manage")), *args],
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise ServerError(f"pi-manage {args[0]} {args[1]} failed:\n{done.stderr.strip()[-2000:]}")


def setup_privacyidea(home: Path, log_file: Path, *, sqlite_defaults: bool) -> PiDeployment:
    """Write pi.cfg, make the encryption key and the audit signing keys, create the tables and
    an administrator."""
    config_file = home / "pi.cfg"
    config_file.touch(mode=0o600)
    text = pi_config(home, log_file, sqlite_defaults=sqlite_defaults)
    config_file.write_text(text, encoding="utf-8")
    deployment = PiDeployment(config_file, log_file, admin_password=secrets.token_urlsafe(16))
    pi_manage(deployment, "setup", "create_enckey")
    pi_manage(deployment, "setup", "create_audit_keys")
    pi_manage(deployment, "setup", "create_tables")
    pi_manage(deployment, "admin", "add", "admin", "-p", deployment.admin_password)
    return deployment


def gunicorn_argv(deployment: PiDeployment, port: int, workers: int, threads: int) -> list[str]:
    """gunicorn, as privacyIDEA's documentation deploys it: the sync worker, or gthread when
    ``threads`` > 1."""
    app = (
        "privacyidea.app:create_app(config_name='production', "
        f"config_file={str(deployment.config_file)!r}, silent=True)"
    )
    return [
        str(pi_bin("gunicorn")),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--bind",
        f"{HOST}:{port}",
        "--no-control-socket",
        # gthread closes a kept-alive connection whose next request has waited longer than this
        # for a thread (2 s by default), losing the request: at concurrency 32 they wait longer
        "--keep-alive",
        "60",
        "--log-level",
        "warning",
        app,
    ]


def layout_name(layout: tuple[int, int]) -> str:
    workers, threads = layout
    return f"{workers} workers x {threads} threads" if threads > 1 else f"{workers} sync workers"


def pi_verified(response: Response) -> bool:
    """privacyIDEA's verdict: ``{"result": {"status": true, "value": true}, ...}``."""
    try:
        result = response.json().get("result", {})
    except (ValueError, AttributeError):
        return False
    return result.get("status") is True and result.get("value") is True


async def pi_call(
    connection: Connection, path: str, payload: object, *, auth: str | None = None
) -> Any:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    body = json.dumps(payload).encode()
    response = await connection.send(
        build_request("POST", connection.port, path, headers=headers, body=body)
    )
    answer = response.json() if response.body else {}
    if response.status != 200 or answer.get("result", {}).get("status") is not True:
        raise ServerError(f"privacyIDEA {path} answered {response.status}: {response.body[:300]!r}")
    return answer


def pi_serial(n: int) -> str:
    return f"BENCH{n:05d}"


async def pi_enroll(port: int, deployment: PiDeployment, count: int) -> list[Account]:
    """``count`` HOTP tokens (SHA-1, 6 digits) with known seeds and no PIN, through the admin
    API (/token/init), after raising the failure counter's maximum for new tokens."""
    connection = Connection(port)
    try:
        login = {"username": "admin", "password": deployment.admin_password}
        answer = await pi_call(connection, "/auth", login)
        auth = answer["result"]["value"]["token"]
        defaults = {"DefaultMaxFailCount": MAX_FAILCOUNT}
        await pi_call(connection, "/system/setDefault", defaults, auth=auth)
    finally:
        await connection.close()
    accounts = [Account(user_id=pi_serial(n), secret=os.urandom(20)) for n in range(1, count + 1)]

    async def enroll_share(share: Sequence[Account]) -> None:
        conn = Connection(port)
        try:
            for account in share:
                token = {
                    "type": "hotp",
                    "serial": account.user_id,
                    "otpkey": account.secret.hex(),
                    "genkey": 0,
                    "otplen": 6,
                    "hashlib": "sha1",
                }
                answer = await pi_call(conn, "/token/init", token, auth=auth)
                if answer["result"]["value"] is not True:
                    raise ServerError(f"privacyIDEA did not enroll {account.user_id}: {answer}")
        finally:
            await conn.close()

    shares = [accounts[i::SETUP_CONNECTIONS] for i in range(SETUP_CONNECTIONS)]
    await asyncio.gather(*(enroll_share(share) for share in shares))
    return accounts


def pi_check_request(port: int, serial: str, code: str) -> bytes:
    body = json.dumps({"serial": serial, "pass": code}).encode()
    headers = {"Content-Type": "application/json"}
    return build_request("POST", port, "/validate/check", headers=headers, body=body)


def pi_valid_source(port: int, owned: Sequence[Account]) -> RequestSource:
    """A fresh valid code each time: the worker's tokens in turn, each on its next counter, so
    no code is sent twice and no token has two checks in flight."""
    turn = itertools.cycle(owned)

    def next_request() -> bytes:
        account = next(turn)
        return pi_check_request(port, account.user_id, account.take_code())

    return next_request


def pi_wrong_source(port: int, owned: Sequence[Account]) -> RequestSource:
    """A code that none of the token's nearby counters produce, the worker's tokens in turn."""
    turn = itertools.cycle([pi_check_request(port, a.user_id, a.wrong_code()) for a in owned])
    return lambda: next(turn)


# --- Measuring ---


@dataclass
class Side:
    """One server under test and how to make its requests."""

    backend: str
    servers: list[Server]  # several: client connection i goes to servers[i % len(servers)]
    accounts: list[Account]
    sources: dict[str, Callable[[int, Sequence[Account]], RequestSource]]  # (port, owned)
    verdict: Verdict
    tree: bool  # count the CPU of the server's child processes too (gunicorn's workers)
    problems: list[str] = field(default_factory=list)  # wrong answers during warm-ups


async def measure(
    side: Side,
    workload: str,
    concurrency: int,
    *,
    warmup: tuple[int, float],
    bounds: tuple[int, float],
    client: str = "native",
) -> RunResult:
    """Warm up, then one bounded run, one keep-alive connection per worker (gunicorn's sync
    worker closes each connection after its answer; the client then reconnects).

    ``client`` "native" drives the connections from ``bench/loadclient.c`` (nativeload.py),
    "python" from asyncio (loadgen.py); the requests and the checks of the answers are the same.
    """
    make = side.sources[workload]
    ports = [s.port for s in side.servers]
    shares = partition(side.accounts, concurrency)
    port_of = [ports[i % len(ports)] for i in range(len(shares))]
    meter = CpuMeter(*(s.pid for s in side.servers), tree=side.tree)
    if client == "native":

        def fresh_sources() -> list[RequestSource]:
            return [make(port_of[i], share) for i, share in enumerate(shares)]

        native = functools.partial(
            run_native, port_of, fresh_sources, side.accounts, verdict=side.verdict
        )
        warm = await native(max_requests=warmup[0], max_seconds=warmup[1])
        readings: list[CpuUse] = []
        stats = await native(
            max_requests=bounds[0],
            max_seconds=bounds[1],
            on_start=meter.start,
            on_stop=lambda seconds: readings.append(meter.read(client_elsewhere=seconds)),
        )
        cpu = readings[0]
    else:
        sources = [make(port_of[i], share) for i, share in enumerate(shares)]
        connections = [Connection(port) for port in port_of]
        try:
            await asyncio.gather(*(c.connect() for c in connections))
            python = functools.partial(run_load, connections, sources, verdict=side.verdict)
            warm = await python(max_requests=warmup[0], max_seconds=warmup[1])
            meter.start()
            stats = await python(max_requests=bounds[0], max_seconds=bounds[1])
            cpu = meter.read()
        finally:
            await asyncio.gather(*(c.close() for c in connections))
    for server in side.servers:
        server.check_alive()
    wrong_answers = warm.requests - warm.verified if workload == "verify-valid" else warm.verified
    if wrong_answers or warm.errors:  # the warm-up's answers are checked as well
        side.problems.append(
            f"{side.backend} {workload} c={concurrency} warm-up: {wrong_answers} wrong answers, "
            f"{warm.errors} errors; e.g. {warm.samples[:2]}"
        )
    result = summarize(side.backend, workload, concurrency, stats, cpu)
    print(progress_line(result), file=sys.stderr, flush=True)
    return result


# --- SQL statements per check ---


@dataclass(frozen=True, kw_only=True)
class StatementCount:
    backend: str
    workload: str
    per_request: list[int]  # one count per request, background threads left out
    statements: dict[str, int]  # of the last request, by keyword and table
    background: int  # statements of background threads during these requests

    @property
    def median(self) -> float:
        return statistics.median(self.per_request)

    @property
    def data_statements(self) -> int:
        """The last request's statements without transaction control and connection PRAGMAs."""
        control = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA")
        return sum(n for name, n in self.statements.items() if name.split()[0] not in control)


def traced_env(env: dict[str, str], trace: Path) -> dict[str, str]:
    path = str(SQL_TRACE) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, "PYTHONPATH": path.rstrip(os.pathsep), "BENCH_SQL_TRACE": str(trace)}


def read_trace(trace: Path, offset: int) -> tuple[list[list[str]], int]:
    if not trace.exists():
        return [], offset
    with trace.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = offset + len(data)
    return [line.split("\t") for line in data.decode().splitlines() if line], end


async def count_statements(
    backend: str,
    workload: str,
    server: Server,
    trace: Path,
    requests: Sequence[bytes],
    verdict: Verdict,
) -> StatementCount:
    """Send ``requests`` one at a time on fresh connections and count what SQLite ran for each
    but the first (which fills the caches a running server has warm). Each answer must be what
    ``workload`` expects, or the count says nothing."""
    counts, background = [], 0
    last: Counter[str] = Counter()
    _, offset = read_trace(trace, 0)
    for position, request in enumerate(requests):
        await asyncio.sleep(0.3)
        _, offset = read_trace(trace, offset)  # what ran before this request
        connection = Connection(server.port)
        try:
            response = await connection.send(request)
        finally:
            await connection.close()
        await asyncio.sleep(0.3)  # anything written after the answer (teardown) lands too
        lines, offset = read_trace(trace, offset)
        if response.status != 200 or verdict(response) != (workload == "verify-valid"):
            raise ServerError(f"{backend} {workload}: unexpected answer {response.body[:200]!r}")
        if position == 0:
            continue
        ours = [line for line in lines if line[1] not in BACKGROUND_THREADS]
        background += len(lines) - len(ours)
        counts.append(len(ours))
        last = Counter(" ".join(line[2:4]) if line[3] != "-" else line[2] for line in ours)
    return StatementCount(
        backend=backend,
        workload=workload,
        per_request=counts,
        statements=dict(last.most_common()),
        background=background,
    )


# --- The run ---


@dataclass
class Report:
    config: Config
    installed: dict[str, Any]
    probes: list[dict[str, Any]] = field(default_factory=list)
    layout: tuple[int, int] | None = None
    sparekey_probes: list[dict[str, Any]] = field(default_factory=list)
    nodes: int | None = None  # Sparekey's `sparekey serve` processes
    backends: list[BackendResult] = field(default_factory=list)
    statements: list[StatementCount] = field(default_factory=list)
    log_findings: list[str] = field(default_factory=list)


def log_problems(path: Path, offset: int) -> list[str]:
    """Lines of privacyIDEA's own log since ``offset`` that say something went wrong."""
    if not path.exists():
        return []
    with path.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    keys = ("[ERROR]", "[CRITICAL]", "Traceback", "[WARNING]")
    return [line for line in text.splitlines() if any(k in line for k in keys)][:20]


@contextlib.contextmanager
def pi_server(
    deployment: PiDeployment, layout: tuple[int, int], log_path: Path, env: dict[str, str]
) -> Iterator[Server]:
    port = free_port()
    argv = gunicorn_argv(deployment, port, *layout)
    name = f"privacyIDEA ({layout_name(layout)})"
    with running(name, argv, port=port, env=env, log_path=log_path) as server:
        yield server


async def ready(server: Server, path: str) -> None:
    await wait_ready(server, build_request("GET", server.port, path, headers={}))


def pi_side(server: Server, accounts: list[Account]) -> Side:
    return Side(
        backend="privacyidea",
        servers=[server],
        accounts=accounts,
        sources={"verify-valid": pi_valid_source, "verify-wrong": pi_wrong_source},
        verdict=pi_verified,
        tree=True,
    )


def sparekey_side(servers: list[Server], token: str, accounts: list[Account]) -> Side:
    return Side(
        backend="sparekey",
        servers=servers,
        accounts=accounts,
        sources={
            "verify-valid": lambda port, owned: valid_source(port, token, owned),
            "verify-wrong": lambda port, owned: wrong_source(port, token, owned),
        },
        verdict=is_verified,
        tree=False,
    )


async def probe_rates(side: Side, config: Config) -> tuple[dict[int, float], list[str]]:
    """A short verify-valid run at concurrency 8 and 32: each rate (0 if any answer was wrong)."""
    rates, wrong = {}, []
    for concurrency in (8, 32):
        result = await measure(
            side,
            "verify-valid",
            concurrency,
            warmup=(10_000, 1.0),
            bounds=(10_000, config.probe_seconds),
            client=config.client,
        )
        ok = result.errors == 0 and result.verified == result.requests
        rates[concurrency] = result.requests_per_second if ok else 0.0
        if not ok:
            wrong.append(
                f"c={concurrency}: {result.requests - result.verified} of "
                f"{result.requests} not verified, {result.errors} errors "
                f"{result.statuses}; e.g. {result.error_samples[:2]}"
            )
    return rates, wrong + side.problems


def probe_record(rates: dict[int, float], problems: list[str], **layout: int) -> dict[str, Any]:
    mean = statistics.mean(rates.values())
    print(f"  probe {layout}: {mean:.1f} req/s", file=sys.stderr, flush=True)
    for problem in problems:
        print(f"    (disqualified) {problem}", file=sys.stderr, flush=True)
    return {**layout, "rps": rates, "mean_rps": round(mean, 1), "problems": problems}


async def probe_layouts(
    report: Report, deployment: PiDeployment, accounts: list[Account], stamp: str
) -> tuple[int, int]:
    """Each gunicorn layout in turn (:func:`probe_rates`); the best mean rate wins."""
    config = report.config
    best: tuple[float, tuple[int, int]] | None = None
    for layout in config.layouts:
        log_path = RESULTS_DIR / f"compare_privacyidea-{stamp}-probe-{layout[0]}x{layout[1]}.log"
        with pi_server(deployment, layout, log_path, deployment.env) as server:
            await ready(server, "/healthz/livez")
            rates, problems = await probe_rates(pi_side(server, accounts), config)
            server.stop()
        probe = probe_record(rates, problems, workers=layout[0], threads=layout[1])
        report.probes.append(probe)
        if best is None or probe["mean_rps"] > best[0]:
            best = (probe["mean_rps"], layout)
    assert best is not None
    return best[1]


@contextlib.contextmanager
def sparekey_nodes(
    data_dir: Path, env: dict[str, str], count: int, log: str
) -> Iterator[list[Server]]:
    """``count`` ``sparekey serve`` processes on the one data directory (and database)."""
    with contextlib.ExitStack() as stack:
        servers = []
        for n in range(count):
            port = free_port()
            suffix = f"-{n + 1}" if count > 1 else ""
            log_path = RESULTS_DIR / f"{log}{suffix}.log"
            argv = sparekey_argv(data_dir, port)
            started = running(f"sparekey{suffix}", argv, port=port, env=env, log_path=log_path)
            servers.append(stack.enter_context(started))
        yield servers


async def enroll_sparekey(
    data_dir: Path, env: dict[str, str], token: str, users: int, stamp: str
) -> tuple[list[Account], float]:
    """The users and the seconds their enrollment took, through one node."""
    log = f"compare_privacyidea-{stamp}-sparekey-setup"
    with sparekey_nodes(data_dir, env, 1, log) as (server,):
        await ready(server, "/healthz")
        started = time.perf_counter()
        accounts = await enroll_users(server.port, token, users)
        seconds = round(time.perf_counter() - started, 2)
        server.stop()
    return accounts, seconds


async def probe_nodes(
    report: Report,
    data_dir: Path,
    env: dict[str, str],
    token: str,
    accounts: list[Account],
    stamp: str,
) -> int:
    """Each number of Sparekey nodes in turn (:func:`probe_rates`); the best mean rate wins."""
    best: tuple[float, int] | None = None
    for count in report.config.sparekey_nodes:
        log = f"compare_privacyidea-{stamp}-probe-sparekey-{count}"
        with sparekey_nodes(data_dir, env, count, log) as servers:
            for server in servers:
                await ready(server, "/healthz")
            rates, problems = await probe_rates(
                sparekey_side(servers, token, accounts), report.config
            )
            for server in servers:
                server.stop()
        probe = probe_record(rates, problems, nodes=count)
        report.sparekey_probes.append(probe)
        if best is None or probe["mean_rps"] > best[0]:
            best = (probe["mean_rps"], count)
    assert best is not None
    return best[1]


async def compare(report: Report, work: Path, stamp: str) -> None:
    config = report.config
    pi_log = RESULTS_DIR / f"compare_privacyidea-{stamp}-privacyidea-app.log"
    pi_home = work / "privacyidea"
    pi_home.mkdir()
    print("privacyIDEA: pi.cfg, keys, tables, admin ...", file=sys.stderr, flush=True)
    deployment = setup_privacyidea(pi_home, pi_log, sqlite_defaults=config.pi_sqlite_defaults)

    # Tokens first (through one server), then the probe of gunicorn layouts
    setup_log = RESULTS_DIR / f"compare_privacyidea-{stamp}-setup.log"
    with pi_server(deployment, (2, 1), setup_log, deployment.env) as server:
        await ready(server, "/healthz/livez")
        started = time.perf_counter()
        pi_accounts = await pi_enroll(server.port, deployment, config.users)
        pi_setup = round(time.perf_counter() - started, 2)
        server.stop()
    print(f"  {len(pi_accounts)} tokens enrolled in {pi_setup} s", file=sys.stderr, flush=True)
    if report.layout is None:
        report.layout = await probe_layouts(report, deployment, pi_accounts, stamp)
    layout = report.layout
    print(f"privacyIDEA layout: {layout_name(layout)}", file=sys.stderr, flush=True)

    sk_dir = work / "sparekey"
    sk_env = server_env(**THROTTLE)
    token = sparekey_init(sk_dir, sk_env)
    sk_accounts, sk_setup = await enroll_sparekey(sk_dir, sk_env, token, config.users, stamp)
    if report.nodes is None:
        report.nodes = await probe_nodes(report, sk_dir, sk_env, token, sk_accounts, stamp)
    nodes = report.nodes
    print(f"Sparekey nodes: {nodes}", file=sys.stderr, flush=True)
    busy, steal = await background_cpu()
    pi_result = BackendResult(
        backend="privacyidea", background_cpu_pct=busy, background_steal_pct=steal
    )
    sk_result = BackendResult(
        backend="sparekey", background_cpu_pct=busy, background_steal_pct=steal
    )
    report.backends += [pi_result, sk_result]
    pi_result.users, pi_result.setup_seconds = len(pi_accounts), pi_setup
    sk_result.users, sk_result.setup_seconds = len(sk_accounts), sk_setup

    pi_log_offset = pi_log.stat().st_size if pi_log.exists() else 0
    pi_server_log = RESULTS_DIR / f"compare_privacyidea-{stamp}-privacyidea.log"
    sk_log = f"compare_privacyidea-{stamp}-sparekey"
    sides: list[tuple[BackendResult, Side]] = []
    with (
        pi_server(deployment, layout, pi_server_log, deployment.env) as pi,
        sparekey_nodes(sk_dir, sk_env, nodes, sk_log) as sk,
    ):
        try:
            await ready(pi, "/healthz/livez")
            for server in sk:
                await ready(server, "/healthz")
            sides = [
                (pi_result, pi_side(pi, pi_accounts)),
                (sk_result, sparekey_side(sk, token, sk_accounts)),
            ]
            # Every cell once per round, the two sides in turn: drift on the machine falls on
            # both alike, and a passing disturbance (a burst of steal, a checkpoint) on one
            # round of a cell, not on its verdict, which compares the rounds' medians.
            for round_ in range(1, config.rounds + 1):
                if config.rounds > 1:
                    print(f"round {round_} of {config.rounds}", file=sys.stderr, flush=True)
                for concurrency in config.concurrencies:
                    for workload in WORKLOADS:
                        for result, side in sides:
                            result.runs.append(
                                await measure(
                                    side,
                                    workload,
                                    concurrency,
                                    warmup=(config.warmup_requests, config.warmup_seconds),
                                    bounds=(config.max_requests, config.max_seconds),
                                    client=config.client,
                                )
                            )
        finally:
            for result, servers in ((pi_result, [pi]), (sk_result, sk)):
                for server in servers:
                    server.stop()
                record_exit(result, servers)
    report.log_findings = [problem for _, side in sides for problem in side.problems]
    report.log_findings += [
        f"privacyIDEA log: {line}" for line in log_problems(pi_log, pi_log_offset)
    ]

    if config.count_requests:
        await count_both(report, deployment, pi_accounts, sk_dir, token, sk_accounts, stamp)


def record_exit(result: BackendResult, servers: Sequence[Server]) -> None:
    """How the side's servers ended; with several, the first unclean exit is the one shown."""
    unclean = [s for s in servers if not s.exited_cleanly]
    shown = unclean[0] if unclean else servers[0]
    result.exit_status = shown.process.returncode
    result.exited_cleanly = not unclean
    result.log_file = ", ".join(str(s.log_path.relative_to(REPO)) for s in servers)
    result.notable_log_lines = [line for s in servers for line in s.notable_log_lines()][:50]


async def count_both(
    report: Report,
    deployment: PiDeployment,
    pi_accounts: list[Account],
    sk_dir: Path,
    token: str,
    sk_accounts: list[Account],
    stamp: str,
) -> None:
    """Each server once more, with one process and the SQL trace on: a few checks, one by one."""
    n = report.config.count_requests + 1  # the first warms the caches and is not counted
    with tempfile.TemporaryDirectory(prefix="sqltrace-") as folder:
        trace = Path(folder) / "privacyidea.trace"
        log_path = RESULTS_DIR / f"compare_privacyidea-{stamp}-privacyidea-count.log"
        with pi_server(deployment, (1, 1), log_path, traced_env(deployment.env, trace)) as pi:
            await ready(pi, "/healthz/livez")
            account = pi_accounts[0]
            await run_counts(
                report,
                "privacyidea",
                pi,
                trace,
                valid=[
                    pi_check_request(pi.port, account.user_id, account.take_code())
                    for _ in range(n)
                ],
                wrong=[pi_check_request(pi.port, account.user_id, account.wrong_code())] * n,
                verdict=pi_verified,
            )
            pi.stop()
        trace = Path(folder) / "sparekey.trace"
        port = free_port()
        env = traced_env(server_env(**THROTTLE), trace)
        log_path = RESULTS_DIR / f"compare_privacyidea-{stamp}-sparekey-count.log"
        with running(
            "sparekey", sparekey_argv(sk_dir, port), port=port, env=env, log_path=log_path
        ) as sk:
            await ready(sk, "/healthz")
            account = sk_accounts[0]
            await run_counts(
                report,
                "sparekey",
                sk,
                trace,
                valid=[
                    verify_request(port, token, account.user_id, account.take_code())
                    for _ in range(n)
                ],
                wrong=[verify_request(port, token, account.user_id, account.wrong_code())] * n,
                verdict=is_verified,
            )
            sk.stop()


async def run_counts(
    report: Report,
    backend: str,
    server: Server,
    trace: Path,
    *,
    valid: Sequence[bytes],
    wrong: Sequence[bytes],
    verdict: Verdict,
) -> None:
    for workload, requests in (("verify-valid", valid), ("verify-wrong", wrong)):
        count = await count_statements(backend, workload, server, trace, requests, verdict)
        report.statements.append(count)
        print(
            f"  {backend} {workload}: {count.per_request} SQL statements per check",
            file=sys.stderr,
            flush=True,
        )


# --- Report ---


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One side's runs of one workload at one concurrency (one per round), by their medians."""

    runs: Sequence[RunResult]

    def _median(self, values: Iterator[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if len(known) == len(self.runs) else None

    @property
    def rps(self) -> float:
        return statistics.median(r.requests_per_second for r in self.runs)

    @property
    def p50_ms(self) -> float | None:
        return self._median(r.p50_ms for r in self.runs)

    @property
    def p99_ms(self) -> float | None:
        return self._median(r.p99_ms for r in self.runs)

    @property
    def server_cpu_pct(self) -> float | None:
        return self._median(r.server_cpu_pct for r in self.runs)


def comparison_rows(report: Report) -> list[dict[str, Any]]:
    """Per workload and concurrency: both sides' rate and latency (each the median of the
    rounds), the ratio of the medians, each round's own ratio, the target."""
    runs: dict[tuple[str, str, int], list[RunResult]] = {}
    for backend in report.backends:
        for r in backend.runs:
            runs.setdefault((r.backend, r.workload, r.concurrency), []).append(r)
    rows = []
    for workload in WORKLOADS:
        for concurrency in report.config.concurrencies:
            pi_runs = runs.get(("privacyidea", workload, concurrency))
            sk_runs = runs.get(("sparekey", workload, concurrency))
            if not pi_runs or not sk_runs:
                continue
            pi, sk = Cell(runs=pi_runs), Cell(runs=sk_runs)
            ratio = sk.rps / pi.rps if pi.rps else None
            lower_p99 = sk.p99_ms is not None and pi.p99_ms is not None and sk.p99_ms < pi.p99_ms
            cpu_ratio = None
            if pi.server_cpu_pct and sk.server_cpu_pct and pi.rps:
                per_cpu = sk.rps / sk.server_cpu_pct
                cpu_ratio = round(per_cpu / (pi.rps / pi.server_cpu_pct), 1)
            rounds = [
                round(s.requests_per_second / p.requests_per_second, 1)
                if p.requests_per_second
                else None
                for p, s in zip(pi_runs, sk_runs, strict=False)
            ]
            rows.append(
                {
                    "workload": workload,
                    "concurrency": concurrency,
                    "rounds": len(sk_runs),
                    "privacyidea_rps": round(pi.rps, 1),
                    "privacyidea_p50_ms": pi.p50_ms,
                    "privacyidea_p99_ms": pi.p99_ms,
                    "sparekey_rps": round(sk.rps, 1),
                    "sparekey_p50_ms": sk.p50_ms,
                    "sparekey_p99_ms": sk.p99_ms,
                    "ratio": None if ratio is None else round(ratio, 1),
                    "round_ratios": rounds,  # each round's Sparekey rate over privacyIDEA's
                    # verifications per second of server CPU, Sparekey's over privacyIDEA's
                    "ratio_per_cpu_second": cpu_ratio,
                    "target_met": ratio is not None and ratio >= TARGET_RATIO and lower_p99,
                }
            )
    return rows


def print_comparison(rows: Sequence[dict[str, Any]]) -> None:
    rounds = max((row["rounds"] for row in rows), default=1)
    medians = f", each figure the median of {rounds} rounds" if rounds > 1 else ""
    print(
        f"\nSparekey against privacyIDEA (target: at least {TARGET_RATIO:g}x the throughput "
        f"and a lower p99 at every concurrency{medians}):"
    )
    print(
        f"{'workload':<14}{'conc':>5}{'privacyIDEA req/s':>19}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'Sparekey req/s':>16}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>9}{'target':>9}"
        f"{'per CPU-s':>11}{'rounds':>8}"
    )
    for row in rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.1f}x"
        each = " ".join("-" if r is None else f"{r:.1f}" for r in row["round_ratios"])
        print(
            f"{row['workload']:<14}{row['concurrency']:>5}{row['privacyidea_rps']:>19.1f}"
            f"{fmt(row['privacyidea_p50_ms']):>9}{fmt(row['privacyidea_p99_ms']):>9}"
            f"{row['sparekey_rps']:>16.1f}{fmt(row['sparekey_p50_ms']):>9}"
            f"{fmt(row['sparekey_p99_ms']):>9}{ratio:>9}"
            f"{'met' if row['target_met'] else 'MISSED':>9}"
            f"{fmt(row['ratio_per_cpu_second'], 1) + 'x':>11}  {each}"
        )
    print(
        "per CPU-s: the ratio of verifications per second of server CPU (req/s over the srv cpu "
        "column), which does not depend on how much of the shared machine each server got."
    )
    if rounds > 1:
        print("rounds: each round's own ratio, in the order they ran.")


def print_statements(counts: Sequence[StatementCount]) -> None:
    if not counts:
        return
    print("\nSQL statements SQLite ran per check (one process, requests one at a time; BEGIN and")
    print("COMMIT included; background threads left out):")
    for c in counts:
        shown = ", ".join(f"{name} {n}" for name, n in list(c.statements.items())[:12])
        more = "" if len(c.statements) <= 12 else ", ..."
        print(
            f"  {c.backend:<12}{c.workload:<14}{c.median:>5g} ({c.data_statements} without "
            f"BEGIN, COMMIT, PRAGMA): {shown}{more}"
        )
        if c.background:
            print(f"  {'':<26}(+{c.background} by background threads meanwhile)")


def print_report(report: Report, rows: Sequence[dict[str, Any]]) -> None:
    config = report.config
    assert report.layout is not None
    nodes = "one process" if report.nodes == 1 else f"{report.nodes} processes on one file"
    print(
        f"\nprivacyIDEA {PI_VERSION} under gunicorn {GUNICORN_VERSION} "
        f"({layout_name(report.layout)}, the best of the probe), SQLite, SQL audit on, tokens "
        f"without PIN; Sparekey: `sparekey serve` ({nodes}, the best of the probe), SQLite, each "
        "client connection to one node in turn. HOTP (RFC 4226, SHA-1, "
        f"6 digits), {config.users} tokens or users per side. Each measured run: at most "
        f"{config.max_requests} requests or {config.max_seconds:g} s, after a warm-up of "
        f"{config.warmup_requests} requests or {config.warmup_seconds:g} s; every run "
        f"{config.rounds} time(s), the rounds in turn. CPU: server (for "
        "privacyIDEA, gunicorn and all its workers; for Sparekey, all its nodes) and client in % "
        "of one core; host busy and steal in % of all cores.\n"
    )
    if report.probes:
        print("gunicorn layouts probed (verify-valid, concurrency 8 and 32):")
        for probe in report.probes:
            rates = ", ".join(f"c{c}: {r:.1f}" for c, r in probe["rps"].items())
            layout = (probe["workers"], probe["threads"])
            print(f"  {layout_name(layout):<24} {rates} req/s")
        print()
    if report.sparekey_probes:
        print("Sparekey nodes probed (verify-valid, concurrency 8 and 32):")
        for probe in report.sparekey_probes:
            rates = ", ".join(f"c{c}: {r:.1f}" for c, r in probe["rps"].items())
            nodes = "1 process" if probe["nodes"] == 1 else f"{probe['nodes']} processes"
            print(f"  {nodes:<24} {rates} req/s")
        print()
    print_table([r for b in report.backends for r in b.runs])
    print_comparison(rows)
    valid = [r["privacyidea_rps"] for r in rows if r["workload"] == "verify-valid"]
    if valid:
        print(
            f"\nprivacyIDEA's best verify-valid rate here: {max(valid):.1f} req/s (the issue "
            f"recorded about {ISSUE_PI_RATE:g}/s with light PIN hashing, about 3/s with its "
            "default hashing)."
        )
    print_statements(report.statements)
    print_background(report.backends)
    print_checks(all_findings(report))


def all_findings(report: Report) -> list[str]:
    return findings(report.backends) + report.log_findings


def write_json(report: Report, rows: Sequence[dict[str, Any]], stamp: str) -> Path:
    document = {
        "benchmark": "compare_privacyidea",
        "started_at": stamp,
        "command": [Path(sys.executable).name, *sys.argv],
        "config": asdict(report.config),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "client_event_loop": loop_name(),
            "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "source": source_state(),
        "privacyidea": {
            "version": PI_VERSION,
            "gunicorn": GUNICORN_VERSION,
            "layout": {"workers": report.layout[0], "threads": report.layout[1]}
            if report.layout
            else None,
            "probes": report.probes,
            "pip_freeze": report.installed.get("freeze", []),
            "max_failcount": MAX_FAILCOUNT,
        },
        "sparekey": {
            "environment": THROTTLE,
            "nodes": report.nodes,
            "probes": report.sparekey_probes,
        },
        "backends": [asdict(b) for b in report.backends],
        "comparison": list(rows),
        "sql_statements": [{**asdict(c), "median": c.median} for c in report.statements],
        "findings": all_findings(report),
    }
    path = RESULTS_DIR / f"compare_privacyidea-{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


# --- Entry point ---


async def run_comparison(report: Report, stamp: str) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    busy, steal = await background_cpu()
    print(f"host before start: {pct(busy, 0)} busy, {pct(steal, 0)} stolen", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="sparekey-compare-") as work:
        await compare(report, Path(work), stamp)


def parse_layout(text: str) -> tuple[int, int]:
    workers, _, threads = text.partition("x")
    layout = (int(workers), int(threads or "1"))
    if min(layout) < 1:
        raise ValueError(text)
    return layout


def parse_args(argv: Sequence[str] | None) -> tuple[Config, tuple[int, int] | None, int | None]:
    parser = argparse.ArgumentParser(description="privacyIDEA and Sparekey, side by side.")
    parser.add_argument("--quick", action="store_true", help="small runs, a smoke test")
    parser.add_argument("--requests", type=int, help="request bound of each measured run")
    parser.add_argument("--seconds", type=float, help="time bound of each measured run")
    parser.add_argument("--users", type=int, help="tokens (privacyIDEA) and users (Sparekey)")
    parser.add_argument(
        "--concurrency",
        type=positive_ints,
        default=FULL.concurrencies,
        help="comma-separated requests in flight, one run each [1,8,32]",
    )
    parser.add_argument(
        "--layout",
        help="gunicorn WORKERSxTHREADS for privacyIDEA (e.g. 4x1), instead of probing",
    )
    parser.add_argument(
        "--sparekey-nodes",
        type=int,
        help="`sparekey serve` processes on Sparekey's one database, instead of probing 1 and 2",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="measure every run this many times, in turn, and compare the medians [3; quick 1]",
    )
    parser.add_argument(
        "--no-count", action="store_true", help="skip counting SQL statements per check"
    )
    parser.add_argument(
        "--pi-sqlite-defaults",
        action="store_true",
        help="run privacyIDEA's SQLite as it comes (rollback journal, fsync at every commit)",
    )
    parser.add_argument(
        "--client",
        choices=("native", "python"),
        default="native",
        help="load client: bench/loadclient.c, built with the C compiler [native], or asyncio",
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    concurrencies = args.concurrency
    try:
        layout = parse_layout(args.layout) if args.layout else None
    except ValueError:
        parser.error("--layout takes WORKERSxTHREADS, like 4x1")
    config = replace(
        config,
        concurrencies=concurrencies,
        max_requests=args.requests or config.max_requests,
        max_seconds=args.seconds or config.max_seconds,
        users=args.users or config.users,
        count_requests=0 if args.no_count else config.count_requests,
        pi_sqlite_defaults=args.pi_sqlite_defaults,
        client=args.client,
        rounds=config.rounds if args.rounds is None else args.rounds,
    )
    if config.rounds < 1:
        parser.error("--rounds must be at least 1")
    if config.users < max(*config.concurrencies, 32):
        parser.error(f"--users must be at least {max(*config.concurrencies, 32)}")
    if args.sparekey_nodes is not None and args.sparekey_nodes < 1:
        parser.error("--sparekey-nodes must be at least 1")
    return config, layout, args.sparekey_nodes


def main(argv: Sequence[str] | None = None) -> int:
    config, layout, nodes = parse_args(argv)
    if config.client == "native":
        try:
            client_binary()
        except LoadClientError as exc:
            print(f"error: {exc} (or run with --client python)", file=sys.stderr)
            return 2
    stamp = results_stamp()
    installed = ensure_privacyidea()
    report = Report(config=config, installed=installed, layout=layout, nodes=nodes)
    run(run_comparison(report, stamp))
    rows = comparison_rows(report)
    print_report(report, rows)
    path = write_json(report, rows, stamp)
    print(f"\nResults: {path.relative_to(REPO)}")
    return 1 if all_findings(report) else 0


if __name__ == "__main__":
    sys.exit(main())
