"""Security notifications and audit sealing: webhooks per second of one delivery worker, and
records per second of one audit sealer, on SQLite and on PostgreSQL.

    .venv/bin/python bench/notifications.py [--messages 2000] [--records 100000]
        [--backends sqlite,postgres]

Per backend, a fresh deployment in a temporary data directory (on SQLite, its default; on
PostgreSQL, a database of its own on 127.0.0.1:5432, dropped at the end), its webhook pointed at a
receiver in this process: HTTP/1.1 with keep-alive on loopback, answering 200 at once.

1. **Webhooks**: the deployment's own ``Outbox`` writes N notifications (webhook only, 500 per
   write transaction), then the deployment's ``DeliveryWorker`` drains them, timed. Every event id
   must arrive exactly once with a signature that verifies, and every row must be delivered.
2. **Sealing**: the deployment's ``Auditor`` records M audit events (1,000 per write transaction),
   then ``seal_all()`` chains and signs them, timed; ``verify()`` must find them all sealed and
   intact.

Prints two tables and writes JSON to bench/results/; a failed check ends the run with one line and
exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import inspect
import json
import os
import platform
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from cpu import CpuMeter, CpuUse, background_cpu
from loadgen import HOST
from servers import REPO, ServerError, postgres_database
from sparekey.domain.models import Caller
from sparekey.runtime import Sparekey, initialize
from sparekey.services.audit import AuditEntry
from sparekey.services.notifications import NOTIFY_EVENTS, WEBHOOK, DeliveryWorker
from sparekey.settings import SettingsError, load_settings
from sparekey.storage import outbox as outbox_repo
from sparekey.storage.tables import outbox
from verify_load import source_state
from verify_report import BUSY_HOST_PCT, STEAL_PCT, fmt, pct

RESULTS_DIR = REPO / "bench" / "results"
BACKENDS = ("sqlite", "postgres")
WEBHOOK_SECRET = "whsec_bench_0123456789abcdef"
WARMUP_MESSAGES = 20  # one batch of the worker, sent before the timed drain: connection, caches
ENQUEUE_BATCH = 500  # notifications per write transaction when filling the outbox
RECORD_BATCH = 1_000  # audit records per write transaction
USERS = 1_000
SIGNATURE_MAX_AGE_SECONDS = 300
# Rows a worker claims per round: the default, which the server's worker keeps.
WORKER_BATCH: int = inspect.signature(DeliveryWorker).parameters["batch_size"].default

# What the notifications say: events the services really notify, with their kind of details.
NOTICES: tuple[tuple[str, dict[str, object]], ...] = (
    ("factor.confirmed", {"factor_id": "fct_bench", "factor_type": "totp"}),
    ("factor.removed", {"factor_id": "fct_bench", "factor_type": "totp"}),
    ("backup_codes.low", {"remaining": 2}),
    ("throttle.engaged", {"failures": 20, "locked_until": None, "suspended": False}),
)
# What the audit records say: what verification records, the bulk of a real audit log. None of
# these notifies, so recording them writes no outbox row (checked).
RECORDS: tuple[AuditEntry, ...] = (
    AuditEntry(event="verify.succeeded", details={"factor_id": "fct_bench", "factor_type": "totp"}),
    AuditEntry(event="verify.failed", outcome="failure", details={"kind": "otp"}),
    AuditEntry(event="verify.succeeded", details={"factor_id": "fct_bench", "factor_type": "hotp"}),
)
CALLER = Caller(type="api_key", id="key_bench", ip="198.51.100.7", user_agent="Bench/1.0")
assert all(event in NOTIFY_EVENTS for event, _ in NOTICES)
assert not any(entry.event in NOTIFY_EVENTS for entry in RECORDS)


class CheckError(Exception):
    """A result that is wrong, not slow: the run stops and says why in one line."""


@dataclass(frozen=True, kw_only=True)
class Config:
    messages: int
    records: int
    backends: tuple[str, ...]
    warmup_messages: int = WARMUP_MESSAGES
    enqueue_batch: int = ENQUEUE_BATCH
    record_batch: int = RECORD_BATCH


@dataclass(frozen=True, kw_only=True)
class WebhookRun:
    messages: int
    seconds: float
    webhooks_per_second: float
    fill_seconds: float
    worker_batch: int
    connections: int  # TCP connections the receiver accepted, warm-up included
    process_cpu_pct: float | None  # this process: the worker and the receiver, % of one core
    host_cpu_pct: float | None
    steal_pct: float | None


@dataclass(frozen=True, kw_only=True)
class SealRun:
    records: int
    write_seconds: float
    records_written_per_second: float
    seconds: float
    records_per_second: float
    checkpoints: int
    verify_seconds: float
    records_verified_per_second: float
    process_cpu_pct: float | None
    host_cpu_pct: float | None
    steal_pct: float | None


@dataclass
class BackendResult:
    backend: str
    database: str = ""
    background_cpu_pct: float | None = None
    background_steal_pct: float | None = None
    webhooks: WebhookRun | None = None
    sealing: SealRun | None = None
    notes: list[str] = field(default_factory=list)


# --- The webhook receiver ---


class Receiver:
    """The application's webhook endpoint, on loopback: HTTP/1.1 with keep-alive, one thread per
    connection, 200 at once; it keeps each event id, signature and body to check afterwards."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, bytes]] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/hooks/sparekey"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver.connections += 1

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                event_id = self.headers.get("Sparekey-Event-Id") or ""
                signature = self.headers.get("Sparekey-Signature") or ""
                with receiver._lock:
                    receiver.received.append((event_id, signature, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: one line per request would cost more than the answer."""

        return Handler

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def signature_problem(header: str, body: bytes, event_id: str, now: float) -> str | None:
    """Check a webhook as a receiver would, without Sparekey's code: ``Sparekey-Signature``
    ``t=<unix time>,v1=<HMAC-SHA256 over "<t>.<body>">``, and the body's id is the header's."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        stamp = int(fields["t"])
        expected = hmac.new(
            WEBHOOK_SECRET.encode(), fields["t"].encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        payload = json.loads(body)
    except (KeyError, ValueError) as exc:
        return f"unreadable signature or body ({type(exc).__name__})"
    if not hmac.compare_digest(expected, fields.get("v1", "")):
        return "the signature does not verify"
    if abs(now - stamp) > SIGNATURE_MAX_AGE_SECONDS:
        return f"signed {now - stamp:.0f} s away from now"
    if payload.get("id") != event_id:
        return "the body's id is not the Sparekey-Event-Id header"
    return None


# --- Deployments ---


@contextmanager
def deployment(backend: str, webhook_url: str) -> Iterator[tuple[Sparekey, str]]:
    """A fresh, initialized deployment whose webhook goes to ``webhook_url``; yields it and a
    description of its database."""
    with tempfile.TemporaryDirectory(prefix="sparekey-notify-") as data_dir:
        if backend == "postgres":
            name = f"sparekey_notify_bench_{os.getpid()}"
            with postgres_database(name) as url, _opened(Path(data_dir), url, webhook_url) as app:
                version = app.db.engine.dialect.server_version_info or ()
                yield app, "PostgreSQL " + ".".join(str(v) for v in version)
        else:
            with _opened(Path(data_dir), None, webhook_url) as app:
                yield app, f"SQLite {sqlite3.sqlite_version}"


@contextmanager
def _opened(data_dir: Path, database_url: str | None, webhook_url: str) -> Iterator[Sparekey]:
    settings = load_settings(
        data_dir,
        database_url=database_url,
        webhook_url=webhook_url,
        webhook_secret=WEBHOOK_SECRET,
        smtp_host="",  # no email: every notification is one webhook
    )
    initialize(settings)
    app = Sparekey.open(settings)
    try:
        with app.db.read():  # connect once, so the dialect knows the server's version
            pass
        yield app
    finally:
        app.close()  # closes the webhook sender's kept-alive connection too


def outbox_rows(app: Sparekey) -> int:
    with app.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(outbox)).scalar_one())


# --- Webhooks ---


def fill_outbox(app: Sparekey, count: int, *, first: int, batch: int) -> None:
    """Write ``count`` notifications the way the services do: ``Outbox.enqueue`` inside a write
    transaction (the audit recorder calls it in the transaction of the change)."""
    done = 0
    while done < count:
        size = min(batch, count - done)
        with app.db.write() as conn:
            for n in range(first + done, first + done + size):
                event, details = NOTICES[n % len(NOTICES)]
                app.outbox.enqueue(
                    conn,
                    event=event,
                    user_id=f"user{n % USERS:04d}",
                    details=details,
                    now=app.clock.now(),
                )
        done += size


def drain(app: Sparekey) -> int:
    """What the server's worker thread does, without its pause: rounds until nothing is due."""
    delivered = 0
    while done := app.delivery.drain():
        delivered += done
    return delivered


def bench_webhooks(app: Sparekey, receiver: Receiver, config: Config, backend: str) -> WebhookRun:
    if app.delivery.channels != {WEBHOOK} or not app.outbox.enabled:
        raise CheckError(f"{backend}: the deployment's only channel is not the webhook")
    fill_outbox(app, config.warmup_messages, first=0, batch=config.enqueue_batch)
    if drain(app) != config.warmup_messages:
        raise CheckError(f"{backend} webhooks: the warm-up was not delivered (see the log above)")
    started = time.perf_counter()
    fill_outbox(app, config.messages, first=config.warmup_messages, batch=config.enqueue_batch)
    fill_seconds = time.perf_counter() - started
    total = config.warmup_messages + config.messages
    if (rows := outbox_rows(app)) != total:
        raise CheckError(f"{backend} webhooks: {rows} outbox rows for {total} notifications")
    meter = CpuMeter(os.getpid())
    meter.start()
    started = time.perf_counter()
    delivered = drain(app)
    seconds = time.perf_counter() - started
    cpu = meter.read()
    check_deliveries(app, receiver, backend, delivered=delivered, expected=config.messages)
    return WebhookRun(
        messages=config.messages,
        seconds=round(seconds, 4),
        webhooks_per_second=round(config.messages / seconds, 1),
        fill_seconds=round(fill_seconds, 4),
        worker_batch=WORKER_BATCH,
        connections=receiver.connections,
        **_cpu_fields(cpu),
    )


def check_deliveries(
    app: Sparekey, receiver: Receiver, backend: str, *, delivered: int, expected: int
) -> None:
    """Every outbox row delivered once, and nothing else received; every signature verifies."""
    where = f"{backend} webhooks"
    with app.db.read() as conn:
        rows = outbox_repo.messages(conn)
    ids = {row.event_id for row in rows}
    counts = Counter(event_id for event_id, _, _ in receiver.received)
    missing = len(ids - counts.keys())
    twice = sum(1 for n in counts.values() if n > 1)
    unknown = len(counts.keys() - ids)
    if missing or twice or unknown:
        raise CheckError(
            f"{where}: of {len(ids)} messages {missing} not received, {twice} received more "
            f"than once, and {unknown} unknown event ids received"
        )
    undelivered = sum(1 for row in rows if row.delivered_at is None or row.failed_at is not None)
    retried = sum(1 for row in rows if row.attempts != 1)
    if undelivered or retried or delivered != expected:
        raise CheckError(
            f"{where}: the worker delivered {delivered} of {expected}; {undelivered} rows not "
            f"marked delivered, {retried} sent more than once"
        )
    now = time.time()
    for event_id, header, body in receiver.received:
        if problem := signature_problem(header, body, event_id, now):
            raise CheckError(f"{where}: event {event_id}: {problem}")


# --- Audit sealing ---


def write_records(app: Sparekey, count: int, *, batch: int) -> None:
    """Record ``count`` events the way the services do: ``Auditor.record`` in a write
    transaction (keyed digests and the record MAC; unsealed until the sealer runs)."""
    done = 0
    while done < count:
        size = min(batch, count - done)
        with app.db.write() as conn:
            for n in range(done, done + size):
                entry = RECORDS[n % len(RECORDS)]
                user = AuditEntry(
                    event=entry.event,
                    outcome=entry.outcome,
                    user_id=f"user{n % USERS:04d}",
                    details=entry.details,
                )
                app.audit.record(conn, user, CALLER)
        done += size


def bench_sealing(app: Sparekey, config: Config, backend: str) -> SealRun:
    where = f"{backend} sealing"
    app.audit.seal_all()  # what initialize recorded (keys, the admin API key), not timed
    before = app.audit.seal().last_seq
    notifications = outbox_rows(app)
    started = time.perf_counter()
    write_records(app, config.records, batch=config.record_batch)
    write_seconds = time.perf_counter() - started
    if outbox_rows(app) != notifications:
        raise CheckError(f"{where}: recording the audit events wrote notifications")
    meter = CpuMeter(os.getpid())
    meter.start()
    started = time.perf_counter()
    sealed = app.audit.seal_all()
    seconds = time.perf_counter() - started
    cpu = meter.read()
    if sealed != config.records:
        raise CheckError(f"{where}: seal_all() sealed {sealed} of {config.records} records")
    started = time.perf_counter()
    report = app.audit.verify()
    verify_seconds = time.perf_counter() - started
    if not report.ok:
        raise CheckError(f"{where}: the audit log does not verify: {report.problem}")
    if report.unsealed or report.sealed != before + config.records:
        raise CheckError(
            f"{where}: verify() found {report.sealed} sealed and {report.unsealed} unsealed "
            f"records, not {before + config.records} and 0"
        )
    return SealRun(
        records=config.records,
        write_seconds=round(write_seconds, 4),
        records_written_per_second=round(config.records / write_seconds, 1),
        seconds=round(seconds, 4),
        records_per_second=round(config.records / seconds, 1),
        checkpoints=report.checkpoints,
        verify_seconds=round(verify_seconds, 4),
        records_verified_per_second=round(report.sealed / verify_seconds, 1),
        **_cpu_fields(cpu),
    )


def _cpu_fields(cpu: CpuUse) -> dict[str, float | None]:
    return {
        "process_cpu_pct": cpu.server_cpu_pct,
        "host_cpu_pct": cpu.host_cpu_pct,
        "steal_pct": cpu.steal_pct,
    }


# --- Running and reporting ---


def run_backend(backend: str, config: Config) -> BackendResult:
    busy, steal = asyncio.run(background_cpu())
    result = BackendResult(backend=backend, background_cpu_pct=busy, background_steal_pct=steal)
    print(f"{backend}: (before start: host {pct(busy, 0)} busy, {pct(steal, 0)} stolen)")
    with Receiver() as receiver, deployment(backend, receiver.url) as (app, database):
        result.database = database
        result.webhooks = bench_webhooks(app, receiver, config, backend)
        print(f"  webhooks: {result.webhooks.webhooks_per_second:,.1f}/s", flush=True)
        result.sealing = bench_sealing(app, config, backend)
        print(f"  sealing: {result.sealing.records_per_second:,.0f} records/s", flush=True)
    return result


def print_report(results: Sequence[BackendResult], config: Config) -> None:
    print(
        f"\nWebhooks: one DeliveryWorker (batch {WORKER_BATCH}), {config.messages:,} "
        "notifications, to a keep-alive receiver on loopback"
    )
    print(
        f"{'backend':<10}{'messages':>9}{'seconds':>9}{'webhooks/s':>12}{'connections':>13}"
        f"{'proc cpu':>10}{'host cpu':>10}{'steal':>7}"
    )
    for r in results:
        if (w := r.webhooks) is not None:
            print(
                f"{r.backend:<10}{w.messages:>9}{w.seconds:>9.2f}{w.webhooks_per_second:>12,.1f}"
                f"{w.connections:>13}{pct(w.process_cpu_pct, 0):>10}{pct(w.host_cpu_pct, 0):>10}"
                f"{pct(w.steal_pct, 0):>7}"
            )
    print(f"\nAudit sealing: one sealer (seal_all), {config.records:,} unsealed records")
    print(
        f"{'backend':<10}{'records':>9}{'write rec/s':>13}{'seal s':>9}{'seal rec/s':>12}"
        f"{'verify rec/s':>14}{'proc cpu':>10}{'host cpu':>10}{'steal':>7}"
    )
    for r in results:
        if (s := r.sealing) is not None:
            print(
                f"{r.backend:<10}{s.records:>9}{s.records_written_per_second:>13,.0f}"
                f"{s.seconds:>9.2f}{s.records_per_second:>12,.0f}"
                f"{s.records_verified_per_second:>14,.0f}{pct(s.process_cpu_pct, 0):>10}"
                f"{pct(s.host_cpu_pct, 0):>10}{pct(s.steal_pct, 0):>7}"
            )
    noisy = [
        r
        for r in results
        if (r.background_cpu_pct or 0) > BUSY_HOST_PCT or (r.background_steal_pct or 0) > STEAL_PCT
    ]
    for r in noisy:
        print(
            f"WARNING: before {r.backend} started the host was {fmt(r.background_cpu_pct, 0)}% "
            f"busy ({fmt(r.background_steal_pct, 0)}% stolen): the figures understate the code"
        )
    print("\nChecks: every webhook received once and signed; every record sealed and verified.")


def write_json(results: Sequence[BackendResult], config: Config, stamp: str) -> Path:
    document = {
        "benchmark": "notifications",
        "started_at": stamp,
        "command": [Path(sys.executable).name, *sys.argv],
        "config": asdict(config),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
            "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "source": source_state(),
        "backends": [asdict(r) for r in results],
    }
    path = RESULTS_DIR / f"notifications-{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=2_000, help="notifications [2000]")
    parser.add_argument("--records", type=int, default=100_000, help="audit records [100000]")
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated [sqlite,postgres]"
    )
    args = parser.parse_args(argv)
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    if not backends or set(backends) - set(BACKENDS):
        parser.error(f"--backends takes names from {','.join(BACKENDS)}")
    if args.messages < 1 or args.records < 1:
        parser.error("--messages and --records must be positive")
    return Config(messages=args.messages, records=args.records, backends=backends)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    # Settings come from the environment too: only this benchmark's may apply.
    for name in [n for n in os.environ if n.startswith("SPAREKEY_")]:
        del os.environ[name]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for backend in config.backends:
            results.append(run_backend(backend, config))
    except (CheckError, ServerError, SettingsError) as exc:
        print(f"FAILED: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    print_report(results, config)
    path = write_json(results, config, stamp)
    print(f"\nResults: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
