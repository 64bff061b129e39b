"""Sparekey's verify endpoint with 1,000 and with 1,000,000 enrolled users, side by side.

Each population is generated in bulk (not over HTTP) with Sparekey's own keyring and auditor, so
the database holds what enrolment writes: per user, a ``users`` row, a confirmed HOTP factor whose
seed is sealed by the keyring (AES-256-GCM, bound to the user and the factor), and the three
audit records ``user.created``, ``factor.enrolled`` and ``factor.confirmed`` by the admin API key,
sealed into the hash chain by the auditor. A reference user enrolled through the services in a
scratch deployment checks, at every generation, that the bulk rows look like real ones.

The databases are cached under bench/.scale/ (git-ignored); each run measures copies of them.
With ``--backend postgres`` each population is a database of its own on 127.0.0.1:5432
(``sparekey_scale_<N>``, kept as the cache, its key file under bench/.scale/postgres-<N>/); each
run measures a copy made with ``CREATE DATABASE ... TEMPLATE``, dropped at the end.
Both sizes then run behind their own ``sparekey serve`` at once, and the load alternates between
them, round after round (1k, 1M, 1M, 1k, ...), with users drawn at random from the whole
population. Prints the medians over the rounds and the ratio 1M/1k; writes JSON to bench/results/.

    .venv/bin/python bench/scale_users.py [--sizes 1000,1000000] [--rounds 4] [--quick]
        [--backend sqlite|postgres]

Seeds are derived from each user's id with a fixed, public label, so the client can compute
codes for any user without a list of secrets: a generated database is for this benchmark only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import SQLAlchemyError

from cpu import CpuMeter, CpuUse, background_cpu
from loadgen import RequestSource, build_request, is_verified, positive_ints
from nativeload import LoadClientError, client_binary, run_native
from servers import (
    PG_ADMIN_URL,
    REPO,
    SPAREKEY,
    Server,
    ServerError,
    free_port,
    running,
    server_env,
    sparekey_argv,
    sparekey_init,
    wait_ready,
)
from sparekey.domain.models import Caller, FactorType
from sparekey.runtime import Sparekey
from sparekey.services._ids import new_id
from sparekey.services.audit import AuditEntry
from sparekey.services.otp import secret_aad
from sparekey.settings import load_settings
from sparekey.storage import factors as factors_repo
from sparekey.storage import throttle as throttle_repo
from sparekey.storage.database import Database
from sparekey.storage.prepared import Unit
from sparekey.storage.tables import api_keys, audit_events, factors, users
from verify_load import Config as LoadConfig
from verify_load import (
    hotp,
    loop_name,
    results_stamp,
    run,
    source_state,
    verify_request,
)
from verify_load import measure as measure_python
from verify_report import (
    BackendResult,
    RunResult,
    findings,
    fmt,
    print_background,
    print_checks,
    print_table,
    progress_line,
    summarize,
)

RESULTS_DIR = REPO / "bench" / "results"
CACHE = REPO / "bench" / ".scale"  # git-ignored: generated deployments, reused across runs
SEED_LABEL = b"sparekey-bench-scale-users-v1"  # public: these seeds protect nothing
BATCH = 10_000  # users per write transaction while generating
THROTTLE = {"SPAREKEY_THROTTLE_FREE_FAILURES": "20"}
WORKLOADS = ("verify-valid", "verify-wrong")
FLAT = 0.10  # "flat": throughput and p50 within 10% of the small population's
SETTLE_CONCURRENCY = 8


@dataclass(frozen=True, kw_only=True)
class Config:
    backend: str
    sizes: tuple[int, ...]
    rounds: int
    concurrencies: tuple[int, ...]
    max_requests: int
    max_seconds: float
    warmup_requests: int
    warmup_seconds: float
    settle_seconds: float  # per size, before the first round: valid codes at concurrency 8


FULL = Config(
    backend="sqlite",
    sizes=(1_000, 1_000_000),
    rounds=4,
    concurrencies=(1, 8, 32),
    max_requests=3_000,
    max_seconds=5.0,
    warmup_requests=300,
    warmup_seconds=1.0,
    settle_seconds=60.0,
)
QUICK = Config(
    backend="sqlite",
    sizes=(1_000, 20_000),
    rounds=2,
    concurrencies=(1, 8),
    max_requests=300,
    max_seconds=1.5,
    warmup_requests=50,
    warmup_seconds=0.3,
    settle_seconds=0.0,
)


def user_id(n: int) -> str:
    return f"u{n:07d}"


def seed(n: int) -> bytes:
    """User n's HOTP seed (160 bits, as enrolment makes for SHA-1)."""
    return hmac.new(SEED_LABEL, user_id(n).encode(), hashlib.sha1).digest()


