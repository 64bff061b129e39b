"""Rows of the ``backup_codes`` table: keyed hashes only, never a code."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from sparekey.storage.prepared import Prepared, Unit, run
from sparekey.storage.tables import backup_codes, users

__all__ = ["consume_code", "count_remaining", "replace_codes"]


def replace_codes(
    conn: Connection, user_id: str, *, digests: Sequence[bytes], mac_key_id: int, now: datetime
) -> None:
    """Delete the user's whole previous set and store the new one, which no one has yet proven
    saved (readiness: ``users.backup_codes_proven_at`` back to NULL)."""
    conn.execute(delete(backup_codes).where(backup_codes.c.user_id == user_id))
    conn.execute(update(users).where(users.c.id == user_id).values(backup_codes_proven_at=None))
    conn.execute(
        insert(backup_codes),
        [
            {"user_id": user_id, "digest": d, "mac_key_id": mac_key_id, "created_at": now}
            for d in digests
        ],
    )


_CONSUME = Prepared(
    update(backup_codes)
    .where(
        backup_codes.c.user_id == bindparam("user_id"),
        backup_codes.c.digest == bindparam("digest"),
        backup_codes.c.used_at.is_(None),
    )
    .values(used_at=bindparam("now"))
)
_COUNT_REMAINING = Prepared(
    select(func.count()).where(
        backup_codes.c.user_id == bindparam("user_id"), backup_codes.c.used_at.is_(None)
    )
)


def consume_code(
    target: Connection | Unit, user_id: str, *, digests: Sequence[bytes], now: datetime
) -> bool:
    """Mark the unused code with one of ``digests`` (one per MAC key version) as used.

    One conditional UPDATE: of concurrent attempts with the same code, exactly one changes a row.
    """
    for digest in digests:
        params = {"user_id": user_id, "digest": digest, "now": now}
        if run(target, _CONSUME, params).rowcount == 1:
            return True
    return False


def count_remaining(target: Connection | Unit, user_id: str) -> int:
    return int(run(target, _COUNT_REMAINING, {"user_id": user_id}).fetchone()[0])
