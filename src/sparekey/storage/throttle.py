"""The throttle columns of ``users``: each change is one conditional UPDATE.

Every statement that records the outcome of a guessable code is conditional on the user not being
locked or suspended *at the moment it runs*, so concurrent guesses cannot slip past a lock that an
earlier one set: the database orders them (SQLite's write lock, PostgreSQL's row lock).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, or_, select, update

from sparekey.storage.prepared import Prepared, Unit, run
from sparekey.storage.tables import users

__all__ = ["clear", "lock", "record_failure", "record_success"]

_OPEN = and_(
    users.c.id == bindparam("user_id"),
    users.c.otp_suspended_at.is_(None),
    or_(users.c.otp_locked_until.is_(None), users.c.otp_locked_until <= bindparam("now")),
)
_FAILURE = Prepared(
    update(users)
    .where(_OPEN)
    .values(otp_failures=users.c.otp_failures + 1)
    .returning(users.c.otp_failures)
)
_SUCCESS = Prepared(update(users).where(_OPEN).values(otp_failures=0, otp_locked_until=None))
# The same condition without a write; FOR UPDATE waits for, then re-reads, a concurrent change of
# the row on PostgreSQL (SQLite's write lock, already held, orders it there).
_STILL_OPEN = Prepared(select(users.c.id).where(_OPEN).with_for_update())
_LOCK = Prepared(
    update(users)
    .where(users.c.id == bindparam("user_id"))
    .values(otp_locked_until=bindparam("until"), otp_suspended_at=bindparam("suspended_at"))
)
_CLEAR = Prepared(
    update(users)
    .where(users.c.id == bindparam("user_id"))
    .values(otp_failures=0, otp_locked_until=None, otp_suspended_at=None)
)


def record_failure(unit: Unit, user_id: str, *, now: datetime) -> int | None:
    """Count one more consecutive failure; the new count, or None if the user is locked now."""
    row = run(unit, _FAILURE, {"user_id": user_id, "now": now}).fetchone()
    return None if row is None else int(row[0])


def record_success(unit: Unit, user_id: str, *, now: datetime, reset: bool = True) -> bool:
    """Reset the count after a good code; False if the user is locked now (refuse the code).

    ``reset=False`` when this unit read a count of zero and no lock: the row is only checked, not
    rewritten (most good codes; a write would dirty a page of ``users`` for nothing). A failure
    counted concurrently is then left counted, which errs on the strict side.
    """
    parameters = {"user_id": user_id, "now": now}
    if reset:
        return run(unit, _SUCCESS, parameters).rowcount == 1
    return run(unit, _STILL_OPEN, parameters).fetchone() is not None


def lock(
    unit: Unit, user_id: str, *, until: datetime | None, suspended_at: datetime | None
) -> None:
    run(unit, _LOCK, {"user_id": user_id, "until": until, "suspended_at": suspended_at})


def clear(target: Connection | Unit, user_id: str) -> bool:
    """Lift any lock and suspension (a non-guessable success, or an administrator)."""
    return run(target, _CLEAR, {"user_id": user_id}).rowcount == 1
