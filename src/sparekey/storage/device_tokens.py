"""Rows of the ``device_tokens`` table: a keyed hash of each token, never the token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, insert, or_, select, update

from sparekey.domain.models import DeviceToken
from sparekey.storage.tables import device_tokens

__all__ = [
    "DeviceTokenRecord",
    "count_live",
    "find_by_digests",
    "get_device_token",
    "insert_device_token",
    "is_live",
    "list_device_tokens",
    "revoke_device_token",
    "touch",
]


@dataclass(frozen=True, kw_only=True)
class DeviceTokenRecord:
    device_token: DeviceToken
    digest: bytes
    mac_key_id: int


def _to_token(row: Row[Any]) -> DeviceToken:
    return DeviceToken(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def insert_device_token(conn: Connection, record: DeviceTokenRecord) -> None:
    t = record.device_token
    conn.execute(
        insert(device_tokens).values(
            id=t.id,
            user_id=t.user_id,
            name=t.name,
            digest=record.digest,
            mac_key_id=record.mac_key_id,
            created_at=t.created_at,
            last_used_at=t.last_used_at,
            revoked_at=t.revoked_at,
        )
    )


def find_by_digests(conn: Connection, digests: list[bytes]) -> DeviceTokenRecord | None:
    """The token whose keyed hash is one of ``digests`` (one per MAC key the keyring knows)."""
    if not digests:
        return None
    row = conn.execute(select(device_tokens).where(device_tokens.c.digest.in_(digests))).first()
    if row is None:
        return None
    return DeviceTokenRecord(
        device_token=_to_token(row), digest=row.digest, mac_key_id=row.mac_key_id
    )


def get_device_token(conn: Connection, user_id: str, token_id: str) -> DeviceToken | None:
    row = conn.execute(
        select(device_tokens).where(
            device_tokens.c.user_id == user_id, device_tokens.c.id == token_id
        )
    ).first()
    return None if row is None else _to_token(row)


def list_device_tokens(conn: Connection, user_id: str) -> list[DeviceToken]:
    rows = conn.execute(
        select(device_tokens)
        .where(device_tokens.c.user_id == user_id)
        .order_by(device_tokens.c.created_at, device_tokens.c.id)
    )
    return [_to_token(row) for row in rows]


def count_live(conn: Connection, user_id: str) -> int:
    query = select(func.count()).where(
        device_tokens.c.user_id == user_id, device_tokens.c.revoked_at.is_(None)
    )
    return int(conn.execute(query).scalar_one())


def is_live(conn: Connection, token_id: str, user_id: str) -> bool:
    query = select(device_tokens.c.id).where(
        device_tokens.c.id == token_id,
        device_tokens.c.user_id == user_id,
        device_tokens.c.revoked_at.is_(None),
    )
    return conn.execute(query).first() is not None


def revoke_device_token(conn: Connection, user_id: str, token_id: str, *, now: datetime) -> bool:
    """Revoke a live token; False if it was revoked already (or is not this user's)."""
    result = conn.execute(
        update(device_tokens)
        .where(
            device_tokens.c.user_id == user_id,
            device_tokens.c.id == token_id,
            device_tokens.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return result.rowcount == 1


def touch(conn: Connection, token_id: str, *, now: datetime, stale_before: datetime) -> None:
    """Record a use, unless one was recorded since ``stale_before`` (so racing requests write
    once, and a busy token costs one write a minute, not one per request)."""
    conn.execute(
        update(device_tokens)
        .where(
            device_tokens.c.id == token_id,
            or_(
                device_tokens.c.last_used_at.is_(None),
                device_tokens.c.last_used_at < stale_before,
            ),
        )
        .values(last_used_at=now)
    )
