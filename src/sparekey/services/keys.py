"""Key management: status, KEK rotation, data-key rotation with re-encryption, retirement.

Rotations run while the server keeps serving. A KEK rotation rewraps the few data keys in one
transaction. A data-key rotation makes a new key active at once (every node picks it up within
the keyring's refresh interval), then re-encrypts the existing secrets in small transactions,
each row a compare-and-set, so a rotation killed halfway is finished by running it again. A key
is destroyed only when no record names it; the foreign keys from every table that names a key
make that check race-free.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sparekey.crashpoints import crashpoint
from sparekey.crypto.keyring import KeyPurpose, Keyring
from sparekey.crypto.providers import KeyProvider
from sparekey.domain.errors import ConflictError
from sparekey.domain.models import SYSTEM, Caller
from sparekey.domain.ports import Clock
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.services.otp import secret_aad
from sparekey.storage import factors as factor_repo
from sparekey.storage import keystore
from sparekey.storage.database import Database

__all__ = ["DataKeyStatus", "DekRotation", "KekRotation", "KeyManager", "Progress"]

Progress = Callable[[int, int], None]
"""Called with (records done, records in total) as re-encryption goes."""


@dataclass(frozen=True, kw_only=True)
class DataKeyStatus:
    id: int
    purpose: KeyPurpose
    state: str  # "active", "retired" (still protects records), or "public-only" (signing)
    records: int
    kek_id: str


@dataclass(frozen=True, kw_only=True)
class KekRotation:
    previous: list[str]
    current: str
    data_keys: int


@dataclass(frozen=True, kw_only=True)
class DekRotation:
    purpose: KeyPurpose
    key_id: int
    resumed: bool
    reencrypted: int
    retired: list[int]


class KeyManager:
    def __init__(
        self,
        *,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        auditor: Auditor,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._auditor = auditor
        self._sleep = sleep

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> list[DataKeyStatus]:
        uses = keystore.usage_by_key(self._db)
        answer = []
        for key in self._keyring.stored_keys():
            if key.active:
                state = "active"
            elif key.wrapped is None:
                state = "public-only"
            else:
                state = "retired"
            answer.append(
                DataKeyStatus(
                    id=key.id,
                    purpose=key.purpose,
                    state=state,
                    records=uses.get(key.id, 0),
                    kek_id=key.kek_id,
                )
            )
        return answer

    def keks_in_use(self) -> dict[str, int]:
        """Each KEK that wraps a live data key, with how many it wraps."""
        counts: dict[str, int] = {}
        for key in self._keyring.stored_keys():
            if key.wrapped is not None:
                counts[key.kek_id] = counts.get(key.kek_id, 0) + 1
        return counts

    def record_created(self, key_ids: list[int], *, caller: Caller = SYSTEM) -> None:
        """Audit the first keys of a new deployment."""
        with self._db.write() as conn:
            for key in self._keyring.stored_keys():
                if key.id in key_ids:
                    details = {"key_id": key.id, "purpose": key.purpose.value, "kek": key.kek_id}
                    entry = AuditEntry(event="keys.dek_created", details=details)
                    self._auditor.record(conn, entry, caller)

    # -- KEK ------------------------------------------------------------------------------------

    def rotate_kek(self, new: KeyProvider, *, caller: Caller = SYSTEM) -> KekRotation:
        """Rewrap every data key under ``new``'s KEK, in one transaction."""
        previous = sorted(self.keks_in_use())
        if previous == [new.kek_id]:
            raise ConflictError(f"the data keys are already wrapped by {new.kek_id}")
        wrapped = self._keyring.rewrap(new)  # provider calls happen before the transaction opens
        with self._db.write() as conn:
            count = keystore.rewrap_keys(conn, wrapped, kek_id=new.kek_id)
            self._auditor.record(
                conn,
                AuditEntry(
                    event="keys.kek_rotated",
                    details={"from": previous, "to": new.kek_id, "data_keys": count},
                ),
                caller,
            )
        self._keyring.adopt(new)
        self._keyring.reload()
        return KekRotation(previous=previous, current=new.kek_id, data_keys=count)

    def destroy_kek(self, kek_id: str, destroy: Callable[[], None], *, caller: Caller) -> None:
        """Destroy a KEK that no data key needs any more (``destroy`` does it in its provider)."""
        with self._db.write() as conn:
            if kek_id in self.keks_in_use():
                raise ConflictError(f"{kek_id} still wraps data keys; rotate the KEK first")
            self._auditor.record(
                conn, AuditEntry(event="keys.kek_destroyed", details={"kek": kek_id}), caller
            )
            destroy()

    # -- data keys ------------------------------------------------------------------------------

    def rotate_dek(
        self,
        purpose: KeyPurpose,
        *,
        caller: Caller = SYSTEM,
        batch_size: int = 500,
        pause_seconds: float = 0.0,
        progress: Progress | None = None,
    ) -> DekRotation:
        """Make a new ``purpose`` key active, move the secrets it protects onto it, and retire
        what nothing uses any more. An unfinished encryption rotation is resumed, not restarted."""
        resumed = False
        if purpose is KeyPurpose.ENCRYPTION:
            active = self._keyring.active_id(purpose)
            with self._db.read() as conn:
                resumed = factor_repo.count_secrets_not_under(conn, active) > 0
        key_id = active if resumed else self._add_key(purpose, caller=caller)
        started = time.monotonic()
        done = 0
        if purpose is KeyPurpose.ENCRYPTION:
            done = self._reencrypt(key_id, batch_size, pause_seconds, progress)
            # Nodes that had not seen the new key yet may have sealed with the old one meanwhile:
            # wait out their refresh interval, then sweep again.
            self._sleep(max(0.0, self._keyring.refresh_seconds - (time.monotonic() - started)))
            done += self._reencrypt(key_id, batch_size, pause_seconds, progress)
            with self._db.write() as conn:
                self._auditor.record(
                    conn,
                    AuditEntry(
                        event="keys.reencrypted",
                        details={"key_id": key_id, "records": done, "resumed": resumed},
                    ),
                    caller,
                )
        retired = self.retire_unused(caller=caller)
        return DekRotation(
            purpose=purpose, key_id=key_id, resumed=resumed, reencrypted=done, retired=retired
        )

    def _add_key(self, purpose: KeyPurpose, *, caller: Caller) -> int:
        new = self._keyring.new_key(purpose)
        with self._db.write() as conn:
            stored = keystore.SqlKeyStore(self._db, self._clock).insert_key(conn, new)
            self._auditor.record(
                conn,
                AuditEntry(
                    event="keys.dek_created",
                    details={"key_id": stored.id, "purpose": purpose.value, "kek": new.kek_id},
                ),
                caller,
            )
        self._keyring.reload()
        return stored.id

    def _reencrypt(
        self, key_id: int, batch_size: int, pause_seconds: float, progress: Progress | None
    ) -> int:
        with self._db.read() as conn:
            total = factor_repo.count_secrets_not_under(conn, key_id)
        done, after = 0, ""
        if progress is not None:
            progress(done, total)
        while True:
            with self._db.write() as conn:
                batch = factor_repo.secrets_not_under(conn, key_id, after=after, limit=batch_size)
                for old in batch:
                    aad = secret_aad(user_id=old.user_id, factor_id=old.factor_id)
                    plaintext = self._keyring.decrypt(old.key_id, old.sealed, aad=aad)
                    sealed = self._keyring.encrypt_with(key_id, plaintext, aad=aad)
                    if factor_repo.reseal_secret(conn, old, key_id=key_id, sealed=sealed):
                        done += 1
                    crashpoint("keys.reencrypt.resealed")
            if not batch:
                return done
            crashpoint("keys.reencrypt.batch_committed")
            after = batch[-1].factor_id
            if progress is not None:
                progress(min(done, total), total)
            if pause_seconds:
                self._sleep(pause_seconds)

    def retire_unused(self, *, caller: Caller = SYSTEM) -> list[int]:
        """Destroy inactive keys no record names; keep only the public half of old signing keys."""
        self._keyring.reload()
        retired = []
        for key in self._keyring.stored_keys():
            if key.active or key.wrapped is None:
                continue
            with self._db.write() as conn:
                if key.purpose is KeyPurpose.SIGNING:
                    gone = keystore.retire_signing_key(
                        conn,
                        key.id,
                        public_key=self._keyring.public_bytes(key.id),
                        now=self._clock.now(),
                    )
                    event = "keys.dek_retired"
                else:
                    gone = keystore.delete_unused_key(conn, key.id)
                    event = "keys.dek_destroyed"
                if gone:
                    details = {"key_id": key.id, "purpose": key.purpose.value}
                    self._auditor.record(conn, AuditEntry(event=event, details=details), caller)
                    retired.append(key.id)
        self._keyring.reload()
        return retired
