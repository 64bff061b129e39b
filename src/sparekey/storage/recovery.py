"""Rows of ``recovery_cases``, ``recovery_approvals`` and ``trusted_contacts``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, func, insert, or_, select, update

from sparekey.domain.models import CaseState, RecoveryCase
from sparekey.storage.prepared import Prepared, Unit, run
from sparekey.storage.tables import recovery_approvals, recovery_cases, trusted_contacts, users

__all__ = [
    "OPEN_CASE_EXISTS",
    "OPEN_STATES",
    "StoredPass",
    "add_approval",
    "cancel_on_sign_in",
    "contacts_of",
    "get_case",
    "insert_case",
    "list_cases",
    "open_case_of",
    "record_fallback_evidence",
    "redeem_pass",
    "set_contacts",
    "stored_pass",
    "transition",
]

OPEN_STATES = [s.value for s in CaseState if s.open]
# "The case is open", without an IN list (prepared statements are compiled once; see Prepared)
_IS_OPEN = or_(*(recovery_cases.c.state == state for state in OPEN_STATES))
OPEN_CASE_EXISTS = (
    select(recovery_cases.c.id)
    .where(recovery_cases.c.user_id == users.c.id, _IS_OPEN)
    .limit(1)
    .exists()
)
_CANCEL_ON_SIGN_IN = Prepared(
    update(recovery_cases)
    .where(
        recovery_cases.c.user_id == bindparam("user_id"),
        _IS_OPEN,
        recovery_cases.c.pass_redeemed_at.is_(None),
    )
    .values(
        state=CaseState.CANCELLED.value,
        updated_at=bindparam("now"),
        closed_at=bindparam("now"),
        closed_by=bindparam("by"),
        close_reason="the user signed in with a working factor",
    )
    .returning(recovery_cases.c.id)
)


def cancel_on_sign_in(
    target: Connection | Unit, user_id: str, *, now: datetime, by: str
) -> list[str]:
    """Cancel the user's open cases whose pass was not redeemed; the ids cancelled."""
    rows = run(target, _CANCEL_ON_SIGN_IN, {"user_id": user_id, "now": now, "by": by}).fetchall()
    return [row[0] for row in rows]


@dataclass(frozen=True, kw_only=True)
class StoredPass:
    digest: bytes
    mac_key_id: int
    expires_at: datetime
    redeemed_at: datetime | None


def _to_case(row: Row[Any], approvals: list[str]) -> RecoveryCase:
    return RecoveryCase(
        id=row.id,
        user_id=row.user_id,
        state=CaseState(row.state),
        approval=row.approval,
        approvals_needed=row.approvals_needed,
        approvals=tuple(approvals),
        reason=row.reason,
        requested_by=row.requested_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        evidence=tuple(json.loads(row.evidence)) if row.evidence else (),
        verified_by=row.verified_by,
        waiting_until=row.waiting_until,
        pass_expires_at=row.pass_expires_at,
        pass_redeemed_at=row.pass_redeemed_at,
        closed_at=row.closed_at,
        closed_by=row.closed_by,
        close_reason=row.close_reason,
        fallback_verified_at=row.fallback_verified_at,
        fallback_factor_id=row.fallback_factor_id,
    )


