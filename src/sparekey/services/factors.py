"""Enrolling, confirming, listing, renaming, resynchronising and removing TOTP/HOTP factors."""

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
    NotFoundError,
    UserNotFoundError,
)
from sparekey.domain.models import SYSTEM, Caller, Enrollment, Factor, FactorStatus, FactorType
from sparekey.domain.ports import Clock
from sparekey.protocols.otpauth import OtpauthUri, OtpType
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.services._ids import new_id
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
    ) -> Enrollment:
        """Create a pending factor with a fresh seed as long as the hash's output (≥ 160 bits)."""
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
        self, user_id: str, factor_id: str, *, code: str, caller: Caller = SYSTEM
    ) -> Factor:
        """Activate a pending factor with its first code; that code's step counts as used."""
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
        if match is None:
            raise CodeRejectedError()
        with self._db.write() as conn:
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

    def delete(self, user_id: str, factor_id: str, *, caller: Caller = SYSTEM) -> None:
        with self._db.write() as conn:
            if not repo.delete_factor(conn, user_id, factor_id):
                raise _missing(conn, user_id, factor_id)
            self._audit(conn, "factor.removed", factor_id, user_id, caller)

    def _get(self, user_id: str, factor_id: str) -> FactorRecord:
        with self._db.read() as conn:
            record = repo.get_factor(conn, user_id, factor_id)
            if record is None:
                raise _missing(conn, user_id, factor_id)
        return record


def _missing(conn: Connection, user_id: str, factor_id: str) -> NotFoundError:
    """The right 404 for a factor that was not found: is it the user or the factor?"""
    if not users_repo.user_exists(conn, user_id):
        return UserNotFoundError(user_id)
    return FactorNotFoundError(factor_id)
