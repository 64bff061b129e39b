"""Rows of the ``users`` table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, insert, or_, select, update

from sparekey.domain.models import ThrottleState, User
from sparekey.storage.prepared import Prepared, Unit, run
from sparekey.storage.tables import users

__all__ = ["delete_user", "get_user", "insert_user", "search_users", "update_user", "user_exists"]


def _to_user(row: Row[Any]) -> User:
    return User(
        id=row.id,
        display_name=row.display_name,
        email=row.email,
        created_at=row.created_at,
        updated_at=row.updated_at,
        throttle=ThrottleState(
            failures=row.otp_failures,
            locked_until=row.otp_locked_until,
            suspended_at=row.otp_suspended_at,
        ),
    )


def get_user(conn: Connection, user_id: str) -> User | None:
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    return None if row is None else _to_user(row)


_USER_EXISTS = Prepared(select(users.c.id).where(users.c.id == bindparam("user_id")))


def user_exists(target: Connection | Unit, user_id: str) -> bool:
    return run(target, _USER_EXISTS, {"user_id": user_id}).fetchone() is not None


def insert_user(conn: Connection, user: User) -> None:
    conn.execute(
        insert(users).values(
            id=user.id,
            display_name=user.display_name,
            email=user.email,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )
    )


def update_user(conn: Connection, user_id: str, *, now: datetime, **fields: str | None) -> bool:
    result = conn.execute(
        update(users).where(users.c.id == user_id).values(updated_at=now, **fields)
    )
    return result.rowcount == 1


def delete_user(conn: Connection, user_id: str) -> bool:
    return conn.execute(delete(users).where(users.c.id == user_id)).rowcount == 1


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_users(conn: Connection, *, query: str, after: str | None, limit: int) -> list[User]:
    """Users whose id, name or email contains ``query`` (any case), in id order after ``after``."""
    stmt = select(users).order_by(users.c.id).limit(limit)
    if query:
        pattern = f"%{_escape_like(query)}%"
        stmt = stmt.where(
            or_(
                users.c.id.ilike(pattern, escape="\\"),
                users.c.display_name.ilike(pattern, escape="\\"),
                users.c.email.ilike(pattern, escape="\\"),
            )
        )
    if after is not None:
        stmt = stmt.where(users.c.id > after)
    return [_to_user(row) for row in conn.execute(stmt)]
