"""Enrolling, confirming, listing, renaming, resynchronising, marking lost and removing factors.

Adding or removing a factor is a sensitive change (see :mod:`sparekey.services.assurance`), and
removing the user's last active factor, or their last security key, is refused unless forced.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Connection

from sparekey.crypto.keyring import Keyring
from sparekey.domain.errors import (
    CodeRejectedError,
    ConflictError,
    FactorExpiredError,
    FactorNotFoundError,
    FactorStateError,
    InvalidInputError,
    LastFactorError,
    NotFoundError,
    UserNotFoundError,
)
from sparekey.domain.models import SYSTEM, Caller, Enrollment, Factor, FactorStatus, FactorType
from sparekey.domain.ports import Clock
from sparekey.protocols.otpauth import OtpauthUri, OtpType
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.services._ids import new_id
from sparekey.services.assurance import NO_ASSURANCE, Assurance, AssuranceService, Operation
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.services.otp import OtpPolicy, find_resync, match_code, open_secret, secret_aad
from sparekey.storage import factors as repo
from sparekey.storage import users as users_repo
from sparekey.storage.database import Database
from sparekey.storage.factors import FactorRecord

__all__ = ["MAX_FACTORS_PER_USER", "FactorService"]

MAX_FACTORS_PER_USER = 20


class FactorService:
    def __init__(
        self,
        *,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        policy: OtpPolicy,
        issuer: str,
        pending_ttl: timedelta,
        auditor: Auditor,
        assurance: AssuranceService,
        describe: Callable[[Factor], Factor] | None = None,
    ) -> None:
        self._describe = describe or (lambda factor: factor)  # adds what metadata knows
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._policy = policy
        self._issuer = issuer
        self._pending_ttl = pending_ttl
        self._auditor = auditor
        self._assurance = assurance

    def _audit(
        self, conn: Connection, event: str, factor: Factor | str, user_id: str, caller: Caller
    ) -> None:
        details: dict[str, object]
        if isinstance(factor, Factor):
            details = {"factor_id": factor.id, "factor_type": factor.type.value}
        else:
            details = {"factor_id": factor}
        self._auditor.record(
            conn, AuditEntry(event=event, user_id=user_id, details=details), caller
        )

    def enroll(
        self,
        user_id: str,
        *,
        type: FactorType,
        label: str | None = None,
        algorithm: HashAlgorithm = HashAlgorithm.SHA1,
        digits: int = 6,
        period: int = 30,
        caller: Caller = SYSTEM,
        assurance: Assurance = NO_ASSURANCE,
    ) -> Enrollment:
        """Create a pending factor with a fresh seed as long as the hash's output (≥ 160 bits).
        A user with an active factor must step up first (``assurance``)."""
        if not type.guessable:
            raise InvalidInputError(
                "security keys and passkeys are registered through /webauthn/registrations",
                field="type",
            )
        now = self._clock.now()
        factor_id = new_id("fct")
        secret = os.urandom(algorithm.digest_size)
        key_id, sealed = self._keyring.encrypt(
            secret, aad=secret_aad(user_id=user_id, factor_id=factor_id)
        )
        factor = Factor(
            id=factor_id,
            user_id=user_id,
            type=type,
            status=FactorStatus.PENDING,
            label=label,
            algorithm=algorithm,
            digits=digits,
            period=period if type is FactorType.TOTP else None,
            last_step=None,
            drift=0,
            created_at=now,
            confirmed_at=None,
            last_used_at=None,
            expires_at=now + self._pending_ttl,
        )
        with self._db.write() as conn:
            user = users_repo.get_user(conn, user_id)
            if user is None:
                raise UserNotFoundError(user_id)
            self._assurance.require(
                conn,
                user_id,
                operation=Operation.ENROLL_FACTOR,
                assurance=assurance,
                caller=caller,
            )
            repo.delete_expired_pending(conn, user_id, now=now)
            if len(repo.list_factors(conn, user_id, now=now)) >= MAX_FACTORS_PER_USER:
                raise ConflictError(
                    f"a user may hold at most {MAX_FACTORS_PER_USER} factors; remove one first"
                )
            repo.insert_factor(
                conn, FactorRecord(factor=factor, secret=sealed, secret_key_id=key_id)
            )
            self._audit(conn, "factor.enrolled", factor, user_id, caller)
        uri = OtpauthUri(
            type=OtpType(type.value),
            secret=secret,
            account=user.email or user.id,
            issuer=self._issuer,
            algorithm=algorithm,
            digits=digits,
            period=period,
            counter=0,
        )
        return Enrollment(factor=factor, secret=secret, otpauth_uri=uri.to_uri())

    def confirm(
        self,
        user_id: str,
        factor_id: str,
        *,
        code: str,
        caller: Caller = SYSTEM,
        assurance: Assurance = NO_ASSURANCE,
    ) -> Factor:
        """Activate a pending factor with its first code; that code's step counts as used.
        A user who has an active factor by now must step up (``assurance``), as to enroll."""
        now = self._clock.now()
        record = self._get(user_id, factor_id)
        if record.factor.status is not FactorStatus.PENDING:
            raise FactorStateError("this factor is already confirmed")
        if record.factor.expires_at is not None and record.factor.expires_at <= now:
            raise FactorExpiredError()
        otp = record.otp
        match = match_code(
            otp, open_secret(self._keyring, otp), code.strip(), now=now, policy=self._policy
        )
        with self._db.write() as conn:
            self._assurance.require(
                conn,
                user_id,
                operation=Operation.CONFIRM_FACTOR,
                assurance=assurance,
                caller=caller,
            )
            if match is None:
                raise CodeRejectedError()
            activated = repo.advance_step(
                conn, factor_id, step=match.step, drift=match.drift, now=now, activate=True
            )
            if activated:
                self._audit(conn, "factor.confirmed", record.factor, user_id, caller)
        if not activated:
            raise FactorStateError("this factor was confirmed or removed in the meantime")
        return self._get(user_id, factor_id).factor

    def resync(
        self, user_id: str, factor_id: str, *, codes: tuple[str, str], caller: Caller = SYSTEM
    ) -> Factor:
        """Find where the user's device is from two consecutive codes and continue from there."""
        now = self._clock.now()
        record = self._get(user_id, factor_id)
        if record.factor.status is not FactorStatus.ACTIVE or not record.factor.type.guessable:
            raise FactorStateError("only an active TOTP or HOTP factor can be resynchronised")
        found = find_resync(
            record.otp,
            open_secret(self._keyring, record.otp),
            (codes[0].strip(), codes[1].strip()),
            now=now,
            policy=self._policy,
        )
        if found is None:
            raise CodeRejectedError(
                "the two codes are not consecutive codes of this factor", field="codes"
            )
        with self._db.write() as conn:
            advanced = repo.advance_step(
                conn, factor_id, step=found.step, drift=found.drift, now=now
            )
            if advanced:
                self._audit(conn, "factor.resynced", record.factor, user_id, caller)
        if not advanced:
            raise CodeRejectedError("these codes were already used", field="codes")
        return self._get(user_id, factor_id).factor

    def list(self, user_id: str) -> list[Factor]:
        with self._db.read() as conn:
            if not users_repo.user_exists(conn, user_id):
                raise UserNotFoundError(user_id)
            records = repo.list_factors(conn, user_id, now=self._clock.now())
        return [self._describe(r.factor) for r in records]

    def get(self, user_id: str, factor_id: str) -> Factor:
        return self._describe(self._get(user_id, factor_id).factor)

    def rename(
        self, user_id: str, factor_id: str, *, label: str | None, caller: Caller = SYSTEM
    ) -> Factor:
        with self._db.write() as conn:
            if not repo.update_factor(conn, user_id, factor_id, label=label):
                raise _missing(conn, user_id, factor_id)
            self._audit(conn, "factor.renamed", factor_id, user_id, caller)
        return self._get(user_id, factor_id).factor

    def mark_lost(self, user_id: str, factor_id: str, *, caller: Caller = SYSTEM) -> Factor:
        """The user lost the device: the factor stops verifying at once and is listed as lost.
        Not a step-up operation (the user may have nothing left to step up with); the user and
        the application are notified (``factor.lost``)."""
        with self._db.write() as conn:
            repo.lock_factors(conn, user_id)
            record = repo.get_factor(conn, user_id, factor_id)
            if record is None:
                raise _missing(conn, user_id, factor_id)
            status = record.factor.status
            if status is FactorStatus.LOST:
                raise FactorStateError("this factor is already marked lost")
            if not repo.mark_lost(conn, user_id, factor_id):
                raise FactorStateError(f"only an active factor can be marked lost (it is {status})")
            self._audit(conn, "factor.lost", record.factor, user_id, caller)
        return self.get(user_id, factor_id)

    def delete(
        self,
        user_id: str,
        factor_id: str,
        *,
        caller: Caller = SYSTEM,
        assurance: Assurance = NO_ASSURANCE,
        force: bool = False,
    ) -> None:
        """Remove a factor. A user with an active factor must step up first (``assurance``).
        Removing the last active factor, or the last active security key, is refused
        (:class:`LastFactorError`) unless ``force`` (an administrator's call; audited)."""
        with self._db.write() as conn:
            repo.lock_factors(conn, user_id)
            record = repo.get_factor(conn, user_id, factor_id)
            if record is None:
                raise _missing(conn, user_id, factor_id)
            self._assurance.require(
                conn,
                user_id,
                operation=Operation.REMOVE_FACTOR,
                assurance=assurance,
                caller=caller,
            )
            protection = _protection(record.factor, repo.active_factor_types(conn, user_id))
            if protection is not None and not force:
                raise LastFactorError(_PROTECTIONS[protection])
            repo.delete_factor(conn, user_id, factor_id)
            self._audit(conn, "factor.removed", record.factor, user_id, caller)
            if protection is not None:
                details: dict[str, object] = {
                    "factor_id": factor_id,
                    "factor_type": record.factor.type.value,
                    "protection": protection,
                }
                if assurance.reason:
                    details["reason"] = assurance.reason[:200]
                entry = AuditEntry(event="factor.removal_forced", user_id=user_id, details=details)
                self._auditor.record(conn, entry, caller)

    def _get(self, user_id: str, factor_id: str) -> FactorRecord:
        with self._db.read() as conn:
            record = repo.get_factor(conn, user_id, factor_id)
            if record is None:
                raise _missing(conn, user_id, factor_id)
        return record


_PROTECTIONS = {
    "last_factor": "this is the user's last active factor: removing it would leave only backup "
    "codes; add another factor first (or mark it lost if the device is gone)",
    "last_webauthn": "this is the user's last security key or passkey: removing it would leave "
    "no phishing-resistant factor; register another first",
}


def _protection(factor: Factor, active: list[FactorType]) -> str | None:
    """Which rule removing ``factor`` would break, given the types of the active factors."""
    if factor.status is not FactorStatus.ACTIVE:
        return None  # a pending or lost factor protects nothing
    if len(active) <= 1:
        return "last_factor"
    if factor.type is FactorType.WEBAUTHN and active.count(FactorType.WEBAUTHN) <= 1:
        return "last_webauthn"
    return None


def _missing(conn: Connection, user_id: str, factor_id: str) -> NotFoundError:
    """The right 404 for a factor that was not found: is it the user or the factor?"""
    if not users_repo.user_exists(conn, user_id):
        return UserNotFoundError(user_id)
    return FactorNotFoundError(factor_id)
