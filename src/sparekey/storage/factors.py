"""Rows of the ``factors`` table. The secret column holds AES-GCM ciphertext only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, delete, func, insert, or_, select, update

from sparekey.domain.models import (
    Factor,
    FactorStatus,
    FactorType,
    ThrottleState,
    WebAuthnCredential,
)
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.storage.prepared import Prepared, Unit, run
from sparekey.storage.recovery import OPEN_CASE_EXISTS
from sparekey.storage.tables import (
    backup_codes,
    factors,
    fallback_codes,
    users,
    webauthn_credentials,
)

__all__ = [
    "FactorRecord",
    "OtpFactor",
    "SealedSecret",
    "VerifyState",
    "active_factor_types",
    "advance_step",
    "confirmed_factor_statuses",
    "count_secrets_not_under",
    "delete_expired_pending",
    "delete_factor",
    "get_factor",
    "insert_factor",
    "list_factors",
    "lock_factors",
    "mark_lost",
    "reseal_secret",
    "secrets_not_under",
    "update_factor",
    "verify_state",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class OtpFactor:
    """What checking a code needs and nothing more: the verify path reads only these columns."""

    id: str
    user_id: str
    type: FactorType
    algorithm: HashAlgorithm
    digits: int
    period: int | None
    last_step: int | None
    drift: int
    secret: bytes
    secret_key_id: int


@dataclass(frozen=True, kw_only=True)
class FactorRecord:
    factor: Factor
    secret: bytes | None  # None: a factor without a secret (WebAuthn)
    secret_key_id: int | None

    @property
    def otp(self) -> OtpFactor:
        """The OTP view; raises :class:`ValueError` for a factor that is not TOTP or HOTP."""
        f = self.factor
        if (
            not f.type.guessable
            or f.algorithm is None
            or f.digits is None
            or self.secret is None
            or self.secret_key_id is None
        ):
            raise ValueError(f"factor {f.id} is not an OTP factor")
        return OtpFactor(
            id=f.id,
            user_id=f.user_id,
            type=f.type,
            algorithm=f.algorithm,
            digits=f.digits,
            period=f.period,
            last_step=f.last_step,
            drift=f.drift,
            secret=self.secret,
            secret_key_id=self.secret_key_id,
        )


def _to_record(row: Row[Any], webauthn: WebAuthnCredential | None = None) -> FactorRecord:
    factor = Factor(
        id=row.id,
        user_id=row.user_id,
        type=FactorType(row.type),
        status=FactorStatus(row.status),
        label=row.label,
        algorithm=None if row.algorithm is None else HashAlgorithm(row.algorithm),
        digits=row.digits,
        period=row.period,
        last_step=row.last_step,
        drift=row.drift,
        created_at=row.created_at,
        confirmed_at=row.confirmed_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        webauthn=webauthn,
        destination=row.destination,
        usable_after=row.usable_after,
        destination_unconfirmed=bool(row.destination_unconfirmed),
    )
    return FactorRecord(factor=factor, secret=row.secret, secret_key_id=row.secret_key_id)


def insert_factor(conn: Connection, record: FactorRecord) -> None:
    f = record.factor
    conn.execute(
        insert(factors).values(
            id=f.id,
            user_id=f.user_id,
            type=f.type.value,
            status=f.status.value,
            label=f.label,
            algorithm=None if f.algorithm is None else f.algorithm.value,
            digits=f.digits,
            period=f.period,
            secret=record.secret,
            secret_key_id=record.secret_key_id,
            last_step=f.last_step,
            drift=f.drift,
            created_at=f.created_at,
            confirmed_at=f.confirmed_at,
            last_used_at=f.last_used_at,
            expires_at=f.expires_at,
            destination=f.destination,
            usable_after=f.usable_after,
            destination_unconfirmed=f.destination_unconfirmed,
        )
    )


def get_factor(conn: Connection, user_id: str, factor_id: str) -> FactorRecord | None:
    row = conn.execute(
        select(factors).where(factors.c.id == factor_id, factors.c.user_id == user_id)
    ).first()
    return None if row is None else _records(conn, [row])[0]


def _records(conn: Connection, rows: Sequence[Row[Any]]) -> list[FactorRecord]:
    """Factor rows as records, WebAuthn ones with their credential (one more query if any)."""
    ids = [row.id for row in rows if row.type == FactorType.WEBAUTHN.value]
    found = {}
    if ids:
        credentials = conn.execute(
            select(webauthn_credentials).where(webauthn_credentials.c.factor_id.in_(ids))
        )
        found = {c.factor_id: _credential(c) for c in credentials}
    return [_to_record(row, found.get(row.id)) for row in rows]


def _credential(row: Row[Any]) -> WebAuthnCredential:
    return WebAuthnCredential(
        credential_id=bytes(row.credential_id),
        aaguid=row.aaguid,
        authenticator_name=None,
        transports=tuple(t for t in row.transports.split(",") if t),
        attestation_format=row.attestation_format,
        backup_eligible=row.backup_eligible,
        backed_up=row.backed_up,
        discoverable=row.discoverable,
        sign_count=row.sign_count,
    )


def list_factors(conn: Connection, user_id: str, *, now: datetime) -> list[FactorRecord]:
    """Active factors and pending ones that have not expired, oldest first."""
    stmt = (
        select(factors)
        .where(
            factors.c.user_id == user_id,
            or_(factors.c.status != FactorStatus.PENDING.value, factors.c.expires_at > now),
        )
        .order_by(factors.c.created_at, factors.c.id)
    )
    return _records(conn, conn.execute(stmt).all())


_REMAINING_CODES = (
    select(func.count())
    .where(backup_codes.c.user_id == bindparam("user_id"), backup_codes.c.used_at.is_(None))
    .scalar_subquery()
)
# Codes sent by email or SMS that could still be entered: only then does verify look for one
_LIVE_CODES = (
    select(func.count())
    .where(
        fallback_codes.c.user_id == bindparam("user_id"),
        fallback_codes.c.used_at.is_(None),
        fallback_codes.c.expires_at > bindparam("now"),
    )
    .scalar_subquery()
)
_OTP_COLUMNS = [
    factors.c[name]
    for name in (
        "id",
        "user_id",
        "type",
        "algorithm",
        "digits",
        "period",
        "last_step",
        "drift",
        "secret",
        "secret_key_id",
    )
]
_VERIFY_STATE = Prepared(
    select(
        users.c.otp_failures,
        users.c.otp_locked_until,
        users.c.otp_suspended_at,
        _REMAINING_CODES.label("remaining"),
        *_OTP_COLUMNS,
        OPEN_CASE_EXISTS.label("open_case"),
        _LIVE_CODES.label("live_codes"),
    )
    .select_from(
        users.outerjoin(
            factors,
            and_(
                factors.c.user_id == users.c.id,
                factors.c.status == FactorStatus.ACTIVE.value,
                # OTP factors only (an IN list would not survive compiling once, see Prepared)
                or_(
                    factors.c.type == FactorType.TOTP.value,
                    factors.c.type == FactorType.HOTP.value,
                ),
            ),
        )
    )
    .where(users.c.id == bindparam("user_id"))
)


@dataclass(frozen=True, kw_only=True)
class VerifyState:
    """Everything checking a code needs, read in one statement."""

    factors: list[OtpFactor]
    backup_codes_remaining: int
    throttle: ThrottleState
    open_recovery_case: bool = False  # a sign-in cancels it
    live_fallback_codes: int = 0  # email or SMS codes sent, unused and unexpired


def verify_state(target: Connection | Unit, user_id: str, *, now: datetime) -> VerifyState | None:
    """The user's throttle, backup codes left, active factors and live email/SMS codes; None if
    there is no such user."""
    rows = run(target, _VERIFY_STATE, {"user_id": user_id, "now": now}).fetchall()
    if not rows:
        return None
    first = rows[0]
    found = [
        OtpFactor(
            id=row[4],
            user_id=row[5],
            type=FactorType(row[6]),
            algorithm=HashAlgorithm(row[7]),
            digits=row[8],
            period=row[9],
            last_step=row[10],
            drift=row[11],
            secret=bytes(row[12]),
            secret_key_id=row[13],
        )
        for row in rows
        if row[4] is not None
    ]
    throttle = ThrottleState(failures=first[0], locked_until=first[1], suspended_at=first[2])
    return VerifyState(
        factors=found,
        backup_codes_remaining=int(first[3]),
        throttle=throttle,
        open_recovery_case=bool(first[14]),
        live_fallback_codes=int(first[15]),
    )


_NEWER_STEP = or_(factors.c.last_step.is_(None), factors.c.last_step < bindparam("step"))
_ADVANCE = Prepared(
    update(factors)
    .where(
        factors.c.id == bindparam("factor_id"),
        factors.c.status == FactorStatus.ACTIVE.value,
        _NEWER_STEP,
    )
    .values(last_step=bindparam("step"), drift=bindparam("drift"), last_used_at=bindparam("now"))
)
_ACTIVATE = Prepared(
    update(factors)
    .where(
        factors.c.id == bindparam("factor_id"),
        factors.c.status == FactorStatus.PENDING.value,
        factors.c.expires_at > bindparam("now"),
        _NEWER_STEP,
    )
    .values(
        last_step=bindparam("step"),
        drift=bindparam("drift"),
        last_used_at=bindparam("now"),
        status=FactorStatus.ACTIVE.value,
        confirmed_at=bindparam("now"),
        expires_at=None,
    )
)


def advance_step(
    target: Connection | Unit,
    factor_id: str,
    *,
    step: int,
    drift: int,
    now: datetime,
    activate: bool = False,
) -> bool:
    """Record ``step`` as used, if and only if it is later than every step used before.

    This one conditional UPDATE is the replay guard: of any number of concurrent attempts with the
    same code, on any node, exactly one sees a row count of 1. With ``activate`` it also confirms a
    pending, unexpired factor.
    """
    statement = _ACTIVATE if activate else _ADVANCE
    params = {"factor_id": factor_id, "step": step, "drift": drift, "now": now}
    return run(target, statement, params).rowcount == 1


def update_factor(conn: Connection, user_id: str, factor_id: str, **values: Any) -> bool:
    result = conn.execute(
        update(factors)
        .where(factors.c.id == factor_id, factors.c.user_id == user_id)
        .values(**values)
    )
    return result.rowcount == 1


def delete_factor(conn: Connection, user_id: str, factor_id: str) -> bool:
    result = conn.execute(
        delete(factors).where(factors.c.id == factor_id, factors.c.user_id == user_id)
    )
    return result.rowcount == 1


def lock_factors(conn: Connection, user_id: str) -> None:
    """Hold the user's factor rows (in id order) until the transaction ends, so that changes that
    depend on the user's other factors (the last-factor rule) happen one after the other. Rows,
    not the user's row: code verification locks a factor before the user (the throttle), and so
    does this. (On SQLite every write transaction holds the database's write lock already.)"""
    conn.execute(
        select(factors.c.id)
        .where(factors.c.user_id == user_id)
        .order_by(factors.c.id)
        .with_for_update()
    ).all()


def active_factor_types(conn: Connection, user_id: str) -> list[FactorType]:
    """The type of each of the user's active factors (lost and pending ones do not count)."""
    rows = conn.execute(
        select(factors.c.type).where(
            factors.c.user_id == user_id, factors.c.status == FactorStatus.ACTIVE.value
        )
    )
    return [FactorType(row.type) for row in rows]


def confirmed_factor_statuses(conn: Connection, user_id: str) -> set[FactorStatus]:
    """Which of ``active`` and ``lost`` the user's factors hold: empty until a first factor is
    confirmed, and again only if every confirmed factor was removed (never by marking it lost)."""
    rows = conn.execute(
        select(factors.c.status)
        .where(
            factors.c.user_id == user_id,
            factors.c.status.in_([status.value for status in FactorStatus if status.confirmed]),
        )
        .distinct()
    )
    return {FactorStatus(row.status) for row in rows}


def mark_lost(conn: Connection, user_id: str, factor_id: str) -> bool:
    """Mark an active factor lost: from this statement on it verifies nothing."""
    result = conn.execute(
        update(factors)
        .where(
            factors.c.id == factor_id,
            factors.c.user_id == user_id,
            factors.c.status == FactorStatus.ACTIVE.value,
        )
        .values(status=FactorStatus.LOST.value)
    )
    return result.rowcount == 1


def delete_expired_pending(conn: Connection, user_id: str, *, now: datetime) -> int:
    """Remove the user's enrollments that lapsed unconfirmed (uses the user/status index)."""
    result = conn.execute(
        delete(factors).where(
            factors.c.user_id == user_id,
            factors.c.status == FactorStatus.PENDING.value,
            factors.c.expires_at <= now,
        )
    )
    return result.rowcount


@dataclass(frozen=True, kw_only=True)
class SealedSecret:
    factor_id: str
    user_id: str
    key_id: int
    sealed: bytes


def secrets_not_under(
    conn: Connection, key_id: int, *, after: str, limit: int
) -> list[SealedSecret]:
    """The next ``limit`` secrets (in factor id order, after ``after``) sealed by another key."""
    rows = conn.execute(
        select(factors.c.id, factors.c.user_id, factors.c.secret_key_id, factors.c.secret)
        .where(factors.c.secret_key_id != key_id, factors.c.id > after)
        .order_by(factors.c.id)
        .limit(limit)
    ).all()
    return [
        SealedSecret(factor_id=row.id, user_id=row.user_id, key_id=row[2], sealed=row.secret)
        for row in rows
    ]


def count_secrets_not_under(conn: Connection, key_id: int) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(factors).where(factors.c.secret_key_id != key_id)
        ).scalar_one()
    )


def reseal_secret(conn: Connection, old: SealedSecret, *, key_id: int, sealed: bytes) -> bool:
    """Replace a sealed secret if it is still the one read (a compare-and-set: a factor deleted
    or re-enrolled in between is left alone)."""
    result = conn.execute(
        update(factors)
        .where(
            factors.c.id == old.factor_id,
            factors.c.secret_key_id == old.key_id,
            factors.c.secret == old.sealed,
        )
        .values(secret=sealed, secret_key_id=key_id)
    )
    return result.rowcount == 1
