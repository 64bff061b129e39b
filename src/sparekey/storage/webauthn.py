"""Rows of ``webauthn_credentials`` and ``webauthn_challenges``, and users' WebAuthn handles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from sparekey.domain.models import FactorStatus, WebAuthnCredential
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


def find_credential(conn: Connection, credential_id: bytes) -> StoredCredential | None:
    row = conn.execute(
        select(
            webauthn_credentials.c.factor_id,
            webauthn_credentials.c.user_id,
            users.c.webauthn_handle,
            factors.c.status,
            webauthn_credentials.c.public_key,
            webauthn_credentials.c.sign_count,
            webauthn_credentials.c.backed_up,
        )
        .join(factors, factors.c.id == webauthn_credentials.c.factor_id)
        .join(users, users.c.id == webauthn_credentials.c.user_id)
        .where(webauthn_credentials.c.credential_id == credential_id)
    ).first()
    if row is None:
        return None
    return StoredCredential(
        factor_id=row.factor_id,
        user_id=row.user_id,
        user_handle=None if row.webauthn_handle is None else bytes(row.webauthn_handle),
        status=FactorStatus(row.status),
        public_key=bytes(row.public_key),
        sign_count=int(row.sign_count),
        backed_up=bool(row.backed_up),
    )


def record_use(
    conn: Connection,
    factor_id: str,
    *,
    old_count: int,
    new_count: int,
    backed_up: bool,
    now: datetime,
) -> bool:
    """Store the new signature counter if it still moves forward (a compare-and-set: of two
    assertions racing with the same counter, one wins); a counter of 0 stays 0."""
    conditions = [
        webauthn_credentials.c.factor_id == factor_id,
        webauthn_credentials.c.sign_count == old_count,
    ]
    if new_count:
        conditions.append(webauthn_credentials.c.sign_count < new_count)
    moved = conn.execute(
        update(webauthn_credentials)
        .where(*conditions)
        .values(sign_count=new_count, backed_up=backed_up)
    )
    if moved.rowcount != 1:
        return False
    conn.execute(update(factors).where(factors.c.id == factor_id).values(last_used_at=now))
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


def consume_challenge(
    conn: Connection, challenge_hash: bytes, *, now: datetime
) -> Challenge | None:
    """Take a challenge out: of any number of responses carrying it, on any node, one gets it."""
    row = conn.execute(
        delete(webauthn_challenges)
        .where(webauthn_challenges.c.challenge_hash == challenge_hash)
        .returning(
            webauthn_challenges.c.ceremony,
            webauthn_challenges.c.user_id,
            webauthn_challenges.c.user_verification,
            webauthn_challenges.c.expires_at,
        )
    ).first()
    if row is None or row.expires_at <= now:
        return None
    return Challenge(
        ceremony=row.ceremony,
        user_id=row.user_id,
        user_verification=row.user_verification,
        expires_at=row.expires_at,
    )


def purge_expired_challenges(conn: Connection, *, now: datetime) -> int:
    result = conn.execute(
        delete(webauthn_challenges).where(webauthn_challenges.c.expires_at <= now)
    )
    return int(result.rowcount)
