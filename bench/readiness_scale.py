"""The organisation readiness report at scale: N generated users on PostgreSQL, then the time of
the service call behind ``GET /v1/readiness`` (and ``sparekey readiness``).

    .venv/bin/python bench/readiness_scale.py [--users 1000000] [--runs 3] [--explain]

Users, factors, backup codes and operators are generated inside PostgreSQL with set-based
``INSERT ... SELECT generate_series`` (nothing goes through the API; seeds and code digests are
stand-ins that do not decrypt or verify: the report never decrypts). The mix, decided per user by
a hash of its number so every run is the same:

* factors: 8% none, 52% one TOTP app, 20% TOTP + security key, 10% two TOTP apps, 6% one
  security key, 4% TOTP + two security keys; besides, 2% have a pending enrollment and 1% a
  factor marked lost. 85% of factors were used within 30 days, the rest up to 400 days ago.
* backup codes: 72% hold a set of 10, of which none (55%), 1, 2, 5, 8 or all 10 are used;
  35% of users proved their set saved, 12% ran a drill.
* operators: one user in 2,000, a fifth of them admins.

It creates and drops a database of its own on 127.0.0.1:5432 (user postgres).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, create_engine, text

from sparekey.crypto.keyring import KeyPurpose
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey, initialize
from sparekey.services.readiness import assess
from sparekey.settings import load_settings
from sparekey.storage.readiness import _facts, _to_facts, fact_combinations

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


# Each user's mix is decided by (abs(hashtext('<salt>' || g)) % 100): a number 0..99 per user,
# the same on every run, independent for each salt.
USERS = """
INSERT INTO users (id, created_at, updated_at, otp_failures, backup_codes_proven_at,
                   last_drill_at)
SELECT 'u' || lpad(g::text, 7, '0'), :now - interval '700 days', :now - interval '700 days', 0,
       CASE WHEN abs(hashtext('p' || g)) % 100 < 35 THEN :now - interval '20 days' END,
       CASE WHEN abs(hashtext('d' || g)) % 100 < 12 THEN :now - interval '50 days' END
FROM generate_series(1, :n) AS g
"""

# (slot, type, status, which users: a condition on k, the user's factor mix number)
FACTOR_SLOTS = [
    (1, "totp", "active", "(k >= 8 AND k < 90) OR k >= 96"),
    (2, "totp", "active", "k >= 80 AND k < 90"),
    (3, "webauthn", "active", "(k >= 60 AND k < 80) OR k >= 90"),
    (4, "webauthn", "active", "k >= 96"),
    (5, "totp", "pending", "abs(hashtext('q' || g)) % 100 < 2"),
    (6, "totp", "lost", "abs(hashtext('l' || g)) % 100 < 1"),
]

FACTORS = """
INSERT INTO factors (id, user_id, type, status, label, algorithm, digits, period, secret,
                     secret_key_id, drift, created_at, confirmed_at, last_used_at, expires_at)
SELECT 'f' || g || '_' || slot, 'u' || lpad(g::text, 7, '0'), kind, state, 'Device',
       CASE WHEN kind = 'totp' THEN 'SHA1' END,
       CASE WHEN kind = 'totp' THEN 6 END,
       CASE WHEN kind = 'totp' THEN 30 END,
       CASE WHEN kind = 'totp' THEN substr(sha256(convert_to('s' || g || slot, 'UTF8')), 1, 20)
       END,
       CASE WHEN kind = 'totp' THEN :key_id END,
       0,
       :now - (600 + used % 100) * interval '1 day',
       CASE WHEN state <> 'pending' THEN :now - (600 + used % 100) * interval '1 day' END,
       CASE WHEN state = 'pending' THEN NULL
            WHEN used % 100 < 85 THEN :now - (used % 30) * interval '1 day'
            ELSE :now - (used % 400) * interval '1 day' END,
       CASE WHEN state = 'pending' THEN :now + interval '10 minutes' END
FROM (SELECT g, abs(hashtext('f' || g)) % 100 AS k,
             abs(hashtext('u' || g || ':' || :slot)) AS used,
             CAST(:slot AS text) AS slot, CAST(:type AS text) AS kind,
             CAST(:status AS text) AS state
      FROM generate_series(1, :n) AS g) AS mix
WHERE {condition}
"""

BACKUP_CODES = """
INSERT INTO backup_codes (user_id, digest, mac_key_id, created_at, used_at)
SELECT 'u' || lpad(g::text, 7, '0'), sha256(convert_to('c' || g || ':' || i, 'UTF8')), :key_id,
       :now - interval '100 days',
       CASE WHEN i <= used THEN :now - (i * 5) * interval '1 day' END
FROM (SELECT g, CASE WHEN u < 55 THEN 0 WHEN u < 75 THEN 1 WHEN u < 85 THEN 2
                     WHEN u < 92 THEN 5 WHEN u < 97 THEN 8 ELSE 10 END AS used
      FROM (SELECT g, abs(hashtext('k' || g)) % 100 AS u FROM generate_series(1, :n) AS g
            WHERE abs(hashtext('c' || g)) % 100 < 72) AS s) AS sets
