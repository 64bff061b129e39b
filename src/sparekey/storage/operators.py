"""Rows of the ``operators`` table: the people who run recovery."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from sparekey.domain.models import Operator, OperatorRole
from sparekey.storage.tables import operators

__all__ = [
    "disable_operator",
    "get_operator",
    "get_operator_by_name",
    "get_operator_by_user",
    "get_password_hash",
    "insert_operator",
    "list_operators",
    "set_password_hash",
]


def _to_operator(row: Row[Any]) -> Operator:
    return Operator(
        id=row.id,
        name=row.name,
        role=OperatorRole(row.role),
        user_id=row.user_id,
        created_at=row.created_at,
        disabled_at=row.disabled_at,
    )


def insert_operator(conn: Connection, operator: Operator) -> None:
    conn.execute(
        insert(operators).values(
            id=operator.id,
            name=operator.name,
            role=operator.role.value,
            user_id=operator.user_id,
            created_at=operator.created_at,
            disabled_at=operator.disabled_at,
        )
    )


def get_operator(conn: Connection, operator_id: str) -> Operator | None:
    row = conn.execute(select(operators).where(operators.c.id == operator_id)).first()
    return None if row is None else _to_operator(row)


def get_operator_by_name(conn: Connection, name: str) -> Operator | None:
    row = conn.execute(select(operators).where(operators.c.name == name)).first()
    return None if row is None else _to_operator(row)


def list_operators(conn: Connection) -> list[Operator]:
    rows = conn.execute(select(operators).order_by(operators.c.created_at, operators.c.name))
    return [_to_operator(row) for row in rows]


def disable_operator(conn: Connection, operator_id: str, *, now: datetime) -> bool:
    result = conn.execute(
        update(operators)
        .where(operators.c.id == operator_id, operators.c.disabled_at.is_(None))
        .values(disabled_at=now)
    )
    return result.rowcount == 1


def get_operator_by_user(conn: Connection, user_id: str) -> Operator | None:
    row = conn.execute(select(operators).where(operators.c.user_id == user_id)).first()
    return None if row is None else _to_operator(row)


def get_password_hash(conn: Connection, operator_id: str) -> str | None:
    found: str | None = conn.execute(
        select(operators.c.password_hash).where(operators.c.id == operator_id)
    ).scalar_one_or_none()
    return found


def set_password_hash(conn: Connection, operator_id: str, password_hash: str) -> bool:
    result = conn.execute(
        update(operators).where(operators.c.id == operator_id).values(password_hash=password_hash)
    )
    return result.rowcount == 1
