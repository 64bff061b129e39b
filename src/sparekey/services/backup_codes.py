"""Backup codes: a set of single-use look-up secrets, stored as keyed hashes only.

The hash is HMAC-SHA-256 under the keyring's MAC key (80-bit codes need no slow hash: the key
makes an offline search impossible without it). Every record keeps the MAC key id it was made with;
a code is looked up under every MAC key the keyring knows, so rotation never invalidates a set.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from sparekey.crypto.keyring import Keyring
from sparekey.domain.errors import UserNotFoundError
from sparekey.domain.models import SYSTEM, BackupCodeSet, Caller
from sparekey.domain.ports import Clock
from sparekey.protocols import backup_codes as codes
from sparekey.services.assurance import NO_ASSURANCE, Assurance, AssuranceService, Operation
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.storage import backup_codes as repo
from sparekey.storage import users as users_repo
from sparekey.storage.database import Database, Unit

__all__ = ["BackupCodeService"]

_LABEL = "backup-code"


class BackupCodeService:
    def __init__(
        self,
        *,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        count: int,
        auditor: Auditor,
        assurance: AssuranceService,
    ) -> None:
        self._assurance = assurance
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._count = count
        self._auditor = auditor

    def regenerate(
        self,
        user_id: str,
        *,
        caller: Caller = SYSTEM,
        assurance: Assurance = NO_ASSURANCE,
        conn: Connection | None = None,
    ) -> BackupCodeSet:
        """A new set, replacing the whole previous one. The codes are returned here only.

        A user with an active factor must step up first (``assurance``; not an enroll token).
        With ``conn``, the set is replaced inside the caller's transaction, and the caller
        stands for the authorization (a completed recovery case): no step-up is asked."""
        now = self._clock.now()
        fresh = sorted({codes.generate() for _ in range(self._count)})
        while len(fresh) < self._count:  # a collision in 80 bits: keep the set full anyway
            fresh = sorted(set(fresh) | {codes.generate()})
        key_id = 0
        digests = []
        for code in fresh:
            key_id, digest = self._keyring.mac(_LABEL, code.encode("ascii"))
            digests.append(digest)
        if conn is not None:
            self._replace(conn, user_id, digests, key_id=key_id, now=now, caller=caller)
        else:
            with self._db.write() as own:
                if not users_repo.user_exists(own, user_id):
                    raise UserNotFoundError(user_id)
                self._assurance.require(
                    own,
                    user_id,
                    operation=Operation.REGENERATE_BACKUP_CODES,
                    assurance=assurance,
                    caller=caller,
                )
                self._replace(own, user_id, digests, key_id=key_id, now=now, caller=caller)
        return BackupCodeSet(codes=[codes.format_code(c) for c in fresh], created_at=now)

    def _replace(
        self,
        conn: Connection,
        user_id: str,
        digests: list[bytes],
        *,
        key_id: int,
        now: datetime,
        caller: Caller,
    ) -> None:
        if not users_repo.user_exists(conn, user_id):
            raise UserNotFoundError(user_id)
        repo.replace_codes(conn, user_id, digests=digests, mac_key_id=key_id, now=now)
        entry = AuditEntry(
            event="backup_codes.generated", user_id=user_id, details={"count": len(digests)}
        )
        self._auditor.record(conn, entry, caller)

    def consume(self, unit: Unit, user_id: str, canonical: str) -> int | None:
        """Spend the code inside the caller's transaction; returns how many remain, or None."""
        digests = self.digests(canonical)
        if not repo.consume_code(unit.write(), user_id, digests=digests, now=self._clock.now()):
            return None
        return repo.count_remaining(unit, user_id)

    def digests(self, canonical: str) -> list[bytes]:
        """The keyed hash of a canonical code under every MAC key the keyring knows."""
        return [
            self._keyring.mac_with(key_id, _LABEL, canonical.encode("ascii"))
            for key_id in self._keyring.mac_key_ids()
        ]
