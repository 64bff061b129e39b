"""Rows of the ``factors`` table. The secret column holds AES-GCM ciphertext only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, insert, or_, select, update

from sparekey.domain.models import Factor, FactorStatus, FactorType
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.storage.tables import factors

__all__ = [
    "FactorRecord",
    "active_factors",
    "advance_step",
    "delete_expired_pending",
    "delete_factor",
    "get_factor",
    "insert_factor",
    "list_factors",
    "update_factor",
]


@dataclass(frozen=True, kw_only=True)
class FactorRecord:
    factor: Factor
    secret: bytes
    secret_key_id: int


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


def active_factors(conn: Connection, user_id: str) -> list[FactorRecord]:
    stmt = select(factors).where(
        factors.c.user_id == user_id, factors.c.status == FactorStatus.ACTIVE.value
    )
    return [_to_record(row) for row in conn.execute(stmt)]


def advance_step(
    conn: Connection,
    factor_id: str,
    *,
    step: int,
    now: datetime,
    drift: int | None = None,
    activate: bool = False,
) -> bool:
    """Record ``step`` as used, if and only if it is later than every step used before.

    This one conditional UPDATE is the replay guard: of any number of concurrent attempts with the
    same code, on any node, exactly one sees a row count of 1.
    """
    values: dict[str, Any] = {"last_step": step, "last_used_at": now}
    if drift is not None:
        values["drift"] = drift
    condition = or_(factors.c.last_step.is_(None), factors.c.last_step < step)
    if activate:
        values.update(status=FactorStatus.ACTIVE.value, confirmed_at=now, expires_at=None)
        condition = and_(
            condition,
            factors.c.status == FactorStatus.PENDING.value,
            factors.c.expires_at > now,
        )
    else:
        condition = and_(condition, factors.c.status == FactorStatus.ACTIVE.value)
    result = conn.execute(
        update(factors).where(factors.c.id == factor_id, condition).values(values)
    )
    return result.rowcount == 1


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


def delete_expired_pending(conn: Connection, *, now: datetime, limit: int = 1000) -> int:
    expired = (
        select(factors.c.id)
        .where(factors.c.status == FactorStatus.PENDING.value, factors.c.expires_at <= now)
        .limit(limit)
        .scalar_subquery()
    )
    return conn.execute(delete(factors).where(factors.c.id.in_(expired))).rowcount
