"""The audit log at scale: generate a sealed chain of N records, then time verification, queries
by user, and pruning with a checkpoint anchor, on PostgreSQL.

    .venv/bin/python bench/audit_growth.py [--records 10000000] [--users 100000]

Records are generated the way the server writes them (keyed MACs, chain digests, a signed
checkpoint every 100,000 records) and loaded with COPY; the benchmark then uses Sparekey's own
code to verify, query and prune. It creates and drops a database of its own on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

from sparekey.runtime import Sparekey, initialize
from sparekey.services.audit import (
    chain_digest,
    checkpoint_message,
    personal_bytes,
    record_bytes,
)
from sparekey.settings import load_settings

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
START = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(milliseconds=10)
CHECKPOINT_EVERY = 100_000
EVENTS = [
    ("verify.succeeded", "success", {"factor_type": "totp"}),
    ("verify.failed", "failure", {"kind": "otp"}),
    ("verify.succeeded", "success", {"factor_type": "totp"}),
    ("backup_code.used", "success", {"remaining": 7}),
]
COLUMNS = (
    "occurred_at, event, outcome, actor_type, actor_id, details, user_id, ip, user_agent,"
    " personal_digest, record_mac, mac_key_id, seq, chain_digest"
)


def generate(app: Sparekey, *, records: int, users: int) -> float:
    """Write ``records`` sealed records with COPY; returns the seconds it took."""
    keyring = app.keyring
    key_id = keyring.mac_key_ids()[-1]
    started = time.perf_counter()
    digest = bytes(32)
    raw = app.db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        seq = 0
        while seq < records:
            chunk = min(CHECKPOINT_EVERY, records - seq)
            checkpoint = []
            with cursor.copy(f"COPY audit_events ({COLUMNS}) FROM STDIN") as copy:
                for _ in range(chunk):
                    seq += 1
                    event, outcome, details = EVENTS[seq % len(EVENTS)]
                    details_json = json.dumps(details, sort_keys=True, separators=(",", ":"))
                    user = f"user{seq % users:06d}"
                    ip = f"198.51.{seq % 250}.{seq % 200}"
                    personal = keyring.mac_with(
                        key_id, "audit-personal", personal_bytes(user, ip, "Bench/1.0")
                    )
                    occurred = START + STEP * seq
                    mac = keyring.mac_with(
                        key_id,
                        "audit-record",
                        record_bytes(
                            occurred_at=occurred,
                            event=event,
                            outcome=outcome,
                            actor_type="api_key",
                            actor_id="bench",
                            details=details_json,
                            personal_digest=personal,
                            mac_key_id=key_id,
                        ),
                    )
                    digest = chain_digest(digest, seq, mac)
                    copy.write_row(
                        (
                            occurred,
                            event,
                            outcome,
                            "api_key",
                            "bench",
                            details_json,
                            user,
                            ip,
                            "Bench/1.0",
                            personal,
                            mac,
                            key_id,
                            seq,
                            digest,
                        )
                    )
            signing_key, signature = keyring.sign(checkpoint_message(seq, digest))
            checkpoint.append((seq, digest, START + STEP * seq, signing_key, signature))
            cursor.executemany(
                "INSERT INTO audit_checkpoints (seq, chain_digest, created_at, signing_key_id,"
                " signature) VALUES (%s, %s, %s, %s, %s)",
                checkpoint,
            )
            cursor.execute(
                "UPDATE audit_chain SET last_seq = %s, last_digest = %s, updated_at = now()",
                (seq, digest),
            )
            raw.commit()
            print(f"  {seq:>10,} records", flush=True)
        cursor.execute("ANALYZE audit_events")
        raw.commit()
    finally:
        raw.close()
    return time.perf_counter() - started


def timed(label: str, action):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    print(f"{label}: {seconds:.1f} s", flush=True)
    return result, seconds


def query_latencies(app: Sparekey, users: int, samples: int = 200) -> list[float]:
    rng = random.Random(7)
    latencies = []
    for _ in range(samples):
        user = f"user{rng.randrange(users):06d}"
        started = time.perf_counter()
        page = app.audit.query(user_id=user, limit=50)
        latencies.append((time.perf_counter() - started) * 1000)
        assert page.records, user
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args()
    name = f"sparekey_audit_bench_{os.getpid()}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = load_settings(Path(data_dir), database_url=url)
            initialize(settings)
            app = Sparekey.open(settings)
            try:
                print(f"Generating {args.records:,} sealed records for {args.users:,} users ...")
                seconds = generate(app, records=args.records, users=args.users)
                print(f"generate: {seconds:.1f} s ({args.records / seconds:,.0f} records/s)")
                report, verify_s = timed("verify (all records)", app.audit.verify)
                assert report.ok, report.problem
                latencies = query_latencies(app, args.users)
                q = statistics.quantiles(latencies, n=100)
                print(f"query by user (50 newest): p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms")
                cutoff = START + STEP * (args.records // 2 + 1)  # the older half, seq 1..N/2
                pruned, prune_s = timed(
                    "prune (older half)", lambda: app.audit.prune(before=cutoff)
                )
                print(f"  pruned {pruned.deleted:,} records; anchor at seq {pruned.anchor_seq}")
                after, _ = timed("verify (after prune)", app.audit.verify)
                assert after.ok, after.problem
                latencies = query_latencies(app, args.users)
                q = statistics.quantiles(latencies, n=100)
                print(f"query by user after prune: p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms")
                print(
                    f"\nrecords {args.records:,}: verify {args.records / verify_s:,.0f} records/s;"
                    f" prune {pruned.deleted / prune_s:,.0f} records/s"
                )
            finally:
                app.close()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