def label(size: int) -> str:
    for unit, name in ((1_000_000, "M"), (1_000, "k")):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{name}"
    return str(size)


# --- Generating a population with Sparekey's own code ---


class AuditRows(Unit):
    """Stands where the auditor expects a unit of work, and keeps the rows it would insert, so
    they can be written many at a time. Anything else the auditor writes is refused."""

    def __init__(self) -> None:  # no connection: nothing is executed here
        self.writing = True
        self.rows: list[dict[str, Any]] = []

    def execute(self, prepared: Any, parameters: Any) -> Any:
        if getattr(prepared.statement, "table", None) is not audit_events:
            raise RuntimeError(f"the auditor now also writes: {prepared.statement}")
        self.rows.append(dict(parameters))
        return None

    def write(self) -> AuditRows:
        return self


def enrolment_rows(
    app: Sparekey, numbers: Iterable[int], caller: Caller
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows that creating each user, enrolling an HOTP factor and confirming it write."""
    now = app.clock.now()
    user_rows, factor_rows, audit = [], [], AuditRows()
    for n in numbers:
        uid, fid = user_id(n), new_id("fct")
        key_id, sealed = app.keyring.encrypt(seed(n), aad=secret_aad(user_id=uid, factor_id=fid))
        user_rows.append(
            {"id": uid, "display_name": None, "email": None, "created_at": now, "updated_at": now}
        )
        factor_rows.append(
            {
                "id": fid,
                "user_id": uid,
                "type": FactorType.HOTP.value,
                "status": "active",
                "label": None,
                "algorithm": "SHA1",
                "digits": 6,
                "period": None,
                "secret": sealed,
                "secret_key_id": key_id,
                "last_step": 0,  # confirmed with the code of counter 0
                "drift": 0,
                "created_at": now,
                "confirmed_at": now,
                "last_used_at": now,
                "expires_at": None,
                "destination": None,
                "usable_after": None,
                "destination_unconfirmed": False,
            }
        )
        details = {"factor_id": fid, "factor_type": FactorType.HOTP.value}
        for entry in (
            AuditEntry(event="user.created", user_id=uid),
            AuditEntry(event="factor.enrolled", user_id=uid, details=details),
            AuditEntry(event="factor.confirmed", user_id=uid, details=details),
        ):
            app.audit.record(audit, entry, caller)
    return user_rows, factor_rows, audit.rows


def admin_caller(app: Sparekey) -> Caller:
    """The API key ``sparekey init`` made: enrolment over HTTP acts as it."""
    with app.db.read() as conn:
        key_id = conn.execute(select(api_keys.c.id).order_by(api_keys.c.created_at)).scalar()
    return Caller(type="api_key", id=key_id)


def insert_population(app: Sparekey, first: int, last: int, *, progress: bool) -> None:
    """Users ``first``..``last`` in batches, each in one transaction, sealed after each batch
    as the running server's sealer would."""
    caller = admin_caller(app)
    started = time.perf_counter()
    for start in range(first, last + 1, BATCH):
        numbers = range(start, min(start + BATCH, last + 1))
        user_rows, factor_rows, audit_rows = enrolment_rows(app, numbers, caller)
        with app.db.write() as conn:
            conn.execute(insert(users), user_rows)
            conn.execute(insert(factors), factor_rows)
            conn.execute(insert(audit_events), audit_rows)
        app.audit.seal_all()
        done = numbers[-1]
        if progress and (done % 100_000 == 0 or done == last):
            rate = (done - first + 1) / (time.perf_counter() - started)
            print(f"    {done:,} users ({rate:,.0f}/s)", file=sys.stderr, flush=True)


def check_fidelity() -> None:
    """Enrol a reference user through the services (as the HTTP API does) and generate one in
    bulk, in a scratch deployment; their rows must differ only where two enrolments do."""
    with tempfile.TemporaryDirectory(prefix="sparekey-scale-check-") as folder:
        data_dir = Path(folder)
        sparekey_init(data_dir, server_env())
        app = Sparekey.open(load_settings(data_dir))
        try:
            caller = admin_caller(app)
            ref = "reference"
            app.users.create(user_id=ref, display_name=None, email=None, caller=caller)
            enrolment = app.factors.enroll(ref, type=FactorType.HOTP, caller=caller)
            code = hotp(enrolment.secret, 0)
            app.factors.confirm(ref, enrolment.factor.id, code=code, caller=caller)
            insert_population(app, 1, 1, progress=False)
            problems = _differences(app, ref, user_id(1))
            if not app.verification.verify(user_id(1), hotp(seed(1), 1), caller=caller).verified:
                problems.append("a generated user's next code does not verify")
            chain = app.audit.verify()
            if not chain.ok:
                problems.append(f"the audit chain does not verify: {chain.problem}")
        finally:
            app.close()
    if problems:
        raise ServerError("generated rows differ from enrolled ones: " + "; ".join(problems))


# Columns whose values differ between any two enrolments (ids, times, digests, chain positions)
_PER_ENROLMENT = {"id", "user_id", "created_at", "updated_at", "confirmed_at", "last_used_at"}
_PER_ENROLMENT |= {"occurred_at", "personal_digest", "record_mac", "seq", "chain_digest"}


def _rows(conn: Any, table: Any, uid: str) -> list[dict[str, Any]]:
    if table is users:
        stmt = select(users).where(users.c.id == uid)
    else:
        stmt = select(table).where(table.c.user_id == uid).order_by(table.c.id)
    return [dict(row) for row in conn.execute(stmt).mappings()]


def _same(column: str, enrolled: Any, made: Any, factor_ids: tuple[str, str]) -> bool:
    if column == "secret":  # sealed under a random nonce: the same shape, never the same bytes
        return isinstance(made, bytes) and len(made) == len(enrolled)
    if column == "details":  # names the factor, whose id is random
        return json.loads(made) == json.loads(enrolled.replace(factor_ids[0], factor_ids[1]))
    if column in _PER_ENROLMENT:
        return (enrolled is None) == (made is None) and type(enrolled) is type(made)
    return bool(enrolled == made)


def _differences(app: Sparekey, reference: str, generated: str) -> list[str]:
    problems = []
    with app.db.read() as conn:
        ref_factor, gen_factor = (_rows(conn, factors, u)[0]["id"] for u in (reference, generated))
        for table in (users, factors, audit_events):
            enrolled, made = _rows(conn, table, reference), _rows(conn, table, generated)
            if len(enrolled) != len(made):
                problems.append(f"{table.name}: {len(enrolled)} rows enrolled, {len(made)} made")
                continue
            for ref_row, gen_row in zip(enrolled, made, strict=True):
                for column, value in ref_row.items():
                    if not _same(column, value, gen_row[column], (ref_factor, gen_factor)):
                        problems.append(
                            f"{table.name}.{column}: {value!r} enrolled, {gen_row[column]!r} made"
                        )
    return problems


# --- The cache of generated deployments ---


def schema_head() -> str:
    """The schema revision this code migrates to: a cache made by another one is remade."""
    with tempfile.TemporaryDirectory() as folder:
        database = Database(f"sqlite:///{Path(folder) / 'unused.db'}")
        try:
            return database.head_revision()
        finally:
            database.dispose()


def pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def pg_admin(statement: str, **params: str) -> Any:
    """Run one statement as PostgreSQL's administrator, outside a transaction."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None
    except SQLAlchemyError as exc:
        raise ServerError(f"PostgreSQL at {PG_ADMIN_URL}: {exc}") from exc
    finally:
        admin.dispose()


def pg_cache_name(size: int) -> str:
    return f"sparekey_scale_{size}"


def pg_exists(name: str) -> bool:
    return bool(pg_admin("SELECT 1 FROM pg_database WHERE datname = :name", name=name))


def database_env(backend: str, database: str | None) -> dict[str, str]:
    """What a deployment's processes need besides their data directory."""
    return {"SPAREKEY_DATABASE_URL": pg_url(database)} if backend == "postgres" and database else {}


def cached_deployment(size: int, backend: str) -> Path:
    """The data directory of a generated population of ``size``, made if missing or made by an
    older schema (on PostgreSQL, with its database ``sparekey_scale_<size>``)."""
    folder = CACHE / f"{backend}-{size}"
    marker = folder / "generated.json"
    head = schema_head()
    database = pg_cache_name(size) if backend == "postgres" else None
    made = marker.exists() and json.loads(marker.read_text("utf-8")).get("schema") == head
    if made and (database is None or pg_exists(database)):
        return folder
    print(f"generating {size:,} users into {folder.relative_to(REPO)} ...", file=sys.stderr)
    check_fidelity()
    partial = CACHE / f"{backend}-{size}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    if database is not None:
        pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        pg_admin(f'CREATE DATABASE "{database}"')
    started = time.perf_counter()
    env = database_env(backend, database)
    sparekey_init(partial, server_env(**env))  # its admin key is printed and dropped
    app = Sparekey.open(load_settings(partial, database_url=env.get("SPAREKEY_DATABASE_URL")))
    try:
        insert_population(app, 1, size, progress=True)
        with app.db.engine.connect() as conn:
            if backend == "sqlite":
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        app.close()
    if database is not None:  # as autovacuum would soon: statistics and the visibility map
        vacuum = create_engine(pg_url(database), isolation_level="AUTOCOMMIT")
        try:
            with vacuum.connect() as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        finally:
            vacuum.dispose()
        pg_admin("CHECKPOINT")
    seconds = round(time.perf_counter() - started, 1)
    info = {
        "users": size,
        "backend": backend,
        "database": database,
        "schema": head,
        "seconds": seconds,
        "source": source_state(),
    }
    (partial / "generated.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    partial.rename(folder)
    print(f"  {size:,} users generated in {seconds:,.0f} s", file=sys.stderr, flush=True)
    return folder


def working_copy(cached: Path, work: Path, backend: str) -> tuple[Path, str, str | None]:
    """A copy of a cached deployment to measure (verifying moves counters and adds audit
    records), with a fresh verify-scope API key for the load, kept in memory only; on
    PostgreSQL, also the name of the database copied from the cached one."""
    target = work / cached.name
    shutil.copytree(cached, target)
    database = None
    if backend == "postgres":
        size = json.loads((cached / "generated.json").read_text(encoding="utf-8"))["users"]
        database = f"{pg_cache_name(size)}_work"
        pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        pg_admin(f'CREATE DATABASE "{database}" TEMPLATE "{pg_cache_name(size)}"')
    done = subprocess.run(
        [str(SPAREKEY), "apikey", "create", "scale-bench", "--scope", "verify"],
        env=server_env(SPAREKEY_DATA_DIR=str(target), **database_env(backend, database)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ServerError(f"sparekey apikey create failed: {done.stderr.strip()[-1000:]}")
    return target, lines[-1].strip(), database


# --- Load: random users over the whole population ---


@dataclass
class Population:
    """The client's view of one deployment: its size and each used user's next HOTP counter."""

    size: int
    token: str
    port: int = 0
    counters: dict[int, int] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(20260601))

    def pick(self, rng: random.Random, worker: int, workers: int) -> int:
        """A user drawn at random among those this worker owns (n % workers == worker), so no
        user ever has two requests in flight."""
        while True:
            n = rng.randrange(1, self.size + 1)
            if n % workers == worker:
                return n

    def valid_source(self, rng: random.Random, worker: int, workers: int) -> RequestSource:
        def next_request() -> bytes:
            n = self.pick(rng, worker, workers)
            counter = self.counters.get(n, 1)
            self.counters[n] = counter + 1
            return verify_request(self.port, self.token, user_id(n), hotp(seed(n), counter))

        return next_request

    def wrong_source(self, rng: random.Random, worker: int, workers: int) -> RequestSource:
        def next_request() -> bytes:
            n = self.pick(rng, worker, workers)
            return verify_request(self.port, self.token, user_id(n), self.wrong_code(n))

        return next_request

    def wrong_code(self, n: int) -> str:
        """A code that no counter the server would try for user n produces (its look-ahead is
        10 counters by default; 40 are avoided)."""
        key, counter = seed(n), self.counters.get(n, 1)
        near = {hotp(key, c) for c in range(max(0, counter - 10), counter + 30)}
        return next(f"{c:06d}" for c in range(1_000_000) if f"{c:06d}" not in near)

    def sources(self, workload: str, workers: int) -> list[RequestSource]:
        """One source per worker, each drawing its users from a generator of its own (seeded
        from the population's), so that what one worker sends does not depend on how far the
        others got: the C client's requests are built ahead, and what was sent replayed."""
        make = self.valid_source if workload == "verify-valid" else self.wrong_source
        rngs = [random.Random(self.rng.getrandbits(64)) for _ in range(workers)]
        return [make(rng, worker, workers) for worker, rng in enumerate(rngs)]


@dataclass
class Rewind:
    """The whole client-side state of a population, as :func:`nativeload.run_native` winds an
    account back: read ``next_counter`` to take it, assign it to put it back."""

    population: Population

    @property
    def next_counter(self) -> Any:
        return dict(self.population.counters), self.population.rng.getstate()

    @next_counter.setter
    def next_counter(self, state: Any) -> None:
        counters, rng_state = state
        self.population.counters = dict(counters)
        self.population.rng.setstate(rng_state)


async def measure(
    server: Server,
    backend: str,
    workload: str,
    population: Population,
    concurrency: int,
    config: LoadConfig,
) -> RunResult:
    """Warm up, then one bounded measured run, driven by the C load client (``loadclient.c``,
    as the comparison's): one keep-alive connection per worker, every answer judged."""
    ports = [server.port] * concurrency
    native = functools.partial(
        run_native,
        ports,
        lambda: population.sources(workload, concurrency),
        [Rewind(population)],
        verdict=is_verified,
    )
    warm = await native(max_requests=config.warmup_requests, max_seconds=config.warmup_seconds)
    wrong = warm.requests - warm.verified if workload == "verify-valid" else warm.verified
    if wrong or warm.errors:  # the warm-up's answers are judged as well
        raise ServerError(
            f"{backend} {workload} c={concurrency} warm-up: {wrong} wrong answers, "
            f"{warm.errors} errors; e.g. {warm.samples[:2]}"
        )
    meter = CpuMeter(server.pid)
    readings: list[CpuUse] = []
    stats = await native(
        max_requests=config.max_requests,
        max_seconds=config.max_seconds,
        on_start=meter.start,
        on_stop=lambda seconds: readings.append(meter.read(client_elsewhere=seconds)),
    )
    server.check_alive()
    result = summarize(backend, workload, concurrency, stats, readings[0])
    print(progress_line(result), file=sys.stderr, flush=True)
    return result


# --- Query plans of the hot path ---


_EXPLAINED = {
    "read the user, throttle and factors": factors_repo._VERIFY_STATE,
    "advance the HOTP counter": factors_repo._ADVANCE,
    "count a failure": throttle_repo._FAILURE,
    "reset the failures": throttle_repo._SUCCESS,
}


def explain(data_dir: Path, database: str | None) -> dict[str, list[str]]:
    """The database's plan for each statement of a verification, on the given deployment."""
    now = datetime.now(UTC)
    params = {"user_id": user_id(1), "now": now, "factor_id": "fct_x", "step": 1, "drift": 0}
    if database is not None:
        return _explain_postgres(database, params)
    dialect = sqlite_dialect.dialect()
    plans = {}
    db = sqlite3.connect(data_dir / "sparekey.db")
    try:
        for name, prepared in _EXPLAINED.items():
            compiled = prepared.compiled(dialect)
            rows = db.execute("EXPLAIN QUERY PLAN " + compiled.sql, compiled.parameters(params))
            plans[name] = [row[-1] for row in rows]
        plans["audit record"] = [f"INSERT INTO audit_events: {_indexes(db, 'audit_events')}"]
    finally:
        db.close()
    return plans


def _explain_postgres(database: str, params: dict[str, Any]) -> dict[str, list[str]]:
    """PostgreSQL's plans (``EXPLAIN``, not run: nothing changes), scans and joins only."""
    dialect = postgresql_dialect.psycopg.dialect()
    engine = create_engine(pg_url(database))
    plans = {}
    try:
        with engine.connect() as conn:
            for name, prepared in _EXPLAINED.items():
                compiled = prepared.compiled(dialect)
                rows = conn.exec_driver_sql("EXPLAIN " + compiled.sql, compiled.parameters(params))
                lines = [str(row[0]).strip().removeprefix("-> ").strip() for row in rows]
                plans[name] = [line for line in lines if "Scan" in line or "Join" in line]
            indexes = conn.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_events'"
            ).all()
            names = ", ".join(sorted(str(row[0]) for row in indexes))
            plans["audit record"] = [
                f"INSERT INTO audit_events: the table and its {len(indexes)} indexes ({names})"
            ]
            conn.rollback()
    finally:
        engine.dispose()
    return plans


def _indexes(db: sqlite3.Connection, table: str) -> str:
    names = [row[1] for row in db.execute(f"PRAGMA index_list({table})")]
    return f"the table and its {len(names)} indexes ({', '.join(sorted(names))})"


# --- The run ---


@dataclass
class Report:
    config: Config
    generated: dict[int, dict[str, Any]] = field(default_factory=dict)
    backends: list[BackendResult] = field(default_factory=list)
    rounds: list[list[RunResult]] = field(default_factory=list)
    settling: list[RunResult] = field(default_factory=list)
    plans: dict[str, list[str]] = field(default_factory=dict)


async def measure_rounds(report: Report, work: Path, stamp: str) -> None:
    config = report.config
    populations: dict[int, Population] = {}
    results: dict[int, BackendResult] = {}
    servers: dict[int, Server] = {}
    copies: dict[int, Path] = {}
    databases: dict[int, str | None] = {}
    with contextlib.ExitStack() as stack:
        for size in config.sizes:
            cached = cached_deployment(size, config.backend)
            report.generated[size] = json.loads((cached / "generated.json").read_text("utf-8"))
            print(f"copying {cached.relative_to(REPO)} ...", file=sys.stderr, flush=True)
            copies[size], token, databases[size] = working_copy(cached, work, config.backend)
            if databases[size] is not None:
                stack.callback(
                    pg_admin, f'DROP DATABASE IF EXISTS "{databases[size]}" WITH (FORCE)'
                )
            populations[size] = Population(size=size, token=token)
        largest = max(config.sizes)
        report.plans = explain(copies[largest], databases[largest])
        for size in config.sizes:
            busy, steal = await background_cpu()
            result = BackendResult(
                backend=label(size), background_cpu_pct=busy, background_steal_pct=steal
            )
            result.users = size
            report.backends.append(result)
            port = free_port()
            log_path = RESULTS_DIR / f"scale_users-{stamp}-{label(size)}.log"
            server = stack.enter_context(
                running(
                    f"sparekey ({label(size)} users)",
                    sparekey_argv(copies[size], port),
                    port=port,
                    env=server_env(**THROTTLE, **database_env(config.backend, databases[size])),
                    log_path=log_path,
                )
            )
            await wait_ready(server, build_probe(port))
            populations[size].port = port
            results[size], servers[size] = result, server
        load = LoadConfig(
            users=0,
            concurrencies=config.concurrencies,
            max_requests=config.max_requests,
            max_seconds=config.max_seconds,
            warmup_requests=config.warmup_requests,
            warmup_seconds=config.warmup_seconds,
        )
        try:
            await settle(report, populations, servers)
            for round_number in range(config.rounds):
                order = config.sizes if round_number % 2 == 0 else config.sizes[::-1]
                print(f"round {round_number + 1}: {', '.join(map(label, order))}", file=sys.stderr)
                runs = []
                for concurrency in config.concurrencies:
                    for workload in WORKLOADS:
                        for size in order:
                            run_result = await measure(
                                servers[size],
                                label(size),
                                workload,
                                populations[size],
                                concurrency,
                                load,
                            )
                            results[size].runs.append(run_result)
                            runs.append(run_result)
                report.rounds.append(runs)
        finally:
            for size, server in servers.items():
                server.stop()
                record_exit(results[size], server)


async def settle(
    report: Report, populations: dict[int, Population], servers: dict[int, Server]
) -> None:
    """Before the rounds, each server verifies valid codes for ``settle_seconds`` (not measured),
    so that the rounds see what a server that has been running a while sees: a page cache holding
    what verification reads, whatever the population's size. The runs are kept in the report."""
    seconds = report.config.settle_seconds
    if seconds <= 0:
        return
    load = LoadConfig(
        users=0,
        concurrencies=(SETTLE_CONCURRENCY,),
        max_requests=10_000_000,
        max_seconds=seconds,
        warmup_requests=0,
        warmup_seconds=0.0,
    )
    for size, population in populations.items():
        print(f"settling {label(size)} for {seconds:g} s ...", file=sys.stderr, flush=True)
        sources = population.sources("verify-valid", SETTLE_CONCURRENCY)
        report.settling.append(
            await measure_python([servers[size]], label(size), "verify-valid", sources, load)
        )


def build_probe(port: int) -> bytes:
    return build_request("GET", port, "/healthz", headers={})


def record_exit(result: BackendResult, server: Server) -> None:
    result.exit_status = server.process.returncode
    result.exited_cleanly = server.exited_cleanly
    result.log_file = str(server.log_path.relative_to(REPO))
    result.notable_log_lines = server.notable_log_lines()[:50]


# --- Report ---


def medians(report: Report) -> list[dict[str, Any]]:
    """Per size, workload and concurrency: the median over the rounds of each figure."""
    rows = []
    for size in report.config.sizes:
        for workload in WORKLOADS:
            for concurrency in report.config.concurrencies:
                runs = [
                    r
                    for b in report.backends
                    if b.backend == label(size)
                    for r in b.runs
                    if r.workload == workload and r.concurrency == concurrency
                ]
                if not runs:
                    continue

                def median(values: Iterable[float | None]) -> float | None:
                    known = [v for v in values if v is not None]
                    return round(statistics.median(known), 3) if known else None

                rows.append(
                    {
                        "users": size,
                        "workload": workload,
                        "concurrency": concurrency,
                        "rounds": len(runs),
                        "requests_per_second": median(r.requests_per_second for r in runs),
                        "p50_ms": median(r.p50_ms for r in runs),
                        "p99_ms": median(r.p99_ms for r in runs),
                        "rps_each_round": [r.requests_per_second for r in runs],
                    }
                )
    return rows


def ratios(report: Report, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Largest population against the smallest: throughput, p50 and p99."""
    small, large = min(report.config.sizes), max(report.config.sizes)
    by_key = {(r["users"], r["workload"], r["concurrency"]): r for r in rows}
    found = []
    for workload in WORKLOADS:
        for concurrency in report.config.concurrencies:
            a = by_key.get((small, workload, concurrency))
            b = by_key.get((large, workload, concurrency))
            if a is None or b is None:
                continue

            def ratio(name: str, a: dict[str, Any] = a, b: dict[str, Any] = b) -> float | None:
                return round(b[name] / a[name], 3) if a[name] and b[name] is not None else None

            rps, p50, p99 = ratio("requests_per_second"), ratio("p50_ms"), ratio("p99_ms")
            flat = rps is not None and p50 is not None and rps >= 1 - FLAT and p50 <= 1 + FLAT
            found.append(
                {
                    "workload": workload,
                    "concurrency": concurrency,
                    "rps_ratio": rps,
                    "p50_ratio": p50,
                    "p99_ratio": p99,
                    "flat": flat,
                }
            )
    return found


def print_report(
    report: Report, rows: Sequence[dict[str, Any]], flat: Sequence[dict[str, Any]]
) -> None:
    config = report.config
    small, large = label(min(config.sizes)), label(max(config.sizes))
    print(
        f"\nSparekey (`sparekey serve`, SQLite) with {', '.join(f'{s:,}' for s in config.sizes)} "
        "enrolled users (HOTP, generated in bulk), each behind its own server; users drawn at "
        f"random from the whole population. {config.rounds} rounds, the sizes alternating; each "
        f"measured run: at most {config.max_requests} requests or {config.max_seconds:g} s after "
        f"a warm-up of {config.warmup_requests} requests or {config.warmup_seconds:g} s. "
        f"Before the first round each server settled for {config.settle_seconds:g} s "
        f"(valid codes at concurrency {SETTLE_CONCURRENCY}, not measured).\n"
    )
    print_table([r for runs in report.rounds for r in runs])
    print(f"\nMedians over {config.rounds} rounds:")
    print(
        f"{'users':>10}{'workload':>14}{'conc':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        "   each round's req/s"
    )
    for row in rows:
        each = ", ".join(f"{v:.0f}" for v in row["rps_each_round"])
        print(
            f"{row['users']:>10,}{row['workload']:>14}{row['concurrency']:>6}"
            f"{fmt(row['requests_per_second'], 1):>10}{fmt(row['p50_ms']):>9}"
            f"{fmt(row['p99_ms']):>9}   {each}"
        )
    print(
        f"\n{large} against {small} users (medians; flat = throughput and p50 within {FLAT:.0%}):"
    )
    print(f"{'workload':>14}{'conc':>6}{'req/s':>9}{'p50':>8}{'p99':>8}")
    for row in flat:
        print(
            f"{row['workload']:>14}{row['concurrency']:>6}{fmt(row['rps_ratio'], 3):>9}"
            f"{fmt(row['p50_ratio'], 3):>8}{fmt(row['p99_ratio'], 3):>8}"
            f"   {'flat' if row['flat'] else 'NOT FLAT'}"
        )
    if report.plans:
        engine = "SQLite" if report.config.backend == "sqlite" else "PostgreSQL"
        print(f"\n{engine}'s plans for a verification's statements ({large} users):")
        for name, plan in report.plans.items():
            print(f"  {name}:")
            for line in plan:
                print(f"    {line}")
    print_background(report.backends)
    print_checks(all_findings(report))


def all_findings(report: Report) -> list[str]:
    """What looked wrong in the rounds and in the settling runs before them."""
    settling = BackendResult(backend="settling", runs=report.settling)
    return findings([*report.backends, settling])


def write_json(
    report: Report, rows: Sequence[dict[str, Any]], flat: Sequence[dict[str, Any]], stamp: str
) -> Path:
    document = {
        "benchmark": "scale_users",
        "started_at": stamp,
        "command": [Path(sys.executable).name, *sys.argv],
        "config": asdict(report.config),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "backend": report.config.backend,
            "platform": platform.platform(),
            "client_event_loop": loop_name(),
            "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "source": source_state(),
        "generated": {str(k): v for k, v in report.generated.items()},
        "backends": [asdict(b) for b in report.backends],
        "settling": [asdict(r) for r in report.settling],
        "medians": list(rows),
        "ratios": list(flat),
        "plans": report.plans,
    }
    path = RESULTS_DIR / f"scale_users-{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


# --- Entry point ---


async def run_scale(report: Report, stamp: str) -> list[BackendResult]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="work-", dir=CACHE) as work:
        await measure_rounds(report, Path(work), stamp)
    return report.backends


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description="Sparekey's verify endpoint at 1k and 1M users.")
    parser.add_argument("--quick", action="store_true", help="1k and 20k users, short runs")
    parser.add_argument(
        "--sizes", type=positive_ints, help="comma-separated populations [1000,1000000]"
    )
    parser.add_argument("--rounds", type=int, help="rounds of every run, sizes alternating [4]")
    parser.add_argument(
        "--settle",
        type=float,
        help="seconds each server verifies before the first round, not measured [60; --quick 0]",
    )
    parser.add_argument("--requests", type=int, help="request bound of each measured run")
    parser.add_argument("--seconds", type=float, help="time bound of each measured run")
    parser.add_argument(
        "--concurrency", type=positive_ints, help="comma-separated requests in flight [1,8,32]"
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the database: SQLite files, or PostgreSQL on 127.0.0.1:5432 [sqlite]",
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    sizes = args.sizes or config.sizes
    concurrencies = args.concurrency or config.concurrencies
    if len(set(sizes)) < 2 or min(sizes) < max(concurrencies):
        parser.error("--sizes needs two sizes or more, each at least the highest concurrency")
    return replace(
        config,
        backend=args.backend,
        sizes=tuple(sorted(set(sizes))),
        concurrencies=concurrencies,
        rounds=args.rounds or config.rounds,
        settle_seconds=config.settle_seconds if args.settle is None else args.settle,
        max_requests=args.requests or config.max_requests,
        max_seconds=args.seconds or config.max_seconds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        client_binary()
    except LoadClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stamp = results_stamp()
    report = Report(config=config)
    run(run_scale(report, stamp))
    rows = medians(report)
    flat = ratios(report, rows)
    print_report(report, rows, flat)
    path = write_json(report, rows, flat, stamp)
    print(f"\nResults: {path.relative_to(REPO)}")
    return 1 if all_findings(report) else 0


if __name__ == "__main__":
    sys.exit(main())
