"""Rows of the ``api_keys`` table: a keyed hash of each key's secret, never the secret."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from sparekey.domain.models import ApiKey, Scope
from sparekey.storage.tables import api_keys, operators

__all__ = ["ApiKeyRecord", "get_api_key", "insert_api_key", "list_api_keys", "revoke_api_key"]


@dataclass(frozen=True, kw_only=True)
class ApiKeyRecord:
    key: ApiKey
    digest: bytes
    mac_key_id: int


def _to_record(row: Row[Any]) -> ApiKeyRecord:
    revoked_at = row.revoked_at
    if row.operator_id is not None and revoked_at is None and row.operator_disabled_at is not None:
        revoked_at = row.operator_disabled_at  # a disabled operator's tokens stop working
    key = ApiKey(
        id=row.id,
        name=row.name,
        scopes=frozenset(Scope(s) for s in row.scopes.split(",") if s),
        created_at=row.created_at,
        revoked_at=revoked_at,
        operator_id=row.operator_id,
        operator_role=row.operator_role,
    )
    return ApiKeyRecord(key=key, digest=row.digest, mac_key_id=row.mac_key_id)


def insert_api_key(conn: Connection, record: ApiKeyRecord) -> None:
    k = record.key
    conn.execute(
        insert(api_keys).values(
            id=k.id,
            name=k.name,
            scopes=",".join(sorted(s.value for s in k.scopes)),
            digest=record.digest,
            mac_key_id=record.mac_key_id,
            created_at=k.created_at,
            revoked_at=k.revoked_at,
            operator_id=k.operator_id,
        )
    )


_WITH_OPERATOR = select(
    api_keys,
    operators.c.role.label("operator_role"),
    operators.c.disabled_at.label("operator_disabled_at"),
).select_from(api_keys.outerjoin(operators, operators.c.id == api_keys.c.operator_id))


def get_api_key(conn: Connection, key_id: str) -> ApiKeyRecord | None:
    row = conn.execute(_WITH_OPERATOR.where(api_keys.c.id == key_id)).first()
    return None if row is None else _to_record(row)


def list_api_keys(conn: Connection) -> list[ApiKeyRecord]:
    rows = conn.execute(_WITH_OPERATOR.order_by(api_keys.c.created_at, api_keys.c.id))
    return [_to_record(row) for row in rows]


def revoke_api_key(conn: Connection, key_id: str, *, now: datetime) -> bool:
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount == 1
