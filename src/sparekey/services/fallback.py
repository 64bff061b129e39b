"""Email and SMS factors: one-time codes this server sends, kept in their place.

They are the weakest factors (SIM swap, interception, a compromised mailbox), so (decision 0016):

- ``fallback_channels`` decides whether they exist at all (``disabled``), sign in only a user who
  has no other active factor (``fallback_only``, the default), or sign in anyone who has one
  (``allowed``). In every mode a token from an email/SMS verification approves no sensitive change
  while the user has a stronger factor (:mod:`sparekey.services.assurance`).
- A destination is confirmed with a code sent to it before the factor is active. A changed
  destination, and the destination of a second email/SMS factor, receive no code for
  ``destination_wait`` (24 hours by default); a change needs step-up and is told to the old one.
- A code is 6-8 digits, lives ``code_ttl`` (10 minutes), is single use, and a new one voids the
  previous. It is stored as a keyed hash (HMAC under the keyring's MAC key, over the factor id and
  the code), spent by one conditional UPDATE, and shares the guessable codes' throttle.
- Sending is limited per user and per destination (the GCRA limiter, shared through Redis when
  configured), audited, and happens inside the request: a provider's failure is a
  :class:`DeliveryError` (502) and nothing is recorded as sent.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Connection

from sparekey.crypto.keyring import Keyring, UnknownKeyError
from sparekey.domain.errors import (
    CodeRejectedError,
    ConflictError,
    DeliveryError,
    DestinationWaitingError,
    FactorExpiredError,
    FactorNotFoundError,
    FactorStateError,
    FallbackDisabledError,
    FallbackNotAllowedError,
    InvalidInputError,
    SendLimitedError,
    UserNotFoundError,
)
from sparekey.domain.models import SYSTEM, Caller, Factor, FactorStatus, FactorType
from sparekey.domain.ports import Clock
from sparekey.protocols.contact import (
    ContactError,
    mask_email,
    mask_phone,
    normalize_email,
    normalize_phone,
    webotp_sms,
)
from sparekey.services._ids import new_id
from sparekey.services.assurance import NO_ASSURANCE, Assurance, AssuranceService, Operation
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.services.delivery import CodeSender, CodeSenders, Delivery
from sparekey.services.ratelimit import Limit, RateLimiter
from sparekey.storage import factors as factors_repo
from sparekey.storage import fallback as repo
from sparekey.storage import users as users_repo
from sparekey.storage.database import Database
from sparekey.storage.factors import FactorRecord
from sparekey.storage.fallback import LiveCode
from sparekey.storage.prepared import Unit

__all__ = [
    "Accepted",
    "FallbackEnrollment",
    "FallbackMode",
    "FallbackPolicy",
    "FallbackService",
    "SentCode",
    "mask",
]

log = logging.getLogger("sparekey.fallback")

FallbackMode = Literal["disabled", "fallback_only", "allowed"]
_LABEL = "fallback-code"
_DESTINATION_LABEL = "fallback-destination"
_MAX_FACTORS = 20  # as services/factors.py
_PER_USER = Limit(requests=5, per_seconds=900)
_PER_DESTINATION = Limit(requests=3, per_seconds=900)


@dataclass(frozen=True, kw_only=True)
class FallbackPolicy:
    mode: FallbackMode = "fallback_only"
    digits: int = 6
    code_ttl: timedelta = timedelta(minutes=10)
    destination_wait: timedelta = timedelta(hours=24)
    pending_ttl: timedelta = timedelta(minutes=10)
    per_user: Limit = _PER_USER
    per_destination: Limit = _PER_DESTINATION
    default_region: str | None = None
    origin_host: str = "localhost"  # the WebOTP line of SMS codes: @host #code
    app_name: str = "Sparekey"

    def __post_init__(self) -> None:
        if not 6 <= self.digits <= 8:
            raise ValueError("fallback codes have 6 to 8 digits")


@dataclass(frozen=True, kw_only=True)
class SentCode:
    factor_id: str
    destination: str  # masked
    provider: str
    sent_at: datetime
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class FallbackEnrollment:
    factor: Factor
    sent: SentCode | None  # None: the destination waits (``factor.usable_after``)


@dataclass(frozen=True, kw_only=True)
class Accepted:
    """A sign-in code's outcome on the verify path: the factor it spent, or refused by policy."""

    factor: LiveCode | None
    refused: bool = False


