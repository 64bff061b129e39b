"""The ``data_keys`` table as the keyring's :class:`~sparekey.crypto.keyring.KeyStore`."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, insert, select, update

from sparekey.crypto.keyring import KeyPurpose, StoredKey, WrapFunction
from sparekey.domain.ports import Clock
from sparekey.storage.database import Database
from sparekey.storage.tables import (
    api_keys,
    audit_checkpoints,
    audit_events,
    backup_codes,
    data_keys,
    factors,
)

__all__ = ["SqlKeyStore", "usage_by_key"]


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
                wrapped=row.wrapped,
                kek_id=row.kek_id,
                active=row.active,
            )
            for row in rows
        ]

    def add_key(self, *, purpose: KeyPurpose, kek_id: str, wrap: WrapFunction) -> StoredKey:
        """Insert, then wrap under the new row's id (the id is in the wrap's associated data)."""
        with self._db.write() as conn:
            key_id = conn.execute(
                insert(data_keys)
                .values(
                    purpose=purpose.value,
                    wrapped=b"",
                    kek_id="",
                    active=False,
                    created_at=self._clock.now(),
                )
                .returning(data_keys.c.id)
            ).scalar_one()
            wrapped = wrap(key_id)
            conn.execute(
                update(data_keys)
                .where(data_keys.c.purpose == purpose.value, data_keys.c.id != key_id)
                .values(active=False)
            )
            conn.execute(
                update(data_keys)
                .where(data_keys.c.id == key_id)
                .values(wrapped=wrapped, kek_id=kek_id, active=True)
            )
        return StoredKey(id=key_id, purpose=purpose, wrapped=wrapped, kek_id=kek_id, active=True)


def usage_by_key(db: Database) -> dict[int, int]:
    """How many records each data key protects (seeds it seals, hashes and MACs it keys,
    checkpoints it signed)."""
    uses: dict[int, int] = {}
    columns = [
        factors.c.secret_key_id,
        backup_codes.c.mac_key_id,
        api_keys.c.mac_key_id,
        audit_events.c.mac_key_id,
        audit_checkpoints.c.signing_key_id,
    ]
    with db.read() as conn:
        for column in columns:
            for key_id, count in conn.execute(select(column, func.count()).group_by(column)):
                uses[key_id] = uses.get(key_id, 0) + int(count)
    return uses