CROSS JOIN generate_series(1, 10) AS i
"""

OPERATORS = """
INSERT INTO operators (id, name, role, user_id, created_at)
SELECT 'opr_' || g, 'op' || g,
       CASE WHEN (g / 2000) % 5 = 0 THEN 'admin' WHEN (g / 2000) % 5 < 4 THEN 'helpdesk'
            ELSE 'auditor' END,
       'u' || lpad(g::text, 7, '0'), :now - interval '300 days'
FROM generate_series(2000, :n, 2000) AS g
"""


def generate(conn: Connection, *, users: int, encryption_key: int, mac_key: int) -> None:
    params = {"n": users, "now": NOW}

    def step(label: str, sql: str, **extra: object) -> None:
        started = time.perf_counter()
        count = conn.execute(text(sql), params | extra).rowcount
        print(f"  {label:<28} {count:>12,} rows  {time.perf_counter() - started:6.1f} s")

    step("users", USERS)
    for slot, kind, status, condition in FACTOR_SLOTS:
        sql = FACTORS.format(condition=condition)
        label = f"factors ({kind}, {status})"
        step(label, sql, slot=slot, type=kind, status=status, key_id=encryption_key)
    step("backup codes", BACKUP_CODES, key_id=mac_key)
    step("operators", OPERATORS)
    conn.commit()
    started = time.perf_counter()
    conn.execute(text("ANALYZE users, factors, backup_codes, operators"))
    conn.commit()
    print(f"  {'analyze':<28} {'':>17}  {time.perf_counter() - started:6.1f} s")


def explain(app: Sparekey) -> None:
    """EXPLAIN ANALYZE of the report's main statement."""
    captured: list[str] = []
    with app.db.read() as conn:
        original = conn.execute

        def capture(statement, *args, **kwargs):  # type: ignore[no-untyped-def]
            compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
            captured.append(str(compiled))
            return original(statement, *args, **kwargs)

        conn.execute = capture  # type: ignore[method-assign]
        fact_combinations(conn, stale_before=NOW)
        conn.execute = original  # type: ignore[method-assign]
        for line in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + captured[0]):
            print("   ", line[0])


def streamed(app: Sparekey) -> float:
    """The alternative not taken: every user's fact row streamed to Python and judged one by
    one. Returns its seconds, for comparison with the grouped statement the service runs."""
    started = time.perf_counter()
    scores = [0] * 101
    stmt = _facts(stale_before=NOW - app.readiness.policy.stale_after, restrict=None)
    with app.db.read() as conn:
        for row in conn.execution_options(yield_per=10_000).execute(stmt):
            scores[assess(_to_facts(row), policy=app.readiness.policy).score] += 1
    assert sum(scores) > 0
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--explain", action="store_true", help="print the report's query plan")
    parser.add_argument(
        "--compare-streamed",
        action="store_true",
        help="also time streaming every user's facts to Python (the alternative not taken)",
    )
    args = parser.parse_args()
    name = f"sparekey_readiness_bench_{os.getpid()}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = load_settings(Path(data_dir), database_url=url)
            clock = FixedClock(NOW)
            initialize(settings, clock=clock)
            app = Sparekey.open(settings, clock=clock)
            try:
                print(f"Generating {args.users:,} users ...")
                with app.db.engine.connect() as conn:
                    generate(
                        conn,
                        users=args.users,
                        encryption_key=app.keyring.active_id(KeyPurpose.ENCRYPTION),
                        mac_key=app.keyring.active_id(KeyPurpose.MAC),
                    )
                if args.explain:
                    explain(app)
                seconds = []
                for run in range(1, args.runs + 1):
                    started = time.perf_counter()
                    report = app.readiness.report()
                    seconds.append(time.perf_counter() - started)
                    print(f"report run {run}: {seconds[-1]:.2f} s")
                assert report.users == args.users, report.users
                if args.compare_streamed:
                    print(f"streamed per-user rows, judged in Python: {streamed(app):.2f} s")
                rng = random.Random(7)
                latencies = []
                for _ in range(200):
                    user = f"u{rng.randrange(1, args.users + 1):07d}"
                    started = time.perf_counter()
                    app.readiness.assess(user)
                    latencies.append((time.perf_counter() - started) * 1000)
                q = statistics.quantiles(latencies, n=100)
                share = report.one_device_from_lockout / report.users
                print(
                    f"\nusers {report.users:,}: one lost device from lockout "
                    f"{report.one_device_from_lockout:,} ({share:.1%}), no way in "
                    f"{report.no_way_in:,}, mean score {report.mean_score}, median "
                    f"{report.median_score}; admins {report.admins}, without a security key "
                    f"{len(report.admins_without_phishing_resistant)}"
                )
                for action in report.actions:
                    print(f"  {action.id:<30} {action.users:>10,} users  {action.points:>12,}")
                print(
                    f"\nGET /v1/readiness service call: best {min(seconds):.2f} s, median "
                    f"{statistics.median(seconds):.2f} s over {len(seconds)} runs "
                    f"({args.users:,} users); one user's readiness: p50 {q[49]:.2f} ms, "
                    f"p99 {q[98]:.2f} ms"
                )
            finally:
                app.close()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