def mask(type: FactorType, destination: str | None) -> str | None:
    """The destination as lists, notifications and audit records show it."""
    if destination is None:
        return None
    return mask_phone(destination) if type is FactorType.SMS else mask_email(destination)


class FallbackService:
    def __init__(
        self,
        *,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        policy: FallbackPolicy,
        senders: CodeSenders,
        limiter: RateLimiter,
        auditor: Auditor,
        assurance: AssuranceService,
    ) -> None:
        self.policy = policy
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._senders = senders
        self._limiter = limiter
        self._auditor = auditor
        self._assurance = assurance

    # -- enrolling and confirming ------------------------------------------------------------

    def enroll(
        self,
        user_id: str,
        *,
        type: FactorType,
        destination: str,
        label: str | None = None,
        caller: Caller = SYSTEM,
        assurance: Assurance = NO_ASSURANCE,
    ) -> FallbackEnrollment:
        """A pending email or SMS factor; its first code goes out at once, unless the user has
        an active email/SMS factor already (then the new destination waits first)."""
        self._sender(type)
        normalised = self._normalise(type, destination)
        now = self._clock.now()
        with self._db.write() as conn:
            if users_repo.get_user(conn, user_id) is None:
                raise UserNotFoundError(user_id)
            self._assurance.require(
                conn, user_id, operation=Operation.ENROLL_FACTOR, assurance=assurance, caller=caller
            )
            factors_repo.delete_expired_pending(conn, user_id, now=now)
            existing = factors_repo.list_factors(conn, user_id, now=now)
            if len(existing) >= _MAX_FACTORS:
                raise ConflictError(
                    f"a user may hold at most {_MAX_FACTORS} factors; remove one first"
                )
            waits = any(
                r.factor.type.fallback and r.factor.status is FactorStatus.ACTIVE for r in existing
            )
            usable_after = now + self.policy.destination_wait if waits else None
            factor = Factor(
                id=new_id("fct"),
                user_id=user_id,
                type=type,
                status=FactorStatus.PENDING,
                label=label,
                algorithm=None,
                digits=self.policy.digits,
                period=None,
                last_step=None,
                drift=0,
                created_at=now,
                confirmed_at=None,
                last_used_at=None,
                expires_at=(usable_after or now) + self.policy.pending_ttl,
                destination=normalised,
                usable_after=usable_after,
            )
            record = FactorRecord(factor=factor, secret=None, secret_key_id=None)
            factors_repo.insert_factor(conn, record)
            self._audit(conn, "factor.enrolled", factor, caller, waits_until=usable_after)
        if usable_after is not None and usable_after > now:
            return FallbackEnrollment(factor=factor, sent=None)
        sent = self._send(factor, caller, now=now, enrolling=True)
        return FallbackEnrollment(factor=factor, sent=sent)

    def confirm(
        self,
        user_id: str,
        factor_id: str,
        *,
        code: str,
        caller: Caller = SYSTEM,
        assurance: Assurance = NO_ASSURANCE,
    ) -> Factor:
        """Activate a pending email or SMS factor with the code sent to its destination, or
        confirm an active one's changed destination with the first code sent there after the
        wait. The latter needs no step-up: the change was stepped up, the code proves the rest."""
        now = self._clock.now()
        factor = self._get(user_id, factor_id)
        self._sender(factor.type)
        changed = factor.status is FactorStatus.ACTIVE and factor.destination_unconfirmed
        if factor.status is not FactorStatus.PENDING and not changed:
            raise FactorStateError("this factor is already confirmed")
        if not changed and factor.expires_at is not None and factor.expires_at <= now:
            raise FactorExpiredError()
        with self._db.write() as conn:
            if not changed:
                self._assurance.require(
                    conn,
                    user_id,
                    operation=Operation.CONFIRM_FACTOR,
                    assurance=assurance,
                    caller=caller,
                )
            found = self._match(repo.live_codes(conn, user_id, now=now, factor_id=factor_id), code)
            if not found or not repo.use_code(conn, factor_id, digest=found[0][1], now=now):
                raise CodeRejectedError()
            if changed:
                assert factor.destination is not None
                if not repo.confirm_destination(conn, factor_id, destination=factor.destination):
                    raise FactorStateError("this factor was changed or removed in the meantime")
                self._audit(conn, "factor.destination_confirmed", factor, caller)
            else:
                if not repo.activate_factor(conn, factor_id, now=now):
                    raise FactorStateError("this factor was confirmed or removed in the meantime")
                self._audit(conn, "factor.confirmed", factor, caller)
        return self._get(user_id, factor_id)

    # -- sending ------------------------------------------------------------------------------

    def send(self, user_id: str, factor_id: str, *, caller: Caller = SYSTEM) -> SentCode:
        """A fresh code to the factor's destination, voiding the one before it: a confirmation
        code while the factor is pending or its changed destination unconfirmed."""
        now = self._clock.now()
        factor = self._get(user_id, factor_id)
        self._sender(factor.type)
        if factor.status is FactorStatus.LOST:
            raise FactorStateError("this factor is marked lost")
        if factor.status is FactorStatus.PENDING:
            if factor.expires_at is not None and factor.expires_at <= now:
                raise FactorExpiredError()
        elif factor.destination_unconfirmed:
            pass  # a confirmation code for the changed destination, never a sign-in code
        elif self.policy.mode == "fallback_only":
            with self._db.read() as conn:
                stronger = repo.stronger_factor_exists(conn, user_id)
            if stronger:
                raise FallbackNotAllowedError(
                    "email and SMS codes are a fallback here: this user has an authenticator "
                    "app or security key, so no code is sent"
                )
        if factor.usable_after is not None and factor.usable_after > now:
            raise DestinationWaitingError(factor.usable_after)
        return self._send(factor, caller, now=now)

    def _send(
        self,
        factor: Factor,
        caller: Caller,
        *,
        now: datetime,
        enrolling: bool = False,
        also: AuditEntry | None = None,
    ) -> SentCode:
        assert factor.destination is not None
        sender = self._sender(factor.type)
        self._limit(factor)
        code = f"{secrets.randbelow(10**self.policy.digits):0{self.policy.digits}d}"
        key_id, digest = self._keyring.mac(_LABEL, _mac_input(factor.id, code))
        minutes = max(1, int(self.policy.code_ttl.total_seconds() // 60))
        shown = mask(factor.type, factor.destination)
        try:
            delivery = sender.send(
                destination=factor.destination,
                text=self._text(factor.type, code, minutes),
                code=code,
            )
        except DeliveryError as exc:
            with self._db.write() as conn:
                if enrolling:  # nothing is left of an enrollment whose first code did not go
                    factors_repo.delete_factor(conn, factor.user_id, factor.id)
                details = {
                    "factor_id": factor.id,
                    "factor_type": factor.type.value,
                    "destination": shown,
                    "reason": exc.detail,
                }
                entry = AuditEntry(
                    event="fallback_code.send_failed",
                    outcome="failure",
                    user_id=factor.user_id,
                    details=details,
                )
                self._auditor.record(conn, entry, caller)
            raise
        expires_at = now + self.policy.code_ttl
        with self._db.write() as conn:
            stored = repo.store_code(
                conn,
                factor_id=factor.id,
                user_id=factor.user_id,
                destination=factor.destination,
                digest=digest,
                mac_key_id=key_id,
                now=now,
                expires_at=expires_at,
            )
            if not stored:
                raise FactorStateError("this factor was removed or changed while the code was sent")
            self._audit(conn, "fallback_code.sent", factor, caller, delivery=delivery)
            if also is not None:
                self._auditor.record(conn, also, caller)
        return SentCode(
            factor_id=factor.id,
            destination=shown or "",
            provider=delivery.provider,
            sent_at=now,
            expires_at=expires_at,
        )

    # -- identity evidence inside a recovery case (decision 0016) -----------------------------

    def send_for_recovery(
        self, user_id: str, factor_id: str | None, *, case_id: str, caller: Caller
    ) -> SentCode:
        """A code to the user's active, confirmed, usable email/SMS factor (the only one, or
        ``factor_id``) for an open recovery case: ``fallback_only`` does not stop it (the case is
        why), ``disabled`` does. Limits, storage and failures as :meth:`send`."""
        if self.policy.mode == "disabled":
            raise FallbackDisabledError("email and SMS codes are disabled on this server")
        now = self._clock.now()
        with self._db.read() as conn:
            if not users_repo.user_exists(conn, user_id):
                raise UserNotFoundError(user_id)
            records = factors_repo.list_factors(conn, user_id, now=now)
        usable = [
            r.factor
            for r in records
            if r.factor.type.fallback
            and r.factor.status is FactorStatus.ACTIVE
            and not r.factor.destination_unconfirmed
            and (r.factor.usable_after is None or r.factor.usable_after <= now)
        ]
        if factor_id is not None:
            named = [f for f in usable if f.id == factor_id]
            if not named:
                if not any(r.factor.id == factor_id for r in records):
                    raise FactorNotFoundError(factor_id)
                raise FactorStateError(
                    "this factor is not an active email or SMS factor with a confirmed, usable "
                    "destination"
                )
            factor = named[0]
        elif len(usable) == 1:
            factor = usable[0]
        elif not usable:
            raise FactorStateError(
                "this user has no active email or SMS factor with a confirmed, usable destination"
            )
        else:
            raise InvalidInputError(
                f"this user has {len(usable)} email/SMS factors: name one", field="factor_id"
            )
        also = AuditEntry(
            event="recovery.fallback_code_sent",
            user_id=user_id,
            details={
                "case_id": case_id,
                "factor_id": factor.id,
                "factor_type": factor.type.value,
                "destination": mask(factor.type, factor.destination),
            },
        )
        return self._send(factor, caller, now=now, also=also)

    def spend_for_recovery(
        self, unit: Unit, user_id: str, code: str, *, now: datetime
    ) -> LiveCode | None:
        """Spend ``code`` if it is the live code of one of the user's active email/SMS factors,
        whatever ``fallback_only`` says (the caller holds an open recovery case); not a sign-in."""
        if self.policy.mode == "disabled" or not (code.isascii() and code.isdigit()):
            return None
        if not 6 <= len(code) <= 8:
            return None
        for live, digest in self._match(repo.live_codes(unit, user_id, now=now), code):
            if repo.use_code(unit.write(), live.factor_id, digest=digest, now=now):
                return live
        return None

    # -- changing the destination -------------------------------------------------------------

    def change_destination(
        self,
        user_id: str,
        factor_id: str,
        *,
        destination: str,
        caller: Caller = SYSTEM,
        assurance: Assurance = NO_ASSURANCE,
    ) -> Factor:
        """Point an email or SMS factor at a new destination: a sensitive change (step-up), told
        to the old destination first; the new one receives no code for the waiting period, then
        signs in only once a code sent there was confirmed (:meth:`confirm`)."""
        now = self._clock.now()
        factor = self._get(user_id, factor_id)
        sender = self._sender(factor.type)
        new = self._normalise(factor.type, destination)
        if factor.status is FactorStatus.LOST:
            raise FactorStateError("this factor is marked lost")
        if new == factor.destination:
            raise InvalidInputError(
                "this is the factor's destination already", field=_field(factor.type)
            )
        old = factor.destination
        assert old is not None
        usable_after = now + self.policy.destination_wait
        with self._db.write() as conn:  # checked before the old destination is told anything
            self._assurance.require(
                conn,
                user_id,
                operation=Operation.CHANGE_DESTINATION,
                assurance=assurance,
                caller=caller,
            )
        sender.send(destination=old, text=self._notice(factor.type, new, usable_after), code="")
        with self._db.write() as conn:
            if not repo.change_destination(
                conn, user_id, factor_id, old=old, new=new, usable_after=usable_after
            ):
                raise FactorStateError("this factor was removed or changed in the meantime")
            if factor.status is FactorStatus.PENDING:
                factors_repo.update_factor(
                    conn, user_id, factor_id, expires_at=usable_after + self.policy.pending_ttl
                )
            details: dict[str, object] = {
                "factor_id": factor.id,
                "factor_type": factor.type.value,
                "old_destination": mask(factor.type, old),
                "destination": mask(factor.type, new),
                "usable_after": usable_after.isoformat(),
            }
            entry = AuditEntry(event="factor.destination_changed", user_id=user_id, details=details)
            self._auditor.record(conn, entry, caller)
        return self._get(user_id, factor_id)

    # -- the verify path ----------------------------------------------------------------------

    def accept(self, unit: Unit, user_id: str, code: str, *, now: datetime) -> Accepted:
        """Spend ``code`` if it is the live code of one of the user's active email/SMS factors,
        inside the verifying unit; refused (not spent) when the policy does not allow it."""
        if self.policy.mode == "disabled" or not 6 <= len(code) <= 8:
            return Accepted(factor=None)
        found = self._match(repo.live_codes(unit, user_id, now=now), code)
        if not found:
            return Accepted(factor=None)
        if self.policy.mode == "fallback_only" and repo.stronger_factor_exists(unit, user_id):
            return Accepted(factor=None, refused=True)
        for live, digest in found:
            if repo.use_code(unit.write(), live.factor_id, digest=digest, now=now):
                return Accepted(factor=live)
        return Accepted(factor=None)

    # -- helpers ------------------------------------------------------------------------------

    def _match(self, codes: list[LiveCode], code: str) -> list[tuple[LiveCode, bytes]]:
        """The live codes ``code`` is, with the digest to spend each by (constant-time)."""
        found = []
        for live in codes:
            try:
                digest = self._keyring.mac_with(
                    live.mac_key_id, _LABEL, _mac_input(live.factor_id, code)
                )
            except UnknownKeyError:
                continue
            if hmac.compare_digest(digest, live.digest):
                found.append((live, digest))
        return found

    def _sender(self, type: FactorType) -> CodeSender:
        if not type.fallback:
            raise FactorStateError("only email and SMS factors are sent codes")
        if self.policy.mode == "disabled":
            raise FallbackDisabledError("email and SMS codes are disabled on this server")
        sender = self._senders.sms if type is FactorType.SMS else self._senders.email
        if sender is None:
            what = "SMS provider (sms_provider)" if type is FactorType.SMS else "SMTP server"
            raise FallbackDisabledError(f"this server has no {what} for {type.value} codes")
        return sender

    def _normalise(self, type: FactorType, destination: str) -> str:
        try:
            if type is FactorType.SMS:
                return normalize_phone(destination, default_region=self.policy.default_region)
            return normalize_email(destination)
        except ContactError as exc:
            raise InvalidInputError(str(exc), field=_field(type)) from None

    def _limit(self, factor: Factor) -> None:
        now = self._clock.now()
        decision = self._limiter.hit(
            f"fallback-send:user:{factor.user_id}", self.policy.per_user, now=now
        )
        if not decision.allowed:
            raise SendLimitedError("user", decision.retry_after)
        _, digest = self._keyring.mac(_DESTINATION_LABEL, (factor.destination or "").encode())
        decision = self._limiter.hit(
            f"fallback-send:to:{digest.hex()[:32]}", self.policy.per_destination, now=now
        )
        if not decision.allowed:
            raise SendLimitedError("phone number or address", decision.retry_after)

    def _text(self, type: FactorType, code: str, minutes: int) -> str:
        if type is FactorType.SMS:
            return webotp_sms(
                code=code,
                origin_host=self.policy.origin_host,
                app_name=self.policy.app_name,
                minutes=minutes,
            )
        unit = "minute" if minutes == 1 else "minutes"
        return (
            f"Your {self.policy.app_name} code is {code}. It expires in {minutes} {unit}.\n\n"
            "If you did not ask for it, someone may be trying to sign in as you: do not share "
            "it, and consider changing your password."
        )

    def _notice(self, type: FactorType, new: str, usable_after: datetime) -> str:
        what = "phone number" if type is FactorType.SMS else "email address"
        return (
            f"{self.policy.app_name}: your sign-in codes will go to a new {what}, "
            f"{mask(type, new)}, from {usable_after:%d %b %Y %H:%M} UTC. If you did not ask for "
            "this, sign in and contact your administrator or support team now."
        )

    def _audit(
        self,
        conn: Connection,
        event: str,
        factor: Factor,
        caller: Caller,
        *,
        delivery: Delivery | None = None,
        waits_until: datetime | None = None,
    ) -> None:
        details: dict[str, object] = {
            "factor_id": factor.id,
            "factor_type": factor.type.value,
            "destination": mask(factor.type, factor.destination),
        }
        if delivery is not None:
            details["provider"] = delivery.provider
        if waits_until is not None:
            details["usable_after"] = waits_until.isoformat()
        entry = AuditEntry(event=event, user_id=factor.user_id, details=details)
        self._auditor.record(conn, entry, caller)

    def _get(self, user_id: str, factor_id: str) -> Factor:
        with self._db.read() as conn:
            record = factors_repo.get_factor(conn, user_id, factor_id)
            if record is None:
                if not users_repo.user_exists(conn, user_id):
                    raise UserNotFoundError(user_id)
                raise FactorNotFoundError(factor_id)
        return record.factor


def _mac_input(factor_id: str, code: str) -> bytes:
    return f"{factor_id}:{code}".encode("ascii")


def _field(type: FactorType) -> str:
    return "phone" if type is FactorType.SMS else "address"
