"""Rows of the ``backup_codes`` table: keyed hashes only, never a code."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from sparekey.storage.tables import backup_codes

__all__ = ["consume_code", "count_remaining", "replace_codes"]


def replace_codes(
    conn: Connection, user_id: str, *, digests: Sequence[bytes], mac_key_id: int, now: datetime
) -> None:
    """Delete the user's whole previous set and store the new one."""
    conn.execute(delete(backup_codes).where(backup_codes.c.user_id == user_id))
    conn.execute(
        insert(backup_codes),
        [
            {"user_id": user_id, "digest": d, "mac_key_id": mac_key_id, "created_at": now}
            for d in digests
        ],
    )


def consume_code(
    conn: Connection, user_id: str, *, digests: Sequence[bytes], now: datetime
) -> bool:
    """Mark the unused code with one of ``digests`` (one per MAC key version) as used.

    One conditional UPDATE: of concurrent attempts with the same code, exactly one changes a row.
    """
    result = conn.execute(
        update(backup_codes)
        .where(
            backup_codes.c.user_id == user_id,
            backup_codes.c.digest.in_(list(digests)),
            backup_codes.c.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return result.rowcount >= 1


_COUNT_REMAINING = select(func.count()).where(
    backup_codes.c.user_id == bindparam("user_id"), backup_codes.c.used_at.is_(None)
)


def count_remaining(conn: Connection, user_id: str) -> int:
    return int(conn.execute(_COUNT_REMAINING, {"user_id": user_id}).scalar_one())
