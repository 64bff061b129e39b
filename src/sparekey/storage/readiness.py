"""The facts readiness is judged on, read set-based, and the drill's marks on the user.

One statement builds every user's facts: the ``users`` table outer-joined to two aggregates, one
over active ``factors`` and one over ``backup_codes``, each grouped by user. The same statement,
restricted to one user (the restriction goes inside both aggregates, so they read that user's rows
only), answers the per-user call; grouped again by the facts themselves, it answers the
organisation report with one row per distinct combination of facts and its number of users, so
the database does the counting and Python applies the rules once per combination. No threshold
of the rules is written here: only what a fact is (an active factor, a WebAuthn factor, a factor
unused since ``stale_before``, an unused code).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    case,
    func,
    literal,
    select,
    update,
)

from sparekey.domain.models import FactorStatus, FactorType
from sparekey.domain.readiness import ReadinessFacts
from sparekey.storage.tables import UtcDateTime, backup_codes, factors, operators, users

__all__ = [
    "ADMIN_ROLE",
    "UserFacts",
    "admin_facts",
    "fact_combinations",
    "record_drill",
    "snapshot",
    "unused_code_exists",
    "user_facts",
]

ADMIN_ROLE = "admin"

Restriction = Callable[[ColumnElement[str]], ColumnElement[bool]]


@dataclass(frozen=True, kw_only=True)
class UserFacts:
    facts: ReadinessFacts
    backup_codes_proven_at: datetime | None
    last_drill_at: datetime | None


def _facts(*, stale_before: datetime, restrict: Restriction | None) -> Select[Any]:
    """Per user: the facts, and the two readiness timestamps. ``restrict`` narrows the users."""
    last_seen = func.coalesce(factors.c.last_used_at, factors.c.confirmed_at, factors.c.created_at)
    per_factor = (
        select(
            factors.c.user_id,
            func.count().label("active"),
            func.sum(case((factors.c.type == FactorType.WEBAUTHN.value, 1), else_=0)).label(
                "webauthn"
            ),
            func.sum(case((last_seen < literal(stale_before, UtcDateTime), 1), else_=0)).label(
                "stale"
            ),
            func.sum(
                case(
                    (factors.c.type.in_([FactorType.EMAIL.value, FactorType.SMS.value]), 1),
                    else_=0,
                )
            ).label("fallback"),
        )
        .where(factors.c.status == FactorStatus.ACTIVE.value)
        .group_by(factors.c.user_id)
    )
    per_code = select(
        backup_codes.c.user_id,
        func.count(backup_codes.c.used_at).label("used"),
        (func.count() - func.count(backup_codes.c.used_at)).label("unused"),
    ).group_by(backup_codes.c.user_id)
    if restrict is not None:
        per_factor = per_factor.where(restrict(factors.c.user_id))
        per_code = per_code.where(restrict(backup_codes.c.user_id))
    f = per_factor.subquery("f")
    b = per_code.subquery("b")
    stmt = select(
        users.c.id.label("user_id"),
        users.c.backup_codes_proven_at,
        users.c.last_drill_at,
        func.coalesce(f.c.active, 0).label("active_factors"),
        func.coalesce(f.c.webauthn, 0).label("phishing_resistant_factors"),
        func.coalesce(f.c.stale, 0).label("stale_factors"),
        func.coalesce(f.c.fallback, 0).label("fallback_factors"),
        func.coalesce(b.c.unused, 0).label("backup_codes_unused"),
        func.coalesce(b.c.used, 0).label("backup_codes_used"),
        case((users.c.backup_codes_proven_at.is_not(None), 1), else_=0).label(
            "backup_codes_proven"
        ),
        case((users.c.last_drill_at.is_not(None), 1), else_=0).label("drilled"),
    ).select_from(
        users.outerjoin(f, f.c.user_id == users.c.id).outerjoin(b, b.c.user_id == users.c.id)
    )
    if restrict is not None:
        stmt = stmt.where(restrict(users.c.id))
    return stmt


_FACT_COLUMNS = (
    "active_factors",
    "phishing_resistant_factors",
    "stale_factors",
    "backup_codes_unused",
    "backup_codes_used",
    "backup_codes_proven",
    "drilled",
    "fallback_factors",
)


def _to_facts(row: Row[Any]) -> ReadinessFacts:
    return ReadinessFacts(
        active_factors=int(row.active_factors),
        phishing_resistant_factors=int(row.phishing_resistant_factors),
        stale_factors=int(row.stale_factors),
        backup_codes_unused=int(row.backup_codes_unused),
        backup_codes_used=int(row.backup_codes_used),
        backup_codes_proven=bool(row.backup_codes_proven),
        drilled=bool(row.drilled),
        fallback_factors=int(row.fallback_factors),
    )


def user_facts(conn: Connection, user_id: str, *, stale_before: datetime) -> UserFacts | None:
    """One user's facts (None if there is no such user); reads only that user's rows."""
    stmt = _facts(stale_before=stale_before, restrict=lambda column: column == user_id)
    row = conn.execute(stmt).first()
    if row is None:
        return None
    return UserFacts(
        facts=_to_facts(row),
        backup_codes_proven_at=row.backup_codes_proven_at,
        last_drill_at=row.last_drill_at,
    )


def fact_combinations(
    conn: Connection, *, stale_before: datetime
) -> list[tuple[ReadinessFacts, int]]:
    """Every distinct combination of facts among all users, with how many users have it."""
    per_user = _facts(stale_before=stale_before, restrict=None).subquery("facts")
    columns = [per_user.c[name] for name in _FACT_COLUMNS]
    stmt: Select[Any] = select(*columns, func.count().label("users")).group_by(*columns)
    return [(_to_facts(row), int(row.users)) for row in conn.execute(stmt)]


def admin_facts(conn: Connection, *, stale_before: datetime) -> list[tuple[str, ReadinessFacts]]:
    """The facts of every enabled admin operator's own user record, by operator name."""
    admin = (operators.c.role == ADMIN_ROLE) & operators.c.disabled_at.is_(None)
    admin_users = select(operators.c.user_id).where(admin)
    per_user = _facts(
        stale_before=stale_before, restrict=lambda column: column.in_(admin_users)
    ).subquery("facts")
    stmt: Select[Any] = (
        select(operators.c.name, *(per_user.c[name] for name in _FACT_COLUMNS))
        .join(per_user, per_user.c.user_id == operators.c.user_id)
        .where(admin)
        .order_by(operators.c.name)
    )
    return [(str(row.name), _to_facts(row)) for row in conn.execute(stmt)]


def snapshot(conn: Connection) -> Connection:
    """Make the statements of a fresh read connection see one snapshot (PostgreSQL); SQLite's
    reads take no lock and each statement sees its own committed state."""
    if conn.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


def unused_code_exists(conn: Connection, user_id: str, *, digests: Sequence[bytes]) -> bool:
    """Whether the user has an unused code with one of ``digests`` (one per MAC key version)."""
    stmt = (
        select(backup_codes.c.id)
        .where(
            backup_codes.c.user_id == user_id,
            backup_codes.c.digest.in_(list(digests)),
            backup_codes.c.used_at.is_(None),
        )
        .limit(1)
    )
    return conn.execute(stmt).first() is not None


def record_drill(conn: Connection, user_id: str, *, now: datetime, proven: bool) -> bool:
    """Mark a drill (and, for a valid code, the set as proven saved); False: no such user."""
    values: dict[str, datetime] = {"last_drill_at": now}
    if proven:
        values["backup_codes_proven_at"] = now
    result = conn.execute(update(users).where(users.c.id == user_id).values(**values))
    return result.rowcount == 1
