"""Rows of the audit tables: events, the chain's state, and signed checkpoints."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, func, insert, select, update

from sparekey.storage.prepared import Prepared, Unit, run
from sparekey.storage.tables import audit_chain, audit_checkpoints, audit_events

__all__ = [
    "Checkpoint",
    "StoredEvent",
    "chain_state",
    "checkpoints",
    "delete_checkpoints_before",
    "delete_sealed_through",
    "erase_personal",
    "first_sealed_seq",
    "insert_checkpoint",
    "insert_event",
    "prunable_checkpoint",
    "query_events",
    "seal_events",
    "sealed_events",
    "set_chain_state",
    "unsealed_events",
    "unsealed_macs",
]

_INSERT = Prepared(
    insert(audit_events).values(
        occurred_at=bindparam("occurred_at"),
        event=bindparam("event"),
        outcome=bindparam("outcome"),
        actor_type=bindparam("actor_type"),
        actor_id=bindparam("actor_id"),
        details=bindparam("details"),
        user_id=bindparam("user_id"),
        ip=bindparam("ip"),
        user_agent=bindparam("user_agent"),
        personal_digest=bindparam("personal_digest"),
        record_mac=bindparam("record_mac"),
        mac_key_id=bindparam("mac_key_id"),
    )
)


@dataclass(frozen=True, kw_only=True)
class StoredEvent:
    id: int
    occurred_at: datetime
    event: str
    outcome: str
    actor_type: str
    actor_id: str | None
    details: str
    user_id: str | None
    ip: str | None
    user_agent: str | None
    personal_digest: bytes
    record_mac: bytes
    mac_key_id: int
    seq: int | None
    chain_digest: bytes | None


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    seq: int
    chain_digest: bytes
    created_at: datetime
    signing_key_id: int
    signature: bytes


def _event(row: Row[Any]) -> StoredEvent:
    return StoredEvent(**{name: row._mapping[name] for name in StoredEvent.__dataclass_fields__})


def insert_event(target: Connection | Unit, values: dict[str, Any]) -> None:
    run(target, _INSERT, values)


def chain_state(conn: Connection, *, lock: bool) -> tuple[int, bytes]:
    """The last sealed position and digest; with ``lock``, held until the transaction ends."""
    stmt = select(audit_chain.c.last_seq, audit_chain.c.last_digest).where(audit_chain.c.id == 1)
    if lock:
        stmt = stmt.with_for_update()  # PostgreSQL row lock; SQLite's write lock already holds
    row = conn.execute(stmt).one()
    return int(row.last_seq), bytes(row.last_digest)


def set_chain_state(conn: Connection, *, last_seq: int, last_digest: bytes, now: datetime) -> None:
    conn.execute(
        update(audit_chain)
        .where(audit_chain.c.id == 1)
        .values(last_seq=last_seq, last_digest=last_digest, updated_at=now)
    )


def unsealed_events(conn: Connection, *, limit: int, after_id: int = 0) -> list[StoredEvent]:
    stmt = (
        select(audit_events)
        .where(audit_events.c.seq.is_(None), audit_events.c.id > after_id)
        .order_by(audit_events.c.id)
    )
    return [_event(row) for row in conn.execute(stmt.limit(limit))]


def unsealed_macs(conn: Connection, *, limit: int) -> list[tuple[int, bytes]]:
    """(id, record MAC) of the oldest unsealed events: all that chaining them needs."""
    stmt = (
        select(audit_events.c.id, audit_events.c.record_mac)
        .where(audit_events.c.seq.is_(None))
        .order_by(audit_events.c.id)
        .limit(limit)
    )
    return [(row.id, bytes(row.record_mac)) for row in conn.execute(stmt)]


def seal_events(conn: Connection, sealed: Sequence[tuple[int, int, bytes]]) -> None:
    """Give each (id, seq, chain digest) its place in the chain."""
    conn.execute(
        update(audit_events)
        .where(audit_events.c.id == bindparam("event_id"), audit_events.c.seq.is_(None))
        .values(seq=bindparam("new_seq"), chain_digest=bindparam("digest")),
        [{"event_id": i, "new_seq": s, "digest": d} for i, s, d in sealed],
    )


def sealed_events(conn: Connection, *, after_seq: int, batch: int = 5000) -> Iterator[StoredEvent]:
    """Every sealed event in chain order, read in batches (any number of rows)."""
    while True:
        stmt = (
            select(audit_events)
            .where(audit_events.c.seq > after_seq)
            .order_by(audit_events.c.seq)
            .limit(batch)
        )
        rows = [_event(row) for row in conn.execute(stmt)]
        yield from rows
        if len(rows) < batch:
            return
        after_seq = rows[-1].seq or after_seq


def insert_checkpoint(conn: Connection, checkpoint: Checkpoint) -> None:
    conn.execute(
        insert(audit_checkpoints).values(
            seq=checkpoint.seq,
            chain_digest=checkpoint.chain_digest,
            created_at=checkpoint.created_at,
            signing_key_id=checkpoint.signing_key_id,
            signature=checkpoint.signature,
        )
    )


def checkpoints(conn: Connection) -> list[Checkpoint]:
    rows = conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq))
    return [
        Checkpoint(
            seq=row.seq,
            chain_digest=bytes(row.chain_digest),
            created_at=row.created_at,
            signing_key_id=row.signing_key_id,
            signature=bytes(row.signature),
        )
        for row in rows
    ]


def query_events(
    conn: Connection,
    *,
    user_id: str | None,
    events: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    after_id: int | None,
    limit: int,
    oldest_first: bool = False,
) -> list[StoredEvent]:
    """Events matching every given filter, newest first (or oldest first), past ``after_id``."""
    order = audit_events.c.id if oldest_first else audit_events.c.id.desc()
    stmt = select(audit_events).order_by(order).limit(limit)
    if user_id is not None:
        stmt = stmt.where(audit_events.c.user_id == user_id)
    if events:
        stmt = stmt.where(audit_events.c.event.in_(list(events)))
    if since is not None:
        stmt = stmt.where(audit_events.c.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(audit_events.c.occurred_at < until)
    if after_id is not None:
        past = audit_events.c.id > after_id if oldest_first else audit_events.c.id < after_id
        stmt = stmt.where(past)
    return [_event(row) for row in conn.execute(stmt)]


def erase_personal(conn: Connection, user_id: str) -> int:
    """Blank the personal fields of the user's records; their keyed digest stays in the chain."""
    result = conn.execute(
        update(audit_events)
        .where(audit_events.c.user_id == user_id)
        .values(user_id=None, ip=None, user_agent=None)
    )
    return result.rowcount


