"""Rows of the ``vault_backups`` table: opaque bytes in numbered versions per user."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select

from sparekey.domain.models import VaultBackup, VaultBackupData
from sparekey.storage.tables import vault_backups

__all__ = ["insert_backup", "latest_backup", "list_backups", "prune_backups", "read_backup"]

_t = vault_backups.c
_DESCRIBED = select(
    _t.user_id, _t.version, _t.size, _t.sha256, _t.created_at, _t.device_token_id
)  # everything but the content


def _to_backup(row: Row[*tuple[Any, ...]]) -> VaultBackup:
    return VaultBackup(
        user_id=row.user_id,
        version=row.version,
        size=row.size,
        sha256=row.sha256,
        created_at=row.created_at,
        device_token_id=row.device_token_id,
    )


def latest_backup(conn: Connection, user_id: str) -> VaultBackup | None:
    row = conn.execute(
        _DESCRIBED.where(_t.user_id == user_id).order_by(_t.version.desc()).limit(1)
    ).first()
    return None if row is None else _to_backup(row)


def list_backups(conn: Connection, user_id: str) -> list[VaultBackup]:
    rows = conn.execute(_DESCRIBED.where(_t.user_id == user_id).order_by(_t.version.desc()))
    return [_to_backup(row) for row in rows]


def read_backup(conn: Connection, user_id: str, version: int | None) -> VaultBackupData | None:
    """A version with its bytes; the latest when ``version`` is None."""
    query = _DESCRIBED.add_columns(_t.content).where(_t.user_id == user_id)
    if version is None:
        query = query.order_by(_t.version.desc()).limit(1)
    else:
        query = query.where(_t.version == version)
    row = conn.execute(query).first()
    if row is None:
        return None
    return VaultBackupData(backup=_to_backup(row), content=bytes(row.content))


def insert_backup(conn: Connection, backup: VaultBackup, content: bytes) -> None:
    """Raises IntegrityError if the user has this version already (a racing upload won)."""
    conn.execute(
        insert(vault_backups).values(
            user_id=backup.user_id,
            version=backup.version,
            size=backup.size,
            sha256=backup.sha256,
            content=content,
            created_at=backup.created_at,
            device_token_id=backup.device_token_id,
        )
    )


def prune_backups(conn: Connection, user_id: str, *, older_than: int) -> list[int]:
    """Delete the user's versions below ``older_than``; the versions deleted."""
    doomed = [
        int(v)
        for v in conn.execute(
            select(_t.version).where(_t.user_id == user_id, _t.version < older_than)
        ).scalars()
    ]
    if doomed:
        conn.execute(delete(vault_backups).where(_t.user_id == user_id, _t.version < older_than))
    return sorted(doomed)
