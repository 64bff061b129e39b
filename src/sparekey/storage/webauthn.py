"""Rows of ``webauthn_credentials`` and ``webauthn_challenges``, and users' WebAuthn handles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from sparekey.domain.models import FactorStatus, WebAuthnCredential
from sparekey.storage.prepared import Prepared, Unit, run
from sparekey.storage.recovery import OPEN_CASE_EXISTS
from sparekey.storage.tables import factors, users, webauthn_challenges, webauthn_credentials

__all__ = [
    "Challenge",
    "StoredCredential",
    "consume_challenge",
    "credentials_of",
    "find_credential",
    "insert_challenge",
    "insert_credential",
    "purge_expired_challenges",
    "record_use",
    "user_handle",
    "user_of_handle",
]


@dataclass(frozen=True, kw_only=True)
class Challenge:
    ceremony: str
    user_id: str | None
    user_verification: str
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class StoredCredential:
    """What checking an assertion needs: the key, the counter, and whose it is."""

    factor_id: str
    user_id: str
    user_handle: bytes | None
    status: FactorStatus
    public_key: bytes
    sign_count: int
    backed_up: bool
    throttled: bool  # the user's OTP throttle holds failures, a lock or a suspension
    open_recovery_case: bool = False  # a sign-in cancels it


# -- user handles -------------------------------------------------------------------------------


def user_handle(conn: Connection, user_id: str, *, new: bytes) -> bytes | None:
    """The user's handle, set to ``new`` if the user has none yet; None if there is no user."""
    conn.execute(
        update(users)
        .where(users.c.id == user_id, users.c.webauthn_handle.is_(None))
        .values(webauthn_handle=new)
    )
    handle = conn.execute(select(users.c.webauthn_handle).where(users.c.id == user_id)).first()
    return None if handle is None else bytes(handle[0])


def user_of_handle(conn: Connection, handle: bytes) -> str | None:
    return conn.execute(select(users.c.id).where(users.c.webauthn_handle == handle)).scalar()


# -- credentials --------------------------------------------------------------------------------


def insert_credential(
    conn: Connection,
    *,
    factor_id: str,
    user_id: str,
    credential: WebAuthnCredential,
    public_key: bytes,
) -> None:
    conn.execute(
        insert(webauthn_credentials).values(
            factor_id=factor_id,
            user_id=user_id,
            credential_id=credential.credential_id,
            public_key=public_key,
            sign_count=credential.sign_count,
            aaguid=credential.aaguid,
            transports=",".join(credential.transports),
            attestation_format=credential.attestation_format,
            backup_eligible=credential.backup_eligible,
            backed_up=credential.backed_up,
            discoverable=credential.discoverable,
        )
    )


def credentials_of(conn: Connection, user_id: str) -> list[tuple[bytes, tuple[str, ...]]]:
    """(credential id, transports) of each of the user's registered credentials."""
    rows = conn.execute(
        select(webauthn_credentials.c.credential_id, webauthn_credentials.c.transports)
        .join(factors, factors.c.id == webauthn_credentials.c.factor_id)
        .where(
            webauthn_credentials.c.user_id == user_id,
            factors.c.status == FactorStatus.ACTIVE.value,
        )
        .order_by(factors.c.created_at)
    )
    return [(bytes(c), tuple(t for t in transports.split(",") if t)) for c, transports in rows]


