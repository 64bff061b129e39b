"""Backups of the desktop authenticator's vault: opaque bytes in numbered versions per user.

The desktop encrypts the vault before it leaves the computer; the server stores the bytes as they
come, with their size and SHA-256, and never holds (or is sent) a key. It keeps the newest
``keep`` versions of each user.

Writes are conditional (RFC 9110 §13.1): a new version is stored only if the latest is still the
one the uploader names (``If-Match``), or, for the first one, if there is none (``If-None-Match:
*``). The condition is checked and the next version inserted in one transaction, under the
primary key (user_id, version): of two uploads racing from the same latest, on any nodes, one
inserts and the other's insert fails and is refused as a failed precondition
(docs/decisions/0014-device-tokens-and-vault-backups.md). Each stored version is audited as
``vault_backup.stored`` (version, size, SHA-256, device token; never the content) in that
transaction, which also deletes the versions beyond ``keep``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from sqlalchemy.exc import IntegrityError

from sparekey.domain.errors import (
    AuthenticationError,
    InvalidInputError,
    PreconditionFailedError,
    PreconditionRequiredError,
    UserNotFoundError,
    VaultBackupNotFoundError,
    VaultBackupTooLargeError,
)
from sparekey.domain.models import Caller, DeviceToken, VaultBackup, VaultBackupData
from sparekey.domain.ports import Clock
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.storage import device_tokens as tokens_repo
from sparekey.storage import users as users_repo
from sparekey.storage import vault_backups as repo
from sparekey.storage.database import Database

__all__ = ["Precondition", "VaultBackupService"]


@dataclass(frozen=True, kw_only=True)
class Precondition:
    """The conditions of a conditional write, as the request stated them (RFC 9110 §13.1.1,
    §13.1.2). Entity tags are compared as given, quotes included."""

    if_match: tuple[str, ...] = ()
    if_match_any: bool = False  # If-Match: *
    if_none_match: tuple[str, ...] = ()
    if_none_match_any: bool = False  # If-None-Match: *

    @property
    def given(self) -> bool:
        """Whether the write names what it replaces: the latest's ETag (or ``*``), or ``*`` in
        If-None-Match for a first version. If-None-Match with tags alone names nothing."""
        return bool(self.if_match) or self.if_match_any or self.if_none_match_any

    def holds(self, current: str | None) -> bool:
        """RFC 9110 §13.2.2: If-Match first (strong comparison), then If-None-Match (weak)."""
        if self.if_match_any and current is None:
            return False
        if self.if_match and (current is None or current not in self.if_match):
            return False
        if self.if_none_match_any and current is not None:
            return False
        weak = {tag.removeprefix("W/") for tag in self.if_none_match}
        return current is None or current not in weak


class VaultBackupService:
    def __init__(
        self, *, db: Database, clock: Clock, auditor: Auditor, max_bytes: int, keep: int
    ) -> None:
        if max_bytes < 1 or keep < 1:
            raise ValueError("vault backups need a positive size limit and keep at least one")
        self._db = db
        self._clock = clock
        self._auditor = auditor
        self._max_bytes = max_bytes
        self._keep = keep

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def too_large(self) -> VaultBackupTooLargeError:
        return VaultBackupTooLargeError(
            f"a vault backup may hold at most {self._max_bytes} bytes", limit=self._max_bytes
        )

    def store(
        self,
        user_id: str,
        content: bytes,
        *,
        device_token: DeviceToken,
        precondition: Precondition,
        caller: Caller,
    ) -> VaultBackup:
        """Store ``content`` as the user's next version if ``precondition`` holds for the latest;
        the versions beyond ``keep`` are deleted in the same transaction."""
        if not precondition.given:
            raise PreconditionRequiredError(
                "send If-Match with the ETag of the latest backup, or If-None-Match: * for the "
                "first one, so that a backup from another computer is never overwritten unseen"
            )
        if not content:
            raise InvalidInputError("a vault backup holds at least one byte", field="body")
        if len(content) > self._max_bytes:
            raise self.too_large()
        backup = VaultBackup(
            user_id=user_id,
            version=0,
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            created_at=self._clock.now(),
            device_token_id=device_token.id,
        )
        try:
            with self._db.write() as conn:
                if not tokens_repo.is_live(conn, device_token.id, user_id):
                    raise AuthenticationError("the device token was revoked")
                current = repo.latest_backup(conn, user_id)
                current_etag = current.etag if current is not None else None
                if not precondition.holds(current_etag):
                    raise _failed(current_etag)
                backup = replace(backup, version=current.version + 1 if current else 1)
                repo.insert_backup(conn, backup, content)
                pruned = repo.prune_backups(
                    conn, user_id, older_than=backup.version - self._keep + 1
                )
                details: dict[str, object] = {
                    "version": backup.version,
                    "size": backup.size,
                    "sha256": backup.sha256,
                    "device_token_id": device_token.id,
                }
                if pruned:
                    details["pruned"] = pruned
                entry = AuditEntry(event="vault_backup.stored", user_id=user_id, details=details)
                self._auditor.record(conn, entry, caller)
        except IntegrityError:
            # Another upload inserted this version first (the writers did not queue: PostgreSQL),
            # or the user was deleted meanwhile.
            with self._db.read() as conn:
                if not users_repo.user_exists(conn, user_id):
                    raise UserNotFoundError(user_id) from None
                current = repo.latest_backup(conn, user_id)
            raise _failed(current.etag if current is not None else None) from None
        return backup

    def list(self, user_id: str) -> list[VaultBackup]:
        """The versions kept, newest first (without their bytes)."""
        with self._db.read() as conn:
            return repo.list_backups(conn, user_id)

    def read(self, user_id: str, version: int | None = None) -> VaultBackupData:
        """A version's bytes; the latest when ``version`` is None."""
        with self._db.read() as conn:
            found = repo.read_backup(conn, user_id, version)
        if found is None:
            raise VaultBackupNotFoundError(version)
        return found


def _failed(current_etag: str | None) -> PreconditionFailedError:
    if current_etag is None:
        detail = "there is no backup to replace yet: send If-None-Match: * for the first one"
    else:
        detail = (
            f"the latest backup is {current_etag}, which this request did not name: another "
            "computer stored it first; fetch it, merge, and send its ETag in If-Match"
        )
    return PreconditionFailedError(detail, current_etag=current_etag)