def _approvals(conn: Connection, case_ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {case_id: [] for case_id in case_ids}
    if case_ids:
        rows = conn.execute(
            select(recovery_approvals.c.case_id, recovery_approvals.c.approver)
            .where(recovery_approvals.c.case_id.in_(case_ids))
            .order_by(recovery_approvals.c.approved_at, recovery_approvals.c.approver)
        )
        for case_id, approver in rows:
            found[case_id].append(approver)
    return found


def insert_case(conn: Connection, case: RecoveryCase) -> None:
    conn.execute(
        insert(recovery_cases).values(
            id=case.id,
            user_id=case.user_id,
            state=case.state.value,
            approval=case.approval,
            approvals_needed=case.approvals_needed,
            reason=case.reason,
            requested_by=case.requested_by,
            created_at=case.created_at,
            updated_at=case.updated_at,
        )
    )


def get_case(conn: Connection, case_id: str, *, lock: bool = False) -> RecoveryCase | None:
    """``lock`` holds the row until the transaction ends (PostgreSQL; SQLite writes are
    serialised already)."""
    statement = select(recovery_cases).where(recovery_cases.c.id == case_id)
    if lock and conn.dialect.name != "sqlite":
        statement = statement.with_for_update()
    row = conn.execute(statement).first()
    if row is None:
        return None
    return _to_case(row, _approvals(conn, [case_id])[case_id])


def open_case_of(conn: Connection, user_id: str) -> RecoveryCase | None:
    row = conn.execute(
        select(recovery_cases)
        .where(recovery_cases.c.user_id == user_id, recovery_cases.c.state.in_(OPEN_STATES))
        .order_by(recovery_cases.c.created_at.desc())
        .limit(1)
    ).first()
    return None if row is None else _to_case(row, _approvals(conn, [row.id])[row.id])


def list_cases(
    conn: Connection, *, state: str | None = None, user_id: str | None = None, limit: int = 100
) -> list[RecoveryCase]:
    statement = select(recovery_cases).order_by(
        recovery_cases.c.created_at.desc(), recovery_cases.c.id
    )
    if state is not None:
        statement = statement.where(recovery_cases.c.state == state)
    if user_id is not None:
        statement = statement.where(recovery_cases.c.user_id == user_id)
    rows = conn.execute(statement.limit(limit)).all()
    approvals = _approvals(conn, [row.id for row in rows])
    return [_to_case(row, approvals[row.id]) for row in rows]


def transition(
    conn: Connection, case_id: str, *, expected: CaseState, now: datetime, **values: Any
) -> bool:
    """Move a case on, if and only if it is still in ``expected``: of two racing transitions,
    one wins and the other is refused."""
    if "evidence" in values and values["evidence"] is not None:
        values["evidence"] = json.dumps(list(values["evidence"]))
    if "state" in values:
        values["state"] = CaseState(values["state"]).value
    result = conn.execute(
        update(recovery_cases)
        .where(recovery_cases.c.id == case_id, recovery_cases.c.state == expected.value)
        .values(updated_at=now, **values)
    )
    return result.rowcount == 1


_FALLBACK_EVIDENCE = Prepared(
    update(recovery_cases)
    .where(
        recovery_cases.c.id == bindparam("case_id"),
        recovery_cases.c.state == CaseState.REQUESTED.value,
    )
    .values(
        fallback_verified_at=bindparam("now"),
        fallback_factor_id=bindparam("factor_id"),
        updated_at=bindparam("now"),
    )
)


def record_fallback_evidence(
    target: Connection | Unit, case_id: str, factor_id: str, *, now: datetime
) -> bool:
    """Record that the user proved to hold ``factor_id``'s destination, if the case is still
    ``requested`` (identity not verified yet)."""
    params = {"case_id": case_id, "factor_id": factor_id, "now": now}
    return run(target, _FALLBACK_EVIDENCE, params).rowcount == 1


def add_approval(conn: Connection, case_id: str, approver: str, *, now: datetime) -> int:
    """Record an approval; returns how many distinct approvals the case has."""
    conn.execute(
        insert(recovery_approvals).values(case_id=case_id, approver=approver, approved_at=now)
    )
    return int(
        conn.execute(
            select(func.count()).where(recovery_approvals.c.case_id == case_id)
        ).scalar_one()
    )


def stored_pass(conn: Connection, case_id: str) -> StoredPass | None:
    row = conn.execute(
        select(
            recovery_cases.c.pass_digest,
            recovery_cases.c.pass_mac_key_id,
            recovery_cases.c.pass_expires_at,
            recovery_cases.c.pass_redeemed_at,
        ).where(recovery_cases.c.id == case_id)
    ).first()
    if row is None or row.pass_digest is None:
        return None
    return StoredPass(
        digest=bytes(row.pass_digest),
        mac_key_id=row.pass_mac_key_id,
        expires_at=row.pass_expires_at,
        redeemed_at=row.pass_redeemed_at,
    )


def redeem_pass(conn: Connection, case_id: str, digest: bytes, *, now: datetime) -> bool:
    """Spend the pass: one conditional UPDATE, so of parallel attempts exactly one succeeds."""
    result = conn.execute(
        update(recovery_cases)
        .where(
            recovery_cases.c.id == case_id,
            recovery_cases.c.state == CaseState.READY.value,
            recovery_cases.c.pass_digest == digest,
            recovery_cases.c.pass_redeemed_at.is_(None),
            recovery_cases.c.pass_expires_at > now,
        )
        .values(pass_redeemed_at=now, updated_at=now)
    )
    return result.rowcount == 1


def contacts_of(conn: Connection, user_id: str) -> list[str]:
    rows = conn.execute(
        select(trusted_contacts.c.contact_id)
        .where(trusted_contacts.c.user_id == user_id)
        .order_by(trusted_contacts.c.contact_id)
    )
    return [row[0] for row in rows]


def set_contacts(conn: Connection, user_id: str, contact_ids: list[str], *, now: datetime) -> None:
    conn.execute(delete(trusted_contacts).where(trusted_contacts.c.user_id == user_id))
    if contact_ids:
        conn.execute(
            insert(trusted_contacts),
            [{"user_id": user_id, "contact_id": c, "created_at": now} for c in contact_ids],
        )


def users_naming(conn: Connection, contact_id: str) -> list[str]:
    """The users who named ``contact_id`` as a trusted contact."""
    rows = conn.execute(
        select(trusted_contacts.c.user_id)
        .where(trusted_contacts.c.contact_id == contact_id)
        .order_by(trusted_contacts.c.user_id)
    )
    return [row[0] for row in rows]
