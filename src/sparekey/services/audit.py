"""The audit log: every security event, written in the transaction of the change it records.

Tamper evidence, in three layers (docs/decisions/0006-audit-sealing.md):

1. **Record MAC.** When a service records an event it computes, with the keyring's MAC key, a keyed
   digest of the personal fields (user id, IP, user agent) and a keyed MAC of the whole record (the
   personal fields by that digest). Without the key, no one can forge or edit a record unnoticed;
   erasing a user's personal data keeps both digests, so the record still verifies.
2. **Hash chain.** A sealer, moments later, gives unsealed records consecutive ``seq`` numbers in
   the order it sees them committed, and
   ``chain_digest = SHA-256(previous digest, seq, record MAC)``.
   Inserting in the verifying transaction and chaining afterwards means verifications on different
   nodes never wait for each other on the chain. The sealer runs every second inside
   ``sparekey serve``; until sealed, a record is covered by its own MAC only.
3. **Signed checkpoints.** Each sealing round signs (last seq, last digest) with the keyring's
   Ed25519 key, so deleting records from the end of the chain, or rebuilding it, is detected too.

:meth:`Auditor.verify` checks all three and names the first bad record.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from sqlalchemy import Connection

from sparekey.crypto.keyring import Keyring
from sparekey.domain.errors import ConflictError
from sparekey.domain.models import AuditRecord, Caller
from sparekey.domain.ports import Clock
from sparekey.services.notifications import Outbox
from sparekey.storage import audit as repo
from sparekey.storage import users as users_repo
from sparekey.storage.audit import Checkpoint, StoredEvent
from sparekey.storage.database import Database
from sparekey.storage.prepared import Unit

__all__ = [
    "AuditEntry",
    "AuditPage",
    "Auditor",
    "ChainReport",
    "PruneResult",
    "SealResult",
    "Sealer",
]

log = logging.getLogger("sparekey.audit")

_GENESIS = bytes(32)
_PERSONAL = "audit-personal"
_RECORD = "audit-record"


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """What a service records: the event, its outcome, whose account, and non-personal details."""

    event: str
    outcome: str = "success"
    user_id: str | None = None
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SealResult:
    sealed: int
    last_seq: int


@dataclass(frozen=True, kw_only=True)
class PruneResult:
    deleted: int
    anchor_seq: int | None


@dataclass(frozen=True, kw_only=True)
class ChainReport:
    ok: bool
    sealed: int
    unsealed: int
    checkpoints: int
    problem: str | None = None
    bad_record_id: int | None = None


@dataclass(frozen=True, kw_only=True)
class AuditPage:
    records: list[AuditRecord]
    next_cursor: int | None


def personal_bytes(user_id: str | None, ip: str | None, user_agent: str | None) -> bytes:
    return json.dumps([user_id, ip, user_agent]).encode()


def record_bytes(
    *,
    occurred_at: datetime,
    event: str,
    outcome: str,
    actor_type: str,
    actor_id: str | None,
    details: str,
    personal_digest: bytes,
    mac_key_id: int,
) -> bytes:
    fields = [1, occurred_at.isoformat(), event, outcome, actor_type, actor_id, details]
    return json.dumps([*fields, personal_digest.hex(), mac_key_id]).encode()


def chain_digest(previous: bytes, seq: int, record_mac: bytes) -> bytes:
    return hashlib.sha256(
        b"sparekey-audit-chain-v1" + previous + seq.to_bytes(8, "big") + record_mac
    ).digest()


def checkpoint_message(seq: int, digest: bytes) -> bytes:
    return b"sparekey-audit-checkpoint-v1" + seq.to_bytes(8, "big") + digest


class Auditor:
    """Records events; those that concern the user also go to the notification outbox, in the
    same transaction (``outbox.enqueue`` ignores the others)."""

    def __init__(
        self, *, db: Database, keyring: Keyring, clock: Clock, outbox: Outbox | None = None
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._outbox = outbox
        self._listeners: list[Callable[[str, str], None]] = []

    def listen(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(event, outcome)`` for every record written from now on (metrics): at
        once, or for a record written through a :class:`Unit`, once that unit has committed."""
        self._listeners.append(listener)

    # -- writing --------------------------------------------------------------------------------

    def record(self, target: Connection | Unit, entry: AuditEntry, caller: Caller) -> None:
        """Insert ``entry`` through ``target``: inside the transaction of the change it records."""
        now = self._clock.now()
        details = json.dumps(dict(entry.details), sort_keys=True, separators=(",", ":"))
        key_id, personal = self._keyring.mac(
            _PERSONAL, personal_bytes(entry.user_id, caller.ip, caller.user_agent)
        )
        record_mac = self._keyring.mac_with(
            key_id,
            _RECORD,
            record_bytes(
                occurred_at=now,
                event=entry.event,
                outcome=entry.outcome,
                actor_type=caller.type,
                actor_id=caller.id,
                details=details,
                personal_digest=personal,
                mac_key_id=key_id,
            ),
        )
        repo.insert_event(
            target,
            {
                "occurred_at": now,
                "event": entry.event,
                "outcome": entry.outcome,
                "actor_type": caller.type,
                "actor_id": caller.id,
                "details": details,
                "user_id": entry.user_id,
                "ip": caller.ip,
                "user_agent": caller.user_agent,
                "personal_digest": personal,
                "record_mac": record_mac,
                "mac_key_id": key_id,
            },
        )
        if self._outbox is not None:
            self._outbox.enqueue(
                target, event=entry.event, user_id=entry.user_id, details=entry.details, now=now
            )
        if self._listeners:
            counted = functools.partial(self._tell, entry.event, entry.outcome)
            if isinstance(target, Unit):
                target.after_commit(counted)  # a batch rolled back and redone counts once
            else:
                counted()

    def _tell(self, event: str, outcome: str) -> None:
        for listener in self._listeners:
            listener(event, outcome)

    def seal(self, *, limit: int = 5000) -> SealResult:
        """Chain the records committed since the last round, then sign where the chain ends."""
        with self._db.write() as conn:
            last_seq, digest = repo.chain_state(conn, lock=True)
            pending = repo.unsealed_macs(conn, limit=limit)
            if not pending:
                return SealResult(sealed=0, last_seq=last_seq)
            sealed = []
            for event_id, record_mac in pending:
                last_seq += 1
                digest = chain_digest(digest, last_seq, record_mac)
                sealed.append((event_id, last_seq, digest))
            repo.seal_events(conn, sealed)
            now = self._clock.now()
            repo.set_chain_state(conn, last_seq=last_seq, last_digest=digest, now=now)
            key_id, signature = self._keyring.sign(checkpoint_message(last_seq, digest))
            repo.insert_checkpoint(
                conn,
                Checkpoint(
                    seq=last_seq,
                    chain_digest=digest,
                    created_at=now,
                    signing_key_id=key_id,
                    signature=signature,
                ),
            )
        return SealResult(sealed=len(sealed), last_seq=last_seq)

    def seal_all(self) -> int:
        total = 0
        while sealed := self.seal().sealed:
            total += sealed
        return total

    def erase_user(self, user_id: str, *, caller: Caller) -> int:
        """Blank a deleted user's personal fields in the audit log; the chain still verifies."""
        with self._db.write() as conn:
            if users_repo.user_exists(conn, user_id):
                raise ConflictError("delete the user before erasing their personal data")
            erased = repo.erase_personal(conn, user_id)
            entry = AuditEntry(event="user.erased", details={"records": erased})
            self.record(conn, entry, caller)
        return erased

    def prune(self, *, before: datetime, batch: int = 10_000) -> PruneResult:
        """Delete sealed records older than ``before`` in batches, up to a signed checkpoint that
        anchors what remains (archive them first with :meth:`export`)."""
        self.seal_all()
        with self._db.read() as conn:
            anchor = repo.prunable_checkpoint(conn, before=before)
        if anchor is None:
            return PruneResult(deleted=0, anchor_seq=None)
        deleted = 0
        while True:
            with self._db.write() as conn:
                removed = repo.delete_sealed_through(conn, anchor, batch=batch)
            deleted += removed
            if removed < batch:
                break
        with self._db.write() as conn:
            repo.delete_checkpoints_before(conn, anchor)
        return PruneResult(deleted=deleted, anchor_seq=anchor)

    # -- checking -------------------------------------------------------------------------------

    def _record_problem(self, event: StoredEvent) -> str | None:
        """Why this record does not verify on its own, or None."""
        if (event.user_id, event.ip, event.user_agent) != (None, None, None):
            personal = self._keyring.mac_with(
                event.mac_key_id,
                _PERSONAL,
                personal_bytes(event.user_id, event.ip, event.user_agent),
            )
            if not hmac.compare_digest(personal, event.personal_digest):
                return "its user, IP or user agent was changed"
        expected = self._keyring.mac_with(
            event.mac_key_id,
            _RECORD,
            record_bytes(
                occurred_at=event.occurred_at,
                event=event.event,
                outcome=event.outcome,
                actor_type=event.actor_type,
                actor_id=event.actor_id,
                details=event.details,
                personal_digest=event.personal_digest,
                mac_key_id=event.mac_key_id,
            ),
        )
        if not hmac.compare_digest(expected, event.record_mac):
            return "it was changed or forged"
        return None

    def verify(self) -> ChainReport:
        """Check every record, the chain's order and completeness, and every checkpoint, all as
        of one moment (a round sealed meanwhile is not a gap between the chain and its end)."""
        with self._db.snapshot() as conn:
            last_seq, last_digest = repo.chain_state(conn, lock=False)
            checkpoints = {c.seq: c for c in repo.checkpoints(conn)}
            expected, previous = 1, _GENESIS
            first = repo.first_sealed_seq(conn)
            if first is not None and first > 1:  # pruned: a signed checkpoint anchors the start
                anchor = checkpoints.get(first - 1)
                if anchor is None or not self._checkpoint_holds(anchor, anchor.chain_digest):
                    return ChainReport(
                        ok=False,
                        sealed=0,
                        unsealed=0,
                        checkpoints=len(checkpoints),
                        problem=f"records before seq {first} are gone and no signed checkpoint "
                        "anchors the start",
                    )
                expected, previous = first, anchor.chain_digest

            start = expected

            def bad(event: StoredEvent | None, problem: str) -> ChainReport:
                return ChainReport(
                    ok=False,
                    sealed=expected - start,
                    unsealed=0,
                    checkpoints=len(checkpoints),
                    problem=problem,
                    bad_record_id=event.id if event else None,
                )

            for event in repo.sealed_events(conn, after_seq=expected - 1):
                where = f"record {event.id} (seq {event.seq})"
                if event.seq != expected:
                    return bad(event, f"{where}: seq {expected} is missing before it (deleted?)")
                if problem := self._record_problem(event):
                    return bad(event, f"{where}: {problem}")
                digest = chain_digest(previous, expected, event.record_mac)
                if event.chain_digest is None or not hmac.compare_digest(
                    digest, event.chain_digest
                ):
                    return bad(event, f"{where}: not the record sealed here (inserted or moved)")
                if (point := checkpoints.get(expected)) and not self._checkpoint_holds(
                    point, digest
                ):
                    return bad(event, f"{where}: the signed checkpoint at seq {expected} differs")
                previous, expected = digest, expected + 1
            count = expected - 1
            if count != last_seq or previous != last_digest:
                return bad(None, f"the chain ends at seq {count} but was sealed to seq {last_seq}")
            if beyond := [s for s in checkpoints if s > count]:
                return bad(None, f"records after seq {count} are gone (checkpoint at {beyond[0]})")
            count = expected - start
            unsealed = 0
            for event in self._unsealed(conn):
                unsealed += 1
                if problem := self._record_problem(event):
                    return bad(event, f"unsealed record {event.id}: {problem}")
        return ChainReport(ok=True, sealed=count, unsealed=unsealed, checkpoints=len(checkpoints))

    def _checkpoint_holds(self, point: Checkpoint, digest: bytes) -> bool:
        if not hmac.compare_digest(point.chain_digest, digest):
            return False
        try:
            self._keyring.public_key(point.signing_key_id).verify(
                point.signature, checkpoint_message(point.seq, point.chain_digest)
            )
        except InvalidSignature:
            return False
        return True

    @staticmethod
    def _unsealed(conn: Connection) -> Iterator[StoredEvent]:
        after = 0
        while batch := repo.unsealed_events(conn, limit=5000, after_id=after):
            yield from batch
            after = batch[-1].id

    # -- reading --------------------------------------------------------------------------------

    def query(
        self,
        *,
        user_id: str | None = None,
        events: tuple[str, ...] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: int | None = None,
        limit: int = 100,
        oldest_first: bool = False,
    ) -> AuditPage:
        with self._db.read() as conn:
            found = repo.query_events(
                conn,
                user_id=user_id,
                events=events,
                since=since,
                until=until,
                after_id=cursor,
                limit=limit + 1,
                oldest_first=oldest_first,
            )
        page, more = found[:limit], len(found) > limit
        return AuditPage(
            records=[_to_record(e) for e in page], next_cursor=page[-1].id if more else None
        )

    def export(
        self,
        *,
        user_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[AuditRecord]:
        """Every matching record, oldest first, read page by page."""
        cursor = None
        while True:
            page = self.query(
                user_id=user_id,
                since=since,
                until=until,
                cursor=cursor,
                limit=1000,
                oldest_first=True,
            )
            yield from page.records
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


def _to_record(event: StoredEvent) -> AuditRecord:
    details = json.loads(event.details)
    return AuditRecord(
        id=event.id,
        occurred_at=event.occurred_at,
        event=event.event,
        outcome=event.outcome,
        actor_type=event.actor_type,
        actor_id=event.actor_id,
        user_id=event.user_id,
        ip=event.ip,
        user_agent=event.user_agent,
        details=details if isinstance(details, dict) else {},
        seq=event.seq,
    )


class Sealer:
    """Seals the audit log every ``interval`` seconds in a background thread (``sparekey serve``).

    Sealing takes a lock on the chain's state row, so any number of nodes may run one: each round
    seals what the others have not.
    """

    def __init__(self, auditor: Auditor, *, interval: float) -> None:
        self._auditor = auditor
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._seal()  # what came in since the last round

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._seal()

    def _seal(self) -> None:
        try:
            self._auditor.seal_all()
        except Exception:  # the next round retries; a server must not stop over it
            log.exception("sealing the audit log failed")
