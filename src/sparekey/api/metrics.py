"""Prometheus metrics, one registry per application instance (``GET /metrics``).

Three kinds:

- **Counted in this process** as things happen: verifications and their latency, HTTP responses by
  status code, and audit records by event and outcome (``throttle.engaged`` is a lockout of a
  user's guessable codes). Sum them over the nodes.
- **Read from the database** when scraped, at most once every ``state_seconds`` (a flood of
  requests to /metrics costs the database nothing more): the notification outbox, the sealing of
  the audit log, data keys, the schema; and the organisation's recovery readiness at most once
  every ``readiness_seconds``, since it reads every user. Every node reports the same figures:
  aggregate them with ``max``, not ``sum``.
- **Build information**: this code's version and the schema revision its migrations end at.

docs/operations.md lists every metric and the alerts worth setting on them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sparekey import __version__
from sparekey.domain.models import VerifyResult
from sparekey.domain.readiness import OrgReadiness
from sparekey.storage.tables import audit_chain, audit_events, data_keys, outbox

if TYPE_CHECKING:
    from sparekey.runtime import Sparekey

__all__ = ["Metrics", "ResponseCounter"]

log = logging.getLogger("sparekey.metrics")


class Metrics:
    def __init__(
        self,
        sparekey: Sparekey | None = None,
        *,
        state_seconds: float = 5.0,
        readiness_seconds: float = 300.0,
    ) -> None:
        self.registry = CollectorRegistry()
        self.verifications = Counter(
            "sparekey_verifications",
            "Verification attempts by result and the type of factor that matched",
            ["result", "factor_type"],
            registry=self.registry,
        )
        self.verify_seconds = Histogram(
            "sparekey_verify_duration_seconds",
            "Time spent verifying a code, from request to answer",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.responses = Counter(
            "sparekey_http_responses",
            "HTTP responses by status code (a request that failed before answering counts as 500)",
            ["code"],
            registry=self.registry,
        )
        self.audit_events = Counter(
            "sparekey_audit_events",
            "Audit records written by this process, by event and outcome",
            ["event", "outcome"],
            registry=self.registry,
        )
        self._outcomes: dict[tuple[bool, str | None], Counter] = {}
        self._codes: dict[int, Counter] = {}
        self._events: dict[tuple[str, str], Counter] = {}
        self.registry.register(_BuildInfo(sparekey))
        if sparekey is not None:
            self.registry.register(
                _DatabaseState(
                    sparekey, state_seconds=state_seconds, readiness_seconds=readiness_seconds
                )
            )
            sparekey.audit.listen(self.count_audit_event)

    def count_verification(self, result: VerifyResult, *, seconds: float) -> None:
        key = (result.verified, result.factor_type)
        counter = self._outcomes.get(key)
        if counter is None:
            counter = self.verifications.labels(
                result="success" if result.verified else "failure",
                factor_type=result.factor_type or "none",
            )
            self._outcomes[key] = counter
        counter.inc()
        self.verify_seconds.observe(seconds)

    def count_response(self, status: int) -> None:
        counter = self._codes.get(status)
        if counter is None:
            counter = self._codes[status] = self.responses.labels(code=str(status))
        counter.inc()

    def count_audit_event(self, event: str, outcome: str) -> None:
        key = (event, outcome)
        counter = self._events.get(key)
        if counter is None:
            counter = self._events[key] = self.audit_events.labels(event=event, outcome=outcome)
        counter.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ResponseCounter:
    """ASGI middleware counting every HTTP response by status code into :class:`Metrics`."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts: an error the outer handler turns into a 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.metrics.count_response(status)


class _BuildInfo(Collector):
    def __init__(self, sparekey: Sparekey | None) -> None:
        self._head = sparekey.db.head_revision() if sparekey is not None else ""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "sparekey_build_info",
            "This code: its version and the schema revision its migrations end at",
            labels=["version", "schema_head"],
        )
        info.add_metric([__version__, self._head], 1)
        yield info


