"""Rows of ``fallback_codes``: the one current code of each email or SMS factor, as a keyed hash.

Storing a code replaces the factor's previous one (which is so voided). Spending a code is one
conditional UPDATE (``used_at IS NULL AND expires_at > now``), as backup codes and TOTP steps are
(decision 0003): of parallel attempts with one code exactly one sees a row count of 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, exists, false, insert, or_, select, update

from sparekey.domain.models import FactorStatus, FactorType
from sparekey.storage.prepared import Prepared, Unit, run
from sparekey.storage.tables import factors, fallback_codes

__all__ = [
    "LiveCode",
    "activate_factor",
    "change_destination",
    "confirm_destination",
    "live_codes",
    "store_code",
    "stronger_factor_exists",
    "use_code",
    "void_code",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class LiveCode:
    factor_id: str
    factor_type: FactorType
    status: FactorStatus
    digest: bytes
    mac_key_id: int


def store_code(
    conn: Connection,
    *,
    factor_id: str,
    user_id: str,
    destination: str,
    digest: bytes,
    mac_key_id: int,
    now: datetime,
    expires_at: datetime,
) -> bool:
    """Make this the factor's one code (voiding any earlier one), if the factor still exists
    with ``destination``; False otherwise (removed or changed while the code was being sent)."""
    still = conn.execute(
        select(factors.c.id).where(
            factors.c.id == factor_id,
            factors.c.user_id == user_id,
            factors.c.destination == destination,
            factors.c.status != FactorStatus.LOST.value,
        )
    ).first()
    if still is None:
        return False
    conn.execute(delete(fallback_codes).where(fallback_codes.c.factor_id == factor_id))
    conn.execute(
        insert(fallback_codes).values(
            factor_id=factor_id,
            user_id=user_id,
            digest=digest,
            mac_key_id=mac_key_id,
            sent_at=now,
            expires_at=expires_at,
        )
    )
    return True


def void_code(conn: Connection, factor_id: str) -> None:
    conn.execute(delete(fallback_codes).where(fallback_codes.c.factor_id == factor_id))


_LIVE_COLUMNS = (
    fallback_codes.c.factor_id,
    factors.c.type,
    factors.c.status,
    fallback_codes.c.digest,
    fallback_codes.c.mac_key_id,
)
_LIVE_WHERE = (
    fallback_codes.c.user_id == bindparam("user_id"),
    fallback_codes.c.used_at.is_(None),
    fallback_codes.c.expires_at > bindparam("now"),
    or_(factors.c.usable_after.is_(None), factors.c.usable_after <= bindparam("now")),
)
_LIVE_ACTIVE = Prepared(
    select(*_LIVE_COLUMNS)
    .join(factors, factors.c.id == fallback_codes.c.factor_id)
    .where(
        *_LIVE_WHERE,
        factors.c.status == FactorStatus.ACTIVE.value,
        factors.c.destination_unconfirmed == false(),
    )
    .order_by(fallback_codes.c.factor_id)
)
_LIVE_ONE = Prepared(
    select(*_LIVE_COLUMNS)
    .join(factors, factors.c.id == fallback_codes.c.factor_id)
    .where(
        *_LIVE_WHERE,
        factors.c.id == bindparam("factor_id"),
        factors.c.status != FactorStatus.LOST.value,
    )
)


def live_codes(
    target: Connection | Unit, user_id: str, *, now: datetime, factor_id: str | None = None
) -> list[LiveCode]:
    """The user's unused, unexpired codes whose factor's waiting period is over: of active
    factors whose destination is confirmed (sign-in), or of ``factor_id`` whatever its state but
    lost (its confirmation, or its changed destination's)."""
    params: dict[str, object] = {"user_id": user_id, "now": now}
    if factor_id is not None:
        params["factor_id"] = factor_id
    rows = run(target, _LIVE_ACTIVE if factor_id is None else _LIVE_ONE, params).fetchall()
    return [
        LiveCode(
            factor_id=row[0],
            factor_type=FactorType(row[1]),
            status=FactorStatus(row[2]),
            digest=bytes(row[3]),
            mac_key_id=row[4],
        )
        for row in rows
    ]


_USE = Prepared(
    update(fallback_codes)
    .where(
        fallback_codes.c.factor_id == bindparam("code_factor"),
        fallback_codes.c.digest == bindparam("code_digest"),
        fallback_codes.c.used_at.is_(None),
        fallback_codes.c.expires_at > bindparam("now"),
    )
    .values(used_at=bindparam("now"))
)
_TOUCH = Prepared(
    update(factors)
    .where(factors.c.id == bindparam("factor_id"))
    .values(last_used_at=bindparam("now"))
)


def use_code(target: Connection | Unit, factor_id: str, *, digest: bytes, now: datetime) -> bool:
    """Spend the code: True for exactly one of any number of concurrent attempts."""
    params = {"code_factor": factor_id, "code_digest": digest, "now": now}
    if run(target, _USE, params).rowcount != 1:
        return False
    run(target, _TOUCH, {"factor_id": factor_id, "now": now})
    return True


def activate_factor(conn: Connection, factor_id: str, *, now: datetime) -> bool:
    """Confirm a pending, unexpired email or SMS factor."""
    result = conn.execute(
        update(factors)
        .where(
            factors.c.id == factor_id,
            factors.c.status == FactorStatus.PENDING.value,
            factors.c.expires_at > now,
        )
        .values(
            status=FactorStatus.ACTIVE.value,
            confirmed_at=now,
            expires_at=None,
            destination_unconfirmed=False,
        )
    )
    return result.rowcount == 1


def change_destination(
    conn: Connection,
    user_id: str,
    factor_id: str,
    *,
    old: str,
    new: str,
    usable_after: datetime,
) -> bool:
    """Point the factor at ``new`` from ``usable_after`` on, unconfirmed, if it still points at
    ``old``; its outstanding code is voided."""
    result = conn.execute(
        update(factors)
        .where(
            factors.c.id == factor_id,
            factors.c.user_id == user_id,
            factors.c.destination == old,
        )
        .values(destination=new, usable_after=usable_after, destination_unconfirmed=True)
    )
    if result.rowcount != 1:
        return False
    void_code(conn, factor_id)
    return True


def confirm_destination(conn: Connection, factor_id: str, *, destination: str) -> bool:
    """Mark an active factor's changed destination confirmed, if it still is ``destination``."""
    result = conn.execute(
        update(factors)
        .where(
            factors.c.id == factor_id,
            factors.c.status == FactorStatus.ACTIVE.value,
            factors.c.destination == destination,
            factors.c.destination_unconfirmed.is_(True),
        )
        .values(destination_unconfirmed=False)
    )
    return result.rowcount == 1


_STRONGER = Prepared(
    select(
        exists().where(
            factors.c.user_id == bindparam("user_id"),
            factors.c.status == FactorStatus.ACTIVE.value,
            factors.c.type != FactorType.EMAIL.value,
            factors.c.type != FactorType.SMS.value,
        )
    )
)


def stronger_factor_exists(target: Connection | Unit, user_id: str) -> bool:
    """Whether the user has an active factor that is not an email or SMS one."""
    row = run(target, _STRONGER, {"user_id": user_id}).fetchone()
    return bool(row and row[0])