def first_sealed_seq(conn: Connection) -> int | None:
    return conn.execute(select(func.min(audit_events.c.seq))).scalar_one_or_none()


def prunable_checkpoint(conn: Connection, *, before: datetime) -> int | None:
    """The newest checkpoint whose records all occurred before ``before``."""
    newest_old = select(func.max(audit_events.c.seq)).where(audit_events.c.occurred_at < before)
    first_new = select(func.min(audit_events.c.seq)).where(audit_events.c.occurred_at >= before)
    limit = conn.execute(first_new).scalar_one_or_none()
    ceiling = conn.execute(newest_old).scalar_one_or_none()
    if ceiling is None:
        return None
    if limit is not None:
        ceiling = min(ceiling, limit - 1)
    stmt = select(func.max(audit_checkpoints.c.seq)).where(audit_checkpoints.c.seq <= ceiling)
    return conn.execute(stmt).scalar_one_or_none()


def delete_sealed_through(conn: Connection, seq: int, *, batch: int) -> int:
    """Delete up to ``batch`` of the oldest sealed records with a seq at most ``seq``."""
    oldest = (
        select(audit_events.c.id)
        .where(audit_events.c.seq <= seq)
        .order_by(audit_events.c.seq)
        .limit(batch)
        .scalar_subquery()
    )
    return conn.execute(delete(audit_events).where(audit_events.c.id.in_(oldest))).rowcount


def delete_checkpoints_before(conn: Connection, seq: int) -> int:
    stmt = delete(audit_checkpoints).where(audit_checkpoints.c.seq < seq)
    return conn.execute(stmt).rowcount
