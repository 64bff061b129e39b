"""Rows of the ``outbox`` table: notifications written with their change, claimed under a lease.

A worker claims due rows with one statement that sets their lease (``locked_until``) and counts the
attempt. On PostgreSQL its CTE takes the rows ``FOR UPDATE SKIP LOCKED``, so two workers on two
nodes claim disjoint rows without waiting for each other; on SQLite the write transaction's
``BEGIN IMMEDIATE`` serializes claims. A row whose lease has not run out is claimed by no one.

A row is settled once delivered or given up (``next_attempt_at`` is then NULL); settled rows
written before the retention cut-off are deleted oldest first (:func:`prune_settled`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from sparekey.storage.prepared import Prepared, Unit, run
from sparekey.storage.tables import outbox, users

__all__ = [
    "OutboxMessage",
    "Pruned",
    "claim_due",
    "insert_message",
    "mark_delivered",
    "mark_failed",
    "messages",
    "prune_settled",
    "release",
    "schedule_retry",
    "user_email",
]

_USER_EMAIL = Prepared(select(users.c.email).where(users.c.id == bindparam("user_id")))

_INSERT = Prepared(
    insert(outbox).values(
        event_id=bindparam("event_id"),
        event=bindparam("event"),
        channel=bindparam("channel"),
        recipient=bindparam("recipient"),
        payload=bindparam("payload"),
        created_at=bindparam("created_at"),
        attempts=0,
        next_attempt_at=bindparam("created_at"),
    )
)


@dataclass(frozen=True, kw_only=True)
class OutboxMessage:
    id: int
    event_id: str
    event: str
    channel: str
    recipient: str | None
    payload: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None
    last_error: str | None
    locked_until: datetime | None


def _message(row: Row[Any]) -> OutboxMessage:
    return OutboxMessage(
        **{name: row._mapping[name] for name in OutboxMessage.__dataclass_fields__}
    )


def user_email(target: Connection | Unit, user_id: str) -> str | None:
    """The user's contact address as this transaction sees it (None without one, or no user)."""
    row = run(target, _USER_EMAIL, {"user_id": user_id}).fetchone()
    return None if row is None else row[0]


def insert_message(
    target: Connection | Unit,
    *,
    event_id: str,
    event: str,
    channel: str,
    recipient: str | None,
    payload: str,
    now: datetime,
) -> None:
    """A new row, due at once."""
    values = {
        "event_id": event_id,
        "event": event,
        "channel": channel,
        "recipient": recipient,
        "payload": payload,
        "created_at": now,
    }
    run(target, _INSERT, values)


def claim_due(
    conn: Connection,
    *,
    channels: Collection[str],
    now: datetime,
    lease_until: datetime,
    limit: int,
) -> list[OutboxMessage]:
    """Lease up to ``limit`` due rows of ``channels`` until ``lease_until``, counting an attempt
    on each; oldest due first. Run it in a write transaction and commit before delivering."""
    claimable = (
        outbox.c.next_attempt_at <= now,
        or_(outbox.c.locked_until.is_(None), outbox.c.locked_until <= now),
        outbox.c.channel.in_(list(channels)),
    )
    # A CTE, evaluated once: as a plain IN (subquery), PostgreSQL may run the subquery again for
    # every row it updates, each time skipping the rows it just locked, and claim far past limit.
    due = (
        select(outbox.c.id)
        .where(*claimable)
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    stmt = (
        update(outbox)
        .where(outbox.c.id.in_(select(due.c.id)))
        .values(locked_until=lease_until, attempts=outbox.c.attempts + 1)
        .returning(*outbox.c)
    )
    claimed = [_message(row) for row in conn.execute(stmt)]
    return sorted(claimed, key=lambda m: (m.next_attempt_at or now, m.id))


def _still_held(lease_until: datetime) -> ColumnElement[bool]:
    """This worker's lease on the row has not been taken over, and the row is not delivered."""
    return and_(outbox.c.locked_until == lease_until, outbox.c.delivered_at.is_(None))


def mark_delivered(conn: Connection, message_id: int, *, now: datetime) -> None:
    """Delivered: nothing left to do. Recorded even if the lease ran out meanwhile (the message
    went out; a worker that took the row over may send it once more, which receivers tolerate)."""
    conn.execute(
        update(outbox)
        .where(outbox.c.id == message_id, outbox.c.delivered_at.is_(None))
        .values(
            delivered_at=now,
            next_attempt_at=None,
            failed_at=None,
            locked_until=None,
            last_error=None,
        )
    )


def schedule_retry(
    conn: Connection,
    message_id: int,
    *,
    lease_until: datetime,
    next_attempt_at: datetime,
    error: str,
) -> bool:
    """Try again at ``next_attempt_at``, if this worker still holds the row's lease."""
    result = conn.execute(
        update(outbox)
        .where(outbox.c.id == message_id, _still_held(lease_until))
        .values(next_attempt_at=next_attempt_at, last_error=error, locked_until=None)
    )
    return result.rowcount == 1


def mark_failed(
    conn: Connection, message_id: int, *, lease_until: datetime, now: datetime, error: str
) -> bool:
    """Give up on the row (it stays, with its last error), if this worker still holds its lease."""
    result = conn.execute(
        update(outbox)
        .where(outbox.c.id == message_id, _still_held(lease_until))
        .values(failed_at=now, next_attempt_at=None, last_error=error, locked_until=None)
    )
    return result.rowcount == 1


def release(conn: Connection, message_ids: Sequence[int], *, lease_until: datetime) -> None:
    """Hand back rows claimed but not attempted (the worker is stopping, or its lease is running
    out), without counting the attempt: any worker may claim them at once."""
    if not message_ids:
        return
    conn.execute(
        update(outbox)
        .where(outbox.c.id.in_(list(message_ids)), _still_held(lease_until))
        .values(locked_until=None, attempts=outbox.c.attempts - 1)
    )


def messages(conn: Connection, *, event_id: str | None = None) -> list[OutboxMessage]:
    """Every row (or one event's rows), in the order they were written."""
    stmt = select(outbox).order_by(outbox.c.id)
    if event_id is not None:
        stmt = stmt.where(outbox.c.event_id == event_id)
    return [_message(row) for row in conn.execute(stmt)]


@dataclass(frozen=True, kw_only=True)
class Pruned:
    deleted: int
    last_id: int  # the batch looked at rows up to this id; the next one starts after it
    done: bool  # no settled row written before the cut-off is left past ``last_id``


def prune_settled(conn: Connection, *, before: datetime, after_id: int, limit: int) -> Pruned:
    """Delete the settled rows (delivered, or given up) written before ``before`` among the
    ``limit`` oldest rows after ``after_id``.

    Rows are read in the order they were written (the primary key's), so no index on the times
    is needed and no pass reads more than one batch past the cut-off: the first row written
    after it ends the pruning. A row still pending is left, whatever its age, and looked past.
    """
    head = conn.execute(
        select(outbox.c.id, outbox.c.created_at, outbox.c.next_attempt_at)
        .where(outbox.c.id > after_id)
        .order_by(outbox.c.id)
        .limit(limit)
    ).all()
    done = len(head) < limit
    last_id, expired = after_id, []
    for row_id, created_at, next_attempt_at in head:
        if created_at >= before:
            done = True
            break
        last_id = row_id
        if next_attempt_at is None:
            expired.append(row_id)
    deleted = 0
    if expired:
        result = conn.execute(
            delete(outbox).where(outbox.c.id.in_(expired), outbox.c.next_attempt_at.is_(None))
        )
        deleted = result.rowcount
    return Pruned(deleted=deleted, last_id=last_id, done=done)