@dataclass(frozen=True, kw_only=True)
class _State:
    """What the database says, read in one go."""

    outbox_pending: int = 0
    outbox_retrying: int = 0
    outbox_oldest: datetime | None = None
    unsealed: int = 0
    oldest_unsealed: datetime | None = None
    last_seq: int = 0
    last_seal: datetime | None = None
    data_keys: dict[tuple[str, str], int] = field(default_factory=dict)
    keks: int = 0
    schema: tuple[str, str, str] = ("", "", "")
    pending_migrations: dict[str, int] = field(default_factory=dict)


class _DatabaseState(Collector):
    """Figures read from the database when scraped, kept for ``state_seconds``."""

    def __init__(
        self, sparekey: Sparekey, *, state_seconds: float, readiness_seconds: float
    ) -> None:
        self._app = sparekey
        self._state_seconds = state_seconds
        self._readiness_seconds = readiness_seconds
        self._lock = threading.Lock()
        self._state: _State | None = None
        self._state_at = -float("inf")
        self._readiness: OrgReadiness | None = None
        self._readiness_at = -float("inf")

    def describe(self) -> Iterator[Metric]:
        return iter(())  # registering must not read the database

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            state, readiness = self._refresh()
        now = self._app.clock.now()
        up = GaugeMetricFamily(
            "sparekey_database_up", "Whether this scrape could read the database (1) or not (0)"
        )
        up.add_metric([], 1 if state is not None else 0)
        yield up
        if state is not None:
            yield from _state_metrics(state, now)
        if readiness is not None:
            yield from _readiness_metrics(readiness)

    def _refresh(self) -> tuple[_State | None, OrgReadiness | None]:
        started = time.monotonic()
        if started - self._state_at >= self._state_seconds:
            self._state_at = started
            try:
                self._state = _read_state(self._app)
            except SQLAlchemyError as exc:
                log.warning("metrics: cannot read the database: %s", exc)
                self._state = None
        if self._state is not None and started - self._readiness_at >= self._readiness_seconds:
            self._readiness_at = started
            try:
                self._readiness = self._app.readiness.report()
            except SQLAlchemyError as exc:
                log.warning("metrics: cannot read readiness: %s", exc)
        return self._state, self._readiness


def _read_state(app: Sparekey) -> _State:
    schema = app.db.schema_status()
    pending: dict[str, int] = {"expand": 0, "contract": 0}
    for migration in schema.pending:
        pending[migration.kind] += 1
    with app.db.read() as conn:
        # Notifications still to deliver: only those have next_attempt_at (its index).
        box = conn.execute(
            select(
                func.count(), func.count(outbox.c.last_error), func.min(outbox.c.created_at)
            ).where(outbox.c.next_attempt_at.is_not(None))
        ).one()
        # Records not sealed into the chain yet: seq is NULL (its unique index).
        unsealed = conn.execute(
            select(func.count(), func.min(audit_events.c.occurred_at)).where(
                audit_events.c.seq.is_(None)
            )
        ).one()
        chain = conn.execute(select(audit_chain.c.last_seq, audit_chain.c.updated_at)).first()
        keys, keks = _keys(conn)
    return _State(
        outbox_pending=int(box[0]),
        outbox_retrying=int(box[1]),
        outbox_oldest=box[2],
        unsealed=int(unsealed[0]),
        oldest_unsealed=unsealed[1],
        last_seq=int(chain[0]) if chain is not None else 0,
        last_seal=chain[1] if chain is not None else None,
        data_keys=keys,
        keks=keks,
        schema=(
            schema.revision or "",
            schema.oldest_code_revision or "",
            schema.oldest_code_release or "",
        ),
        pending_migrations=pending,
    )