# The sign-in path runs these prepared (see sparekey.storage.prepared).
_FIND = Prepared(
    select(
        webauthn_credentials.c.factor_id,
        webauthn_credentials.c.user_id,
        users.c.webauthn_handle,
        factors.c.status,
        webauthn_credentials.c.public_key,
        webauthn_credentials.c.sign_count,
        webauthn_credentials.c.backed_up,
        users.c.otp_failures,
        users.c.otp_locked_until,
        users.c.otp_suspended_at,
        OPEN_CASE_EXISTS.label("open_case"),
    )
    .select_from(
        webauthn_credentials.join(factors, factors.c.id == webauthn_credentials.c.factor_id).join(
            users, users.c.id == webauthn_credentials.c.user_id
        )
    )
    .where(webauthn_credentials.c.credential_id == bindparam("credential_id"))
)
_COUNTER_MATCHES = [
    webauthn_credentials.c.factor_id == bindparam("factor_id"),
    webauthn_credentials.c.sign_count == bindparam("old_count"),
]
_USE = update(webauthn_credentials).values(
    sign_count=bindparam("new_count"), backed_up=bindparam("backed_up")
)
_USE_COUNTING = Prepared(
    _USE.where(*_COUNTER_MATCHES, webauthn_credentials.c.sign_count < bindparam("new_count"))
)
_USE_AT_ZERO = Prepared(_USE.where(*_COUNTER_MATCHES))
_TOUCH = Prepared(
    update(factors)
    .where(factors.c.id == bindparam("factor_id"))
    .values(last_used_at=bindparam("now"))
)


def find_credential(target: Connection | Unit, credential_id: bytes) -> StoredCredential | None:
    row = run(target, _FIND, {"credential_id": credential_id}).fetchone()
    if row is None:
        return None
    factor_id, user_id, handle, status, public_key, count, backed_up, *throttle, open_case = row
    return StoredCredential(
        factor_id=factor_id,
        user_id=user_id,
        user_handle=None if handle is None else bytes(handle),
        status=FactorStatus(status),
        public_key=bytes(public_key),
        sign_count=int(count),
        backed_up=bool(backed_up),
        throttled=bool(throttle[0]) or throttle[1] is not None or throttle[2] is not None,
        open_recovery_case=bool(open_case),
    )


def record_use(
    target: Connection | Unit,
    factor_id: str,
    *,
    old_count: int,
    new_count: int,
    backed_up: bool,
    now: datetime,
) -> bool:
    """Store the new signature counter if it still moves forward (a compare-and-set: of two
    assertions racing with the same counter, one wins); a counter of 0 stays 0."""
    statement = _USE_COUNTING if new_count else _USE_AT_ZERO
    parameters = {
        "factor_id": factor_id,
        "old_count": old_count,
        "new_count": new_count,
        "backed_up": backed_up,
    }
    if run(target, statement, parameters).rowcount != 1:
        return False
    run(target, _TOUCH, {"factor_id": factor_id, "now": now})
    return True


# -- challenges ---------------------------------------------------------------------------------


def insert_challenge(
    conn: Connection,
    challenge_hash: bytes,
    *,
    ceremony: str,
    user_id: str | None,
    user_verification: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    conn.execute(
        insert(webauthn_challenges).values(
            challenge_hash=challenge_hash,
            ceremony=ceremony,
            user_id=user_id,
            user_verification=user_verification,
            created_at=now,
            expires_at=expires_at,
        )
    )


_CONSUME = Prepared(
    delete(webauthn_challenges)
    .where(webauthn_challenges.c.challenge_hash == bindparam("challenge_hash"))
    .returning(
        webauthn_challenges.c.ceremony,
        webauthn_challenges.c.user_id,
        webauthn_challenges.c.user_verification,
        webauthn_challenges.c.expires_at,
    )
)


def consume_challenge(
    target: Connection | Unit, challenge_hash: bytes, *, now: datetime
) -> Challenge | None:
    """Take a challenge out: of any number of responses carrying it, on any node, one gets it."""
    row = run(target, _CONSUME, {"challenge_hash": challenge_hash}).fetchone()
    if row is None or row[3] <= now:
        return None
    return Challenge(ceremony=row[0], user_id=row[1], user_verification=row[2], expires_at=row[3])


def purge_expired_challenges(conn: Connection, *, now: datetime) -> int:
    result = conn.execute(
        delete(webauthn_challenges).where(webauthn_challenges.c.expires_at <= now)
    )
    return int(result.rowcount)
