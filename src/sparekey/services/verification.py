"""Verifying a code at sign-in: any of the user's active TOTP/HOTP factors, a code sent by email
or SMS (:mod:`sparekey.services.fallback`, looked for only when the user has a live one), or a
backup code.

The hot path, on one pooled connection (:meth:`Database.unit`): one statement reads the user's
active factors and how many backup codes are left, the code is checked in memory against every
factor, and only a match opens a write transaction holding the conditional UPDATE that refuses a
step already used. A replayed or concurrent duplicate code is simply not verified.

A verified answer carries an assurance token (:mod:`sparekey.services.assurance`), made after the
commit with one HMAC and no database statement.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from sparekey.crashpoints import crashpoint
from sparekey.crypto.aead import DecryptionError
from sparekey.crypto.keyring import Keyring
from sparekey.domain.errors import UserNotFoundError
from sparekey.domain.models import SYSTEM, Caller, FactorType, ThrottleState, VerifyResult
from sparekey.domain.ports import Clock
from sparekey.protocols import backup_codes as backup_code_format
from sparekey.services.assurance import AssuranceService
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.services.backup_codes import BackupCodeService
from sparekey.services.fallback import FallbackService
from sparekey.services.otp import Match, OtpPolicy, match_code, open_secret
from sparekey.services.throttle import Throttle
from sparekey.storage import factors as factors_repo
from sparekey.storage import throttle as throttle_repo
from sparekey.storage import users as users_repo
from sparekey.storage.database import Database, Unit
from sparekey.storage.factors import OtpFactor, VerifyState

__all__ = ["BACKUP_CODE", "VerificationService"]

BACKUP_CODE = "backup_code"
BACKUP_CODES_LOW = 3  # this many left or fewer: the user is told to make a new set
_MAX_CODE_LENGTH = 64
NOT_VERIFIED = VerifyResult(verified=False)
log = logging.getLogger("sparekey.verification")


class SignInHook(Protocol):
    """Called inside the transaction of a successful sign-in (recovery: cancel open cases)."""

    def __call__(self, unit: Unit, user_id: str, caller: Caller) -> None: ...


class VerificationService:
    def __init__(
        self,
        *,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        policy: OtpPolicy,
        backup_codes: BackupCodeService,
        throttle: Throttle,
        auditor: Auditor,
        assurance: AssuranceService,
        on_sign_in: SignInHook | None = None,
        fallback: FallbackService | None = None,
    ) -> None:
        self._fallback = fallback
        self._on_sign_in = on_sign_in
        self._assurance = assurance
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._policy = policy
        self._backup_codes = backup_codes
        self._throttle = throttle
        self._auditor = auditor

    def verify(self, user_id: str, code: str, *, caller: Caller = SYSTEM) -> VerifyResult:
        """A code of an active factor or a backup code; verified answers carry a step-up token."""
        result = self._verify(user_id, code, caller)
        if not result.verified:
            return result
        crashpoint("verify.committed")
        weak = result.factor_type in (FactorType.EMAIL.value, FactorType.SMS.value)
        return replace(result, assurance_token=self._assurance.issue(user_id, fallback=weak))

    def _verify(self, user_id: str, code: str, caller: Caller) -> VerifyResult:
        text = code.strip()
        if text.isdigit() and text.isascii() and len(text) <= _MAX_CODE_LENGTH:
            return self._verify_otp(user_id, text, caller)
        canonical = backup_code_format.normalize(text)
        if canonical is not None:
            return self._verify_backup_code(user_id, canonical, caller)
        with self._db.unit() as unit:
            if not users_repo.user_exists(unit, user_id):
                raise UserNotFoundError(user_id)
            self._failed(unit.write(), user_id, "unrecognised", caller)
        return NOT_VERIFIED

    def _failed(self, unit: Unit, user_id: str, kind: str, caller: Caller) -> None:
        entry = AuditEntry(
            event="verify.failed", outcome="failure", user_id=user_id, details={"kind": kind}
        )
        self._auditor.record(unit, entry, caller)

    def _verify_otp(self, user_id: str, code: str, caller: Caller) -> VerifyResult:
        now = self._clock.now()
        with self._db.unit() as unit:
            state = factors_repo.verify_state(unit, user_id, now=now)
            if state is None:
                raise UserNotFoundError(user_id)
            self._throttle.check(state.throttle, now=now)
            for factor, found in self._matches(state.factors, code, now=now):
                if factors_repo.advance_step(
                    unit.write(), factor.id, step=found.step, drift=found.drift, now=now
                ):
                    spent = (factor.id, factor.type)
                    return self._succeeded(unit, state, user_id, spent, caller, now=now)
            if state.live_fallback_codes and self._fallback is not None:
                accepted = self._fallback.accept(unit, user_id, code, now=now)
                if accepted.refused:  # fallback only: right code, but the user has better
                    self._failed(unit.write(), user_id, "fallback_not_allowed", caller)
                    return NOT_VERIFIED
                if accepted.factor is not None:
                    spent = (accepted.factor.factor_id, accepted.factor.factor_type)
                    return self._succeeded(unit, state, user_id, spent, caller, now=now)
            if state.factors or state.live_fallback_codes:  # a wrong guess at a code that exists
                engaged = self._throttle.fail(unit, user_id, now=now)
                if engaged is not None:
                    self._auditor.record(unit, _throttle_entry(user_id, engaged), caller)
            self._failed(unit.write(), user_id, "otp", caller)
        return NOT_VERIFIED

    def _succeeded(
        self,
        unit: Unit,
        state: VerifyState,
        user_id: str,
        factor: tuple[str, FactorType],
        caller: Caller,
        *,
        now: datetime,
    ) -> VerifyResult:
        factor_id, type = factor
        self._throttle.succeed(unit, user_id, now=now, seen=state.throttle)
        if state.open_recovery_case and self._on_sign_in is not None:
            self._on_sign_in(unit, user_id, caller)
        details = {"factor_id": factor_id, "factor_type": type.value}
        entry = AuditEntry(event="verify.succeeded", user_id=user_id, details=details)
        self._auditor.record(unit, entry, caller)
        crashpoint("verify.before_commit")
        return VerifyResult(
            verified=True,
            factor_id=factor_id,
            factor_type=type.value,
            backup_codes_remaining=state.backup_codes_remaining,
        )

    def _matches(
        self, factors: list[OtpFactor], code: str, *, now: datetime
    ) -> list[tuple[OtpFactor, Match]]:
        """Every factor the code matches; all of them are checked, whichever matches."""
        matches = []
        for factor in factors:
            try:
                secret = open_secret(self._keyring, factor)
            except DecryptionError:
                # Tampering or a lost key: this factor fails closed, the others still work.
                log.error("factor %s does not decrypt; check the database", factor.id)
                continue
            found = match_code(factor, secret, code, now=now, policy=self._policy)
            if found is not None:
                matches.append((factor, found))
        return matches

    def _verify_backup_code(self, user_id: str, canonical: str, caller: Caller) -> VerifyResult:
        with self._db.unit() as unit:
            if not users_repo.user_exists(unit, user_id):
                raise UserNotFoundError(user_id)
            remaining = self._backup_codes.consume(unit, user_id, canonical)
            if remaining is None:
                self._failed(unit.write(), user_id, "backup_code", caller)
                return NOT_VERIFIED
            throttle_repo.clear(unit, user_id)  # a non-guessable success lifts the throttle
            if self._on_sign_in is not None:
                self._on_sign_in(unit, user_id, caller)
            details = {"remaining": remaining}
            entry = AuditEntry(event="backup_code.used", user_id=user_id, details=details)
            self._auditor.record(unit, entry, caller)
            if remaining <= BACKUP_CODES_LOW:
                low = AuditEntry(event="backup_codes.low", user_id=user_id, details=details)
                self._auditor.record(unit, low, caller)
            crashpoint("backup_code.before_commit")
        crashpoint("backup_code.committed")
        return VerifyResult(
            verified=True, factor_type=BACKUP_CODE, backup_codes_remaining=remaining
        )


def _throttle_entry(user_id: str, state: ThrottleState) -> AuditEntry:
    until = state.locked_until.isoformat() if state.locked_until else None
    details = {"failures": state.failures, "locked_until": until}
    details["suspended"] = state.suspended_at is not None
    return AuditEntry(event="throttle.engaged", outcome="failure", user_id=user_id, details=details)
