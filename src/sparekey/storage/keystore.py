"""The ``data_keys`` table as the keyring's :class:`~sparekey.crypto.keyring.KeyStore`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from sparekey.crypto.keyring import KeyPurpose, NewKey, StoredKey
from sparekey.domain.errors import ConflictError
from sparekey.domain.ports import Clock
from sparekey.storage.database import Database
from sparekey.storage.tables import (
    api_keys,
    audit_checkpoints,
    audit_events,
    backup_codes,
    data_keys,
    device_tokens,
    factors,
    recovery_cases,
)

__all__ = [
    "SqlKeyStore",
    "delete_unused_key",
    "retire_signing_key",
    "rewrap_keys",
    "usage_by_key",
]


class SqlKeyStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def list_keys(self) -> Sequence[StoredKey]:
        with self._db.read() as conn:
            rows = conn.execute(select(data_keys).order_by(data_keys.c.id)).all()
        return [
            StoredKey(
                id=row.id,
                purpose=KeyPurpose(row.purpose),
                wrapped=None if row.retired_at is not None else row.wrapped,
                kek_id=row.kek_id,
                active=row.active,
                public_key=row.public_key,
            )
            for row in rows
        ]

    def add_key(self, key: NewKey) -> StoredKey:
        with self._db.write() as conn:
            return self.insert_key(conn, key)

    def insert_key(self, conn: Connection, key: NewKey) -> StoredKey:
        """Insert, then wrap under the new row's id (the id is in the wrap's associated data);
        the new key becomes the active one of its purpose."""
        key_id = conn.execute(
            insert(data_keys)
            .values(
                purpose=key.purpose.value,
                wrapped=b"",
                kek_id="",
                active=False,
                created_at=self._clock.now(),
                public_key=key.public_key,
            )
            .returning(data_keys.c.id)
        ).scalar_one()
        wrapped = key.wrap(key_id)
        conn.execute(
            update(data_keys)
            .where(data_keys.c.purpose == key.purpose.value, data_keys.c.id != key_id)
            .values(active=False)
        )
        conn.execute(
            update(data_keys)
            .where(data_keys.c.id == key_id)
            .values(wrapped=wrapped, kek_id=key.kek_id, active=True)
        )
        return StoredKey(
            id=key_id,
            purpose=key.purpose,
            wrapped=wrapped,
            kek_id=key.kek_id,
            active=True,
            public_key=key.public_key,
        )


def rewrap_keys(conn: Connection, wrapped: dict[int, bytes], *, kek_id: str) -> int:
    """Store every data key's new wrapping; fails (rolling back) if the set of live keys changed
    since ``wrapped`` was computed, so no key is left under the old KEK."""
    live = set(
        conn.execute(select(data_keys.c.id).where(data_keys.c.retired_at.is_(None))).scalars()
    )
    if live != set(wrapped):
        raise ConflictError("the data keys changed during the KEK rotation; run it again")
    for key_id, blob in wrapped.items():
        conn.execute(
            update(data_keys).where(data_keys.c.id == key_id).values(wrapped=blob, kek_id=kek_id)
        )
    return len(wrapped)


def retire_signing_key(conn: Connection, key_id: int, *, public_key: bytes, now: datetime) -> bool:
    """Destroy a retired signing key's private half; its public half stays for verification."""
    result = conn.execute(
        update(data_keys)
        .where(
            data_keys.c.id == key_id,
            data_keys.c.purpose == KeyPurpose.SIGNING.value,
            data_keys.c.active.is_(False),
            data_keys.c.retired_at.is_(None),
        )
        .values(wrapped=b"", public_key=public_key, retired_at=now)
    )
    return result.rowcount == 1


def delete_unused_key(conn: Connection, key_id: int) -> bool:
    """Delete an inactive encryption or MAC key that no record names. The foreign keys from every
    table that names a key make this safe against a record written concurrently."""
    uses = [select(column).where(column == key_id).limit(1).exists() for column in _KEY_COLUMNS]
    result = conn.execute(
        delete(data_keys).where(
            data_keys.c.id == key_id,
            data_keys.c.active.is_(False),
            data_keys.c.purpose != KeyPurpose.SIGNING.value,
            ~or_(*uses),
        )
    )
    return result.rowcount == 1


_KEY_COLUMNS = [
    factors.c.secret_key_id,
    backup_codes.c.mac_key_id,
    api_keys.c.mac_key_id,
    audit_events.c.mac_key_id,
    audit_checkpoints.c.signing_key_id,
    recovery_cases.c.pass_mac_key_id,
    device_tokens.c.mac_key_id,
]


def usage_by_key(db: Database) -> dict[int, int]:
    """How many records each data key protects (seeds it seals, hashes and MACs it keys,
    checkpoints it signed)."""
    uses: dict[int, int] = {}
    with db.read() as conn:
        for column in _KEY_COLUMNS:
            for key_id, count in conn.execute(select(column, func.count()).group_by(column)):
                uses[key_id] = uses.get(key_id, 0) + int(count)
    return uses
