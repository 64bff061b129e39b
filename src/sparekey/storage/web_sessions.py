"""Web sessions and portal links: rows keyed by the SHA-256 of a token only the browser holds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, insert, select, update

from sparekey.storage.tables import portal_links, web_sessions

__all__ = [
    "delete_session",
    "delete_sessions_of",
    "get_session",
    "insert_link",
    "insert_session",
    "purge_expired",
    "redeem_link",
    "set_step_up",
    "touch_session",
]


def insert_link(
    conn: Connection, digest: bytes, user_id: str, *, now: datetime, expires_at: datetime
) -> None:
    conn.execute(
        insert(portal_links).values(
            token_digest=digest, user_id=user_id, created_at=now, expires_at=expires_at
        )
    )


def redeem_link(conn: Connection, digest: bytes, *, now: datetime) -> str | None:
    """Mark the link used: one conditional UPDATE, so of racing redemptions exactly one wins.
    The user id of the link, or None if it is unknown, expired or already used."""
    result = conn.execute(
        update(portal_links)
        .where(
            and_(
                portal_links.c.token_digest == digest,
                portal_links.c.used_at.is_(None),
                portal_links.c.expires_at > now,
            )
        )
        .values(used_at=now)
        .returning(portal_links.c.user_id)
    )
    row = result.first()
    return None if row is None else str(row[0])


def insert_session(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(web_sessions).values(**values))


def get_session(conn: Connection, digest: bytes, *, kind: str) -> Row[Any] | None:
    return conn.execute(
        select(web_sessions).where(
            and_(web_sessions.c.id_digest == digest, web_sessions.c.kind == kind)
        )
    ).first()


def touch_session(conn: Connection, digest: bytes, *, now: datetime, expires_at: datetime) -> bool:
    """Move a live session's deadline to ``expires_at`` (the caller takes the earlier of the idle
    and the absolute deadline); False if it had expired or is gone."""
    result = conn.execute(
        update(web_sessions)
        .where(and_(web_sessions.c.id_digest == digest, web_sessions.c.expires_at > now))
        .values(last_seen_at=now, expires_at=expires_at)
    )
    return result.rowcount == 1


def set_step_up(conn: Connection, digest: bytes, token: str, *, expires_at: datetime) -> None:
    conn.execute(
        update(web_sessions)
        .where(web_sessions.c.id_digest == digest)
        .values(step_up_token=token, step_up_expires_at=expires_at)
    )


def delete_session(conn: Connection, digest: bytes) -> str | None:
    """Delete the session; the subject it belonged to, or None if there was none."""
    result = conn.execute(
        delete(web_sessions)
        .where(web_sessions.c.id_digest == digest)
        .returning(web_sessions.c.subject)
    )
    row = result.first()
    return None if row is None else str(row[0])


def delete_sessions_of(conn: Connection, subject: str) -> int:
    """End every session of ``subject`` (its user was deleted); how many there were."""
    return conn.execute(delete(web_sessions).where(web_sessions.c.subject == subject)).rowcount


def purge_expired(conn: Connection, *, now: datetime) -> None:
    conn.execute(delete(web_sessions).where(web_sessions.c.expires_at <= now))
    conn.execute(delete(portal_links).where(portal_links.c.expires_at <= now))