def _keys(conn: Connection) -> tuple[dict[tuple[str, str], int], int]:
    """Data keys by purpose and state (a few rows), and the KEKs wrapping live ones. An inactive
    key that still holds its material protects records a rotation has not re-encrypted yet (or,
    for MAC keys, digests that cannot be redone)."""
    counts: dict[tuple[str, str], int] = {}
    keks: set[str] = set()
    rows = conn.execute(
        select(
            data_keys.c.purpose,
            data_keys.c.active,
            data_keys.c.retired_at.is_(None),
            data_keys.c.kek_id,
        )
    )
    for purpose, active, material, kek_id in rows:
        state = "active" if active else "retired" if material else "public-only"
        counts[(purpose, state)] = counts.get((purpose, state), 0) + 1
        if material:
            keks.add(kek_id)
    return counts, len(keks)


def _age(moment: datetime | None, now: datetime) -> float:
    return max(0.0, (now - moment).total_seconds()) if moment is not None else 0.0


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _state_metrics(state: _State, now: datetime) -> Iterator[Metric]:
    yield _gauge(
        "sparekey_outbox_pending",
        "Notifications (email, webhook) not delivered yet, nor given up",
        state.outbox_pending,
    )
    yield _gauge(
        "sparekey_outbox_retrying",
        "Pending notifications whose last delivery attempt failed",
        state.outbox_retrying,
    )
    yield _gauge(
        "sparekey_outbox_oldest_pending_age_seconds",
        "Age of the oldest pending notification (0: none)",
        _age(state.outbox_oldest, now),
    )
    yield _gauge(
        "sparekey_audit_unsealed_records",
        "Audit records not sealed into the hash chain yet",
        state.unsealed,
    )
    yield _gauge(
        "sparekey_audit_oldest_unsealed_age_seconds",
        "Age of the oldest unsealed audit record (0: none; the sealer runs every second)",
        _age(state.oldest_unsealed, now),
    )
    yield _gauge(
        "sparekey_audit_sealed_records", "Position of the audit chain's last record", state.last_seq
    )
    yield _gauge(
        "sparekey_audit_last_seal_timestamp_seconds",
        "When records were last sealed (Unix time)",
        state.last_seal.timestamp() if state.last_seal is not None else 0.0,
    )
    keys = GaugeMetricFamily(
        "sparekey_data_keys",
        "Data keys by purpose and state (retired: inactive, still protecting records)",
        labels=["purpose", "state"],
    )
    for (purpose, key_state), count in sorted(state.data_keys.items()):
        keys.add_metric([purpose, key_state], count)
    yield keys
    yield _gauge("sparekey_keks_in_use", "Key-encryption keys wrapping a live data key", state.keks)
    schema = GaugeMetricFamily(
        "sparekey_schema_info",
        "The database's schema revision and the oldest code it supports",
        labels=["revision", "oldest_code_revision", "oldest_code_release"],
    )
    schema.add_metric(list(state.schema), 1)
    yield schema
    pending = GaugeMetricFamily(
        "sparekey_schema_pending_migrations",
        "Migrations of this code the database has not had, by kind",
        labels=["kind"],
    )
    for kind, count in sorted(state.pending_migrations.items()):
        pending.add_metric([kind], count)
    yield pending


def _readiness_metrics(report: OrgReadiness) -> Iterator[Metric]:
    yield _gauge("sparekey_readiness_users", "Users assessed for recovery readiness", report.users)
    yield _gauge(
        "sparekey_readiness_no_way_in_users",
        "Users with no way in at all (no active factor, no saved backup codes)",
        report.no_way_in,
    )
    yield _gauge(
        "sparekey_readiness_one_device_from_lockout_users",
        "Users with exactly one way in",
        report.one_device_from_lockout,
    )
    yield _gauge("sparekey_readiness_mean_score", "Mean readiness score (0-100)", report.mean_score)
    yield _gauge(
        "sparekey_readiness_admins_without_phishing_resistant",
        "Admin operators without a passkey or security key",
        len(report.admins_without_phishing_resistant),
    )
    yield _gauge(
        "sparekey_readiness_generated_timestamp_seconds",
        "When these readiness figures were computed (Unix time)",
        report.generated_at.timestamp(),
    )
