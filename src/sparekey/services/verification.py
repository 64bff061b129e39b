"""Verifying a code at sign-in: any of the user's active TOTP/HOTP factors, a code sent by email
or SMS (:mod:`sparekey.services.fallback`, looked for only when the user has a live one), or a
backup code.

The hot path, on one pooled connection (:meth:`Database.unit`), in two halves. Reading: one
statement reads the user's active factors, throttle and how many backup codes are left, and the
code is checked in memory against every factor. Writing, in one transaction: the conditional
UPDATE that spends the matched step and refuses a step already used (a replayed or concurrent
duplicate code is simply not verified), or the counted failure, and the audit record. On SQLite a
request that finds another process holding the write lock when it comes to write leaves the
writing half to a batch (:meth:`VerificationService.verify_or_defer`, then
:meth:`VerificationService.settle`, driven by :mod:`sparekey.api.batching`), so that its event
loop serves other requests meanwhile and the batch commits once.

A verified answer carries an assurance token (:mod:`sparekey.services.assurance`), made after the
commit with one HMAC and no database statement.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
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

__all__ = ["BACKUP_CODE", "OtpAttempt", "VerificationService"]

BACKUP_CODE = "backup_code"
BACKUP_CODES_LOW = 3  # this many left or fewer: the user is told to make a new set
_MAX_CODE_LENGTH = 64
NOT_VERIFIED = VerifyResult(verified=False)
log = logging.getLogger("sparekey.verification")


def _looks_like_otp(text: str) -> bool:
    return text.isdigit() and text.isascii() and len(text) <= _MAX_CODE_LENGTH


@dataclass(frozen=True, kw_only=True)
class OtpAttempt:
    """A one-time code read and checked against the user's factors, its outcome not yet written
    (:meth:`VerificationService.verify_or_defer`, then :meth:`VerificationService.settle`)."""

    user_id: str
    code: str
    caller: Caller
    now: datetime
    state: VerifyState
    matches: list[tuple[OtpFactor, Match]]


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
        return self._finished(self._verify(user_id, code, caller), user_id)

    def verify_or_defer(
        self, user_id: str, code: str, *, caller: Caller = SYSTEM, join: bool = False
    ) -> VerifyResult | OtpAttempt:
        """:meth:`verify`, except when the code is an OTP and, once it is checked, another writer
        holds SQLite's write lock: then the attempt is returned unwritten, for :meth:`settle` to
        write (with others) when the lock is free, instead of waiting here. With ``join`` an OTP
        attempt is always returned unwritten (the caller has a batch waiting, and answers keep
        their order); any other code (a backup code) is verified at once either way."""
        text = code.strip()
        if not _looks_like_otp(text):
            return self.verify(user_id, code, caller=caller)
        with self._db.unit() as unit:
            attempt = self._read_otp(unit, user_id, text, caller)
            if join or not unit.try_write():
                return attempt
            result = self._settle(unit, attempt)
        return self._finished(result, user_id)

    def settle(self, attempts: Sequence[OtpAttempt]) -> list[VerifyResult | Exception]:
        """Write the outcomes of deferred attempts, in order, in one transaction: what
        :meth:`verify` would have written one by one, with one commit and one turn of the write
        lock. If any of them raises, nothing of the batch is kept and each is written again in a
        transaction of its own, so that an error (a throttle engaged meanwhile) stays its own
        attempt's. Each answer is the attempt's result or its error."""
        try:
            with self._db.unit() as unit:
                unit.write()
                results = [self._settle(unit, attempt) for attempt in attempts]
        except Exception as exc:
            if len(attempts) == 1:
                return [exc]
            return [self._settle_alone(attempt) for attempt in attempts]
        return [
            self._finished(result, attempt.user_id)
            for result, attempt in zip(results, attempts, strict=True)
        ]

    def _settle_alone(self, attempt: OtpAttempt) -> VerifyResult | Exception:
        try:
            with self._db.unit() as unit:
                result = self._settle(unit, attempt)
        except Exception as exc:
            return exc
        return self._finished(result, attempt.user_id)

    def _finished(self, result: VerifyResult, user_id: str) -> VerifyResult:
        """After the commit: a verified answer gets its step-up token."""
        if not result.verified:
            return result
        crashpoint("verify.committed")
        weak = result.factor_type in (FactorType.EMAIL.value, FactorType.SMS.value)
        return replace(result, assurance_token=self._assurance.issue(user_id, fallback=weak))

    def _verify(self, user_id: str, code: str, caller: Caller) -> VerifyResult:
        text = code.strip()
        if _looks_like_otp(text):
            with self._db.unit() as unit:
                return self._settle(unit, self._read_otp(unit, user_id, text, caller))
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

    def _read_otp(self, unit: Unit, user_id: str, code: str, caller: Caller) -> OtpAttempt:
        """The reading half: the user's state, the throttle's verdict, the factors that match."""
        now = self._clock.now()
        state = factors_repo.verify_state(unit, user_id, now=now)
        if state is None:
            raise UserNotFoundError(user_id)
        self._throttle.check(state.throttle, now=now)
        matches = self._matches(state.factors, code, now=now)
        return OtpAttempt(
            user_id=user_id, code=code, caller=caller, now=now, state=state, matches=matches
        )

    def _settle(self, unit: Unit, attempt: OtpAttempt) -> VerifyResult:
        """The writing half: spend the step of the first factor that still takes it (the
        conditional UPDATE refuses a replay, whenever it was checked), or count the failure."""
        user_id, caller, now, state = attempt.user_id, attempt.caller, attempt.now, attempt.state
        for factor, found in attempt.matches:
            if factors_repo.advance_step(
                unit.write(), factor.id, step=found.step, drift=found.drift, now=now
            ):
                spent = (factor.id, factor.type)
                return self._succeeded(unit, state, user_id, spent, caller, now=now)
        if state.live_fallback_codes and self._fallback is not None:
            accepted = self._fallback.accept(unit, user_id, attempt.code, now=now)
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
