"""Rows of the ``factors`` table. The secret column holds AES-GCM ciphertext only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, func, insert, or_, select, update

from sparekey.domain.models import Factor, FactorStatus, FactorType
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.storage.prepared import Prepared, Unit, run
from sparekey.storage.tables import backup_codes, factors

__all__ = [
    "FactorRecord",
    "OtpFactor",
    "active_factors",
    "advance_step",
    "delete_expired_pending",
    "delete_factor",
    "get_factor",
    "insert_factor",
    "list_factors",
    "update_factor",
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
    secret: bytes
    secret_key_id: int

    @property
    def otp(self) -> OtpFactor:
        f = self.factor
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


def _to_record(row: Row[Any]) -> FactorRecord:
    factor = Factor(
        id=row.id,
        user_id=row.user_id,
        type=FactorType(row.type),
        status=FactorStatus(row.status),
        label=row.label,
        algorithm=HashAlgorithm(row.algorithm),
        digits=row.digits,
        period=row.period,
        last_step=row.last_step,
        drift=row.drift,
        created_at=row.created_at,
        confirmed_at=row.confirmed_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
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
            algorithm=f.algorithm.value,
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
        )
    )


def get_factor(conn: Connection, user_id: str, factor_id: str) -> FactorRecord | None:
    row = conn.execute(
        select(factors).where(factors.c.id == factor_id, factors.c.user_id == user_id)
    ).first()
    return None if row is None else _to_record(row)


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
    return [_to_record(row) for row in conn.execute(stmt)]


_REMAINING_CODES = (
    select(func.count())
    .where(backup_codes.c.user_id == bindparam("user_id"), backup_codes.c.used_at.is_(None))
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
_ACTIVE_FACTORS = Prepared(
    select(*_OTP_COLUMNS, _REMAINING_CODES.label("remaining")).where(
        factors.c.user_id == bindparam("user_id"), factors.c.status == FactorStatus.ACTIVE.value
    )
)


def active_factors(target: Connection | Unit, user_id: str) -> tuple[list[OtpFactor], int]:
    """The user's active factors and, in the same statement, how many backup codes they have left
    (0 when the user has no active factor: there is no row to carry the count)."""
    rows = run(target, _ACTIVE_FACTORS, {"user_id": user_id}).fetchall()
    remaining = int(rows[0][10]) if rows else 0
    found = [
        OtpFactor(
            id=row[0],
            user_id=row[1],
            type=FactorType(row[2]),
            algorithm=HashAlgorithm(row[3]),
            digits=row[4],
            period=row[5],
            last_step=row[6],
            drift=row[7],
            secret=bytes(row[8]),
            secret_key_id=row[9],
        )
        for row in rows
    ]
    return found, remaining


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
