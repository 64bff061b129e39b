"""Verifying a code at sign-in: any of the user's active TOTP/HOTP factors, or a backup code.

The hot path, on one pooled connection (:meth:`Database.unit`): one statement reads the user's
active factors and how many backup codes are left, the code is checked in memory against every
factor, and only a match opens a write transaction holding the conditional UPDATE that refuses a
step already used. A replayed or concurrent duplicate code is simply not verified.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sparekey.crypto.aead import DecryptionError
from sparekey.crypto.keyring import Keyring
from sparekey.domain.errors import UserNotFoundError
from sparekey.domain.models import VerifyResult
from sparekey.domain.ports import Clock
from sparekey.protocols import backup_codes as backup_code_format
from sparekey.services.backup_codes import BackupCodeService
from sparekey.services.otp import Match, OtpPolicy, match_code, open_secret
from sparekey.services.throttle import Throttle
from sparekey.storage import factors as factors_repo
from sparekey.storage import throttle as throttle_repo
from sparekey.storage import users as users_repo
from sparekey.storage.database import Database
from sparekey.storage.factors import OtpFactor

__all__ = ["BACKUP_CODE", "VerificationService"]

BACKUP_CODE = "backup_code"
_MAX_CODE_LENGTH = 64
NOT_VERIFIED = VerifyResult(verified=False)
log = logging.getLogger("sparekey.verification")


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
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._policy = policy
        self._backup_codes = backup_codes
        self._throttle = throttle

    def verify(self, user_id: str, code: str) -> VerifyResult:
        text = code.strip()
        if len(text) > _MAX_CODE_LENGTH:
            return self._check_user(user_id, NOT_VERIFIED)
        if text.isdigit() and text.isascii():
            return self._verify_otp(user_id, text)
        canonical = backup_code_format.normalize(text)
        if canonical is not None:
            return self._verify_backup_code(user_id, canonical)
        return self._check_user(user_id, NOT_VERIFIED)

    def _check_user(self, user_id: str, result: VerifyResult) -> VerifyResult:
        with self._db.read() as conn:
            if not users_repo.user_exists(conn, user_id):
                raise UserNotFoundError(user_id)
        return result

    def _verify_otp(self, user_id: str, code: str) -> VerifyResult:
        now = self._clock.now()
        with self._db.unit() as unit:
            state = factors_repo.verify_state(unit, user_id)
            if state is None:
                raise UserNotFoundError(user_id)
            self._throttle.check(state.throttle, now=now)
            for factor, found in self._matches(state.factors, code, now=now):
                if factors_repo.advance_step(
                    unit.write(), factor.id, step=found.step, drift=found.drift, now=now
                ):
                    self._throttle.succeed(unit, user_id, now=now)
                    return VerifyResult(
                        verified=True,
                        factor_id=factor.id,
                        factor_type=factor.type.value,
                        backup_codes_remaining=state.backup_codes_remaining,
                    )
            if state.factors:  # a wrong guess at a code that exists
                self._throttle.fail(unit, user_id, now=now)
        return NOT_VERIFIED

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

    def _verify_backup_code(self, user_id: str, canonical: str) -> VerifyResult:
        with self._db.unit() as unit:
            if not users_repo.user_exists(unit, user_id):
                raise UserNotFoundError(user_id)
            remaining = self._backup_codes.consume(unit, user_id, canonical)
            if remaining is not None:  # a non-guessable success lifts the throttle
                throttle_repo.clear(unit, user_id)
        if remaining is None:
            return NOT_VERIFIED
        return VerifyResult(
            verified=True, factor_type=BACKUP_CODE, backup_codes_remaining=remaining
        )
