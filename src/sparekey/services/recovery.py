"""Helpdesk recovery for a user who has no working factor: verified, approved by someone else,
delayed, visible to the real user, and audited.

::

    requested ─▶ identity_verified ─▶ approved ─▶ waiting ─▶ ready ─▶ completed
        │               │                           │          │
        └───────────────┴────── denied / cancelled / expired ──┘

- ``identity_verified``: an operator records which evidence from the checklist they checked.
- ``approved``: N admins (``recovery_admin_approvals``) who are neither the requester nor the
  verifier; or, for a case opened with ``approval="contacts"``, M of the user's trusted contacts,
  each with a fresh second-factor verification of their own. Approval starts the waiting period at
  once (state ``waiting``), and the user is told on every channel; the user cancels by signing in
  with any working factor, or through the application.
- ``ready``: the wait is over; an operator issues a temporary access pass (100 bits, shown once,
  single use, an hour by default and 8 hours at most). Redeeming it gives an enrollment-only token:
  it adds a factor and does nothing else. ``verify`` never accepts a pass.
- ``completed``: every old factor kept or revoked explicitly, the backup codes regenerated.

Every transition is one conditional UPDATE on the case's state (of two racing, one wins; an
illegal one is refused with 409), audited and notified in the same transaction. Time-driven moves
(``waiting`` → ``ready``, an open case past its lifetime → ``expired``) happen when the case is
next read or acted on, and are recorded then.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from sparekey.crashpoints import crashpoint
from sparekey.crypto.keyring import Keyring
from sparekey.domain.errors import (
    CaseNotFoundError,
    ConflictError,
    FallbackDisabledError,
    FallbackEvidenceMissingError,
    InvalidInputError,
    PermissionDeniedError,
    RecoveryStateError,
    UserNotFoundError,
)
from sparekey.domain.models import (
    SYSTEM,
    BackupCodeSet,
    Caller,
    CaseState,
    FactorStatus,
    OperatorRole,
    RecoveryCase,
)
from sparekey.domain.ports import Clock
from sparekey.protocols import backup_codes as codes
from sparekey.services._ids import new_id
from sparekey.services.assurance import NO_ASSURANCE, Assurance, AssuranceService, Operation
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.storage import factors as factors_repo
from sparekey.storage import recovery as repo
from sparekey.storage import users as users_repo
from sparekey.storage.database import Database
from sparekey.storage.prepared import Unit

if TYPE_CHECKING:
    from sparekey.services.fallback import FallbackService, SentCode
    from sparekey.services.throttle import Throttle

__all__ = [
    "BackupCodeIssuer",
    "IssuedPass",
    "RecoveryPolicy",
    "RecoveryService",
]

FALLBACK_EVIDENCE = "fallback_code"  # the checklist item an email/SMS code inside the case backs

PASS_LENGTH = 20  # Crockford base32 characters: 100 bits
_PASS_LABEL = "temporary-access-pass"  # noqa: S105 (a MAC domain label)
Approval = Literal["admins", "contacts"]


class BackupCodeIssuer(Protocol):
    def regenerate(
        self, user_id: str, *, caller: Caller = SYSTEM, conn: Connection | None = None
    ) -> BackupCodeSet: ...


@dataclass(frozen=True, kw_only=True)
class RecoveryPolicy:
    checklist: tuple[str, ...]
    min_evidence: int = 2
    admin_approvals: int = 1
    contact_approvals: int = 2
    waiting: timedelta = timedelta(hours=24)
    case_lifetime: timedelta = timedelta(days=7)
    pass_lifetime: timedelta = timedelta(hours=1)
    pass_lifetime_max: timedelta = timedelta(hours=8)
    enrollment_lifetime: timedelta = timedelta(hours=1)
    min_contacts: int = 2
    max_contacts: int = 5


@dataclass(frozen=True, kw_only=True)
class IssuedPass:
    case: RecoveryCase
    access_pass: str  # shown once
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class Redeemed:
    case_id: str
    enrollment_token: str
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class Completed:
    case: RecoveryCase
    backup_codes: BackupCodeSet
    revoked: list[str]


_OPERATOR_ROLES = {OperatorRole.ADMIN.value, OperatorRole.HELPDESK.value}


class RecoveryService:
    def __init__(
        self,
        *,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        auditor: Auditor,
        policy: RecoveryPolicy,
        assurance: AssuranceService,
        backup_codes: BackupCodeIssuer,
        fallback: FallbackService | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self._fallback = fallback
        self._throttle = throttle
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._auditor = auditor
        self.policy = policy
        self._assurance = assurance
        self._backup_codes = backup_codes

    # -- reading ----------------------------------------------------------------------------

    def get(self, case_id: str) -> RecoveryCase:
        with self._db.write() as conn:
            return self._current(conn, case_id, SYSTEM)

    def cases(
        self, *, state: CaseState | None = None, user_id: str | None = None
    ) -> list[RecoveryCase]:
        with self._db.write() as conn:
            cases = repo.list_cases(
                conn, state=None if state is None else state.value, user_id=user_id
            )
            refreshed = [self._refresh(conn, case, SYSTEM) for case in cases]
        return [c for c in refreshed if state is None or c.state is state]

    # -- the steps ------------------------------------------------------------------------------

    def request(
        self,
        user_id: str,
        *,
        reason: str | None = None,
        approval: Approval = "admins",
        caller: Caller = SYSTEM,
    ) -> RecoveryCase:
        """Open a case; a user has at most one open case."""
        now = self._clock.now()
        with self._db.write() as conn:
            if not users_repo.user_exists(conn, user_id):
                raise UserNotFoundError(user_id)
            existing = repo.open_case_of(conn, user_id)
            if existing is not None and self._refresh(conn, existing, caller).state.open:
                raise RecoveryStateError(f"user {user_id!r} already has an open case {existing.id}")
            needed = self.policy.admin_approvals
            if approval == "contacts":
                contacts = repo.contacts_of(conn, user_id)
                needed = self.policy.contact_approvals
                if len(contacts) < needed:
                    raise RecoveryStateError(
                        f"user {user_id!r} has {len(contacts)} trusted contacts; "
                        f"{needed} must approve"
                    )
            case = RecoveryCase(
                id=new_id("rc"),
                user_id=user_id,
                state=CaseState.REQUESTED,
                approval=approval,
                approvals_needed=needed,
                approvals=(),
                reason=reason,
                requested_by=caller.label,
                created_at=now,
                updated_at=now,
                evidence=(),
                verified_by=None,
                waiting_until=None,
                pass_expires_at=None,
                pass_redeemed_at=None,
                closed_at=None,
                closed_by=None,
                close_reason=None,
            )
            repo.insert_case(conn, case)
            self._record(conn, case, "recovery.requested", caller, approval=approval)
        return case

    def verify_identity(
        self, case_id: str, *, evidence: Sequence[str], caller: Caller
    ) -> RecoveryCase:
        """An operator records which evidence they checked (items of the configured checklist)."""
        self._require_operator(caller, _OPERATOR_ROLES, "verify a user's identity")
        checked = tuple(dict.fromkeys(evidence))
        unknown = [item for item in checked if item not in self.policy.checklist]
        if unknown:
            raise InvalidInputError(
                f"not on the checklist: {', '.join(unknown)}; "
                f"use {', '.join(self.policy.checklist)}",
                field="evidence",
            )
        if len(checked) < self.policy.min_evidence:
            raise InvalidInputError(
                f"check at least {self.policy.min_evidence} items of the checklist",
                field="evidence",
            )
        with self._db.write() as conn:
            case = self._current(conn, case_id, caller, lock=True)
            if FALLBACK_EVIDENCE in checked and case.fallback_verified_at is None:
                raise FallbackEvidenceMissingError()
            self._move(
                conn,
                case,
                CaseState.IDENTITY_VERIFIED,
                caller,
                expected=CaseState.REQUESTED,
                evidence=checked,
                verified_by=caller.label,
            )
            crashpoint("recovery.before_commit")
            return self._current(conn, case_id, caller)

    def send_fallback_code(
        self, case_id: str, *, factor_id: str | None, caller: Caller
    ) -> SentCode:
        """Before identity is verified, a code to the user's email/SMS factor, as evidence that
        they hold its destination; ``fallback_only`` does not stop it, ``disabled`` does."""
        self._require_operator(caller, _OPERATOR_ROLES, "send a code inside a recovery case")
        fallback = self._require_fallback()
        with self._db.write() as conn:
            case = self._requested(conn, case_id, caller)
        return fallback.send_for_recovery(case.user_id, factor_id, case_id=case.id, caller=caller)

    def check_fallback_code(
        self, case_id: str, *, code: str, caller: Caller
    ) -> RecoveryCase | None:
        """Spend a code sent inside the case: the updated case when it was right, None when not.
        Not a sign-in (the case stays open, no assurance token); a wrong code counts against the
        user's throttle as any guess does."""
        self._require_operator(caller, _OPERATOR_ROLES, "check a code inside a recovery case")
        fallback = self._require_fallback()
        throttle = self._throttle
        assert throttle is not None
        with self._db.write() as conn:
            case = self._requested(conn, case_id, caller)
        now = self._clock.now()
        text = code.strip()
        with self._db.unit() as unit:
            state = factors_repo.verify_state(unit, case.user_id, now=now)
            if state is None:
                raise CaseNotFoundError(case_id)
            throttle.check(state.throttle, now=now)
            spent = fallback.spend_for_recovery(unit, case.user_id, text, now=now)
            if spent is None:
                engaged = throttle.fail(unit, case.user_id, now=now)
                if engaged is not None:
                    until = engaged.locked_until.isoformat() if engaged.locked_until else None
                    details = {
                        "failures": engaged.failures,
                        "locked_until": until,
                        "suspended": engaged.suspended_at is not None,
                    }
                    entry = AuditEntry(
                        event="throttle.engaged",
                        outcome="failure",
                        user_id=case.user_id,
                        details=details,
                    )
                    self._auditor.record(unit, entry, caller)
                failed = AuditEntry(
                    event="recovery.fallback_code_failed",
                    outcome="failure",
                    user_id=case.user_id,
                    details={"case_id": case.id},
                )
                self._auditor.record(unit.write(), failed, caller)
                return None
            throttle.succeed(unit, case.user_id, now=now)
            if not repo.record_fallback_evidence(unit, case.id, spent.factor_id, now=now):
                raise RecoveryStateError("the case is no longer requested; reload it and try again")
            entry = AuditEntry(
                event="recovery.fallback_code_verified",
                user_id=case.user_id,
                details={
                    "case_id": case.id,
                    "factor_id": spent.factor_id,
                    "factor_type": spent.factor_type.value,
                },
            )
            self._auditor.record(unit, entry, caller)
        return self.get(case_id)

    def _requested(self, conn: Connection, case_id: str, caller: Caller) -> RecoveryCase:
        case = self._current(conn, case_id, caller)
        if case.state is not CaseState.REQUESTED:
            raise RecoveryStateError(
                f"the case is {case.state.value}; codes are sent and checked only before the "
                "identity is verified"
            )
        return case

    def _require_fallback(self) -> FallbackService:
        if self._fallback is None or self._throttle is None:
            raise FallbackDisabledError("email and SMS codes are not available on this server")
        return self._fallback

    def approve(self, case_id: str, *, caller: Caller) -> RecoveryCase:
        """An admin's approval: never the requester's or the verifier's own."""
        self._require_operator(caller, {OperatorRole.ADMIN.value}, "approve a recovery")
        with self._db.write() as conn:
            case = self._current(conn, case_id, caller, lock=True)
            if case.approval != "admins":
                raise RecoveryStateError("this case is approved by the user's trusted contacts")
            if case.state is not CaseState.IDENTITY_VERIFIED:
                raise RecoveryStateError(
                    f"the case is {case.state.value}; only a case whose identity was verified "
                    "can be approved"
                )
            if caller.label in (case.requested_by, case.verified_by):
                raise PermissionDeniedError(
                    "four eyes: whoever requested the case or verified the identity cannot "
                    "approve it"
                )
            return self._add_approval(conn, case, caller.label, caller)

    def approve_as_contact(
        self, case_id: str, *, contact_id: str, assurance_token: str | None, caller: Caller
    ) -> RecoveryCase:
        """A trusted contact's approval, with a fresh second-factor verification of their own."""
        with self._db.write() as conn:
            case = self._contact_case(conn, case_id, contact_id, assurance_token, caller)
            return self._add_approval(conn, case, f"contact:{contact_id}", caller)

    def deny_as_contact(
        self, case_id: str, *, contact_id: str, assurance_token: str | None, caller: Caller
    ) -> RecoveryCase:
        """A trusted contact says no (they did not hear from the user): the case is denied."""
        now = self._clock.now()
        with self._db.write() as conn:
            case = self._contact_case(conn, case_id, contact_id, assurance_token, caller)
            self._move(
                conn,
                case,
                CaseState.DENIED,
                caller,
                expected=case.state,
                closed_at=now,
                closed_by=f"contact:{contact_id}",
                close_reason=f"denied by trusted contact {contact_id}",
            )
            return self._current(conn, case_id, caller)

    def _contact_case(
        self,
        conn: Connection,
        case_id: str,
        contact_id: str,
        assurance_token: str | None,
        caller: Caller,
    ) -> RecoveryCase:
        """The case a trusted contact may decide on, after their own fresh verification."""
        if not assurance_token:
            raise PermissionDeniedError(
                "a contact decides with a fresh verification: send their assurance token"
            )
        self._assurance.check(assurance_token, user_id=contact_id, purpose="step-up")
        case = self._current(conn, case_id, caller, lock=True)
        if case.approval != "contacts":
            raise RecoveryStateError("this case is approved by admins, not contacts")
        if case.state not in (CaseState.REQUESTED, CaseState.IDENTITY_VERIFIED):
            raise RecoveryStateError(f"the case is {case.state.value}; it takes no decisions")
        if contact_id not in repo.contacts_of(conn, case.user_id):
            raise PermissionDeniedError(f"{contact_id!r} is not a trusted contact of this user")
        return case

    def _add_approval(
        self, conn: Connection, case: RecoveryCase, approver: str, caller: Caller
    ) -> RecoveryCase:
        now = self._clock.now()
        if approver in case.approvals:
            raise ConflictError("this approval was already given")
        try:
            count = repo.add_approval(conn, case.id, approver, now=now)
        except IntegrityError:
            raise ConflictError("this approval was already given") from None
        self._record(conn, case, "recovery.approval_given", caller, approver=approver, count=count)
        if count >= case.approvals_needed:
            until = now + self.policy.waiting
            self._move(
                conn, case, CaseState.WAITING, caller, expected=case.state, waiting_until=until
            )
            self._record(conn, case, "recovery.started", caller, waiting_until=until.isoformat())
        crashpoint("recovery.before_commit")
        return self._current(conn, case.id, caller)

    def deny(self, case_id: str, *, reason: str | None, caller: Caller) -> RecoveryCase:
        self._require_operator(caller, {OperatorRole.ADMIN.value}, "deny a recovery")
        return self._close(case_id, CaseState.DENIED, reason, caller)

    def cancel(self, case_id: str, *, reason: str | None, caller: Caller) -> RecoveryCase:
        """An operator, or the user through the application, stops a case for good."""
        return self._close(case_id, CaseState.CANCELLED, reason, caller)

    def cancel_for_user(self, user_id: str, *, reason: str | None, caller: Caller) -> RecoveryCase:
        """The real user says no (through the application)."""
        with self._db.read() as conn:
            case = repo.open_case_of(conn, user_id)
        if case is None:
            raise CaseNotFoundError(f"open case of {user_id}")
        return self._close(case.id, CaseState.CANCELLED, reason or "cancelled by the user", caller)

    def cancel_on_sign_in(self, unit: Unit, user_id: str, caller: Caller) -> None:
        """Inside the transaction of a successful sign-in: the user has a working factor, so an
        open case of theirs is not needed (unless its pass was redeemed: that is the user's own
        recovery under way). Audited and notified like any cancellation."""
        now = self._clock.now()
        for case_id in repo.cancel_on_sign_in(unit, user_id, now=now, by=caller.label):
            entry = AuditEntry(
                event="recovery.cancelled",
                user_id=user_id,
                details={"case_id": case_id, "why": "the user signed in"},
            )
            self._auditor.record(unit, entry, caller)

    def _close(
        self, case_id: str, state: CaseState, reason: str | None, caller: Caller
    ) -> RecoveryCase:
        now = self._clock.now()
        with self._db.write() as conn:
            case = self._current(conn, case_id, caller, lock=True)
            if not case.state.open or (case.state is CaseState.READY and case.pass_redeemed_at):
                raise RecoveryStateError(f"the case is {case.state.value}; it cannot be {state}")
            self._move(
                conn,
                case,
                state,
                caller,
                expected=case.state,
                closed_at=now,
                closed_by=caller.label,
                close_reason=(reason or "")[:500] or None,
            )
            crashpoint("recovery.before_commit")
            return self._current(conn, case_id, caller)

    def issue_pass(
        self, case_id: str, *, lifetime: timedelta | None = None, caller: Caller
    ) -> IssuedPass:
        """The temporary access pass of a ready case, shown once; issuing again replaces an
        unredeemed one."""
        self._require_operator(caller, _OPERATOR_ROLES, "issue a temporary access pass")
        return self._issue(case_id, lifetime, caller)

    def _issue(self, case_id: str, lifetime: timedelta | None, caller: Caller) -> IssuedPass:
        lifetime = lifetime or self.policy.pass_lifetime
        if not timedelta(minutes=5) <= lifetime <= self.policy.pass_lifetime_max:
            raise InvalidInputError(
                f"a pass lives between 5 minutes and {self.policy.pass_lifetime_max}",
                field="lifetime_seconds",
            )
        secret = codes.generate(PASS_LENGTH)
        key_id, digest = self._keyring.mac(_PASS_LABEL, secret.encode("ascii"))
        now = self._clock.now()
        with self._db.write() as conn:
            case = self._current(conn, case_id, caller, lock=True)
            if case.state is not CaseState.READY:
                raise RecoveryStateError(
                    f"the case is {case.state.value}; a pass is issued once it is ready"
                )
            if case.pass_redeemed_at is not None:
                raise RecoveryStateError("this case's pass was already redeemed")
            self._move(
                conn,
                case,
                CaseState.READY,
                caller,
                expected=CaseState.READY,
                event="recovery.pass_issued",
                pass_digest=digest,
                pass_mac_key_id=key_id,
                pass_expires_at=now + lifetime,
            )
            issued = self._current(conn, case_id, caller)
        return IssuedPass(
            case=issued, access_pass=codes.format_code(secret), expires_at=now + lifetime
        )

    def break_glass(self, user_id: str, *, reason: str, caller: Caller) -> IssuedPass:
        """With access to the server: a case that skips approval and waiting, loudly audited and
        notified. For when no second admin exists (the last admin lost their factor)."""
        if not reason.strip():
            raise InvalidInputError("say why the glass is broken", field="reason")
        case = self.request(user_id, reason=reason, caller=caller)
        now = self._clock.now()
        with self._db.write() as conn:
            self._record(conn, case, "recovery.break_glass", caller, reason=reason[:500])
            if not repo.transition(
                conn, case.id, expected=CaseState.REQUESTED, now=now, state=CaseState.READY
            ):
                raise RecoveryStateError("the case changed meanwhile")
            self._record(conn, case, "recovery.ready", caller)
        return self._issue(case.id, None, caller)

    def redeem(self, user_id: str, access_pass: str, *, caller: Caller) -> Redeemed:
        """Exchange the user's pass for an enrollment-only token (once; parallel attempts: one)."""
        canonical = codes.normalize(access_pass, length=PASS_LENGTH)
        now = self._clock.now()
        with self._db.write() as conn:
            case = repo.open_case_of(conn, user_id)
            case = None if case is None else self._refresh(conn, case, caller)
            stored = None if case is None else repo.stored_pass(conn, case.id)
            ok = False
            if case is not None and stored is not None and canonical is not None:
                digest = self._keyring.mac_with(
                    stored.mac_key_id, _PASS_LABEL, canonical.encode("ascii")
                )
                ok = hmac.compare_digest(digest, stored.digest) and repo.redeem_pass(
                    conn, case.id, digest, now=now
                )
            if case is None or not ok:
                entry = AuditEntry(
                    event="recovery.pass_refused",
                    outcome="failure",
                    user_id=user_id if users_repo.user_exists(conn, user_id) else None,
                    details={"case_id": case.id if case else None},
                )
                self._auditor.record(conn, entry, caller)
            else:  # audited with the redemption itself: a crash cannot leave one without the other
                self._record(conn, case, "recovery.pass_redeemed", caller)
                crashpoint("recovery.before_commit")
        crashpoint("recovery.committed")
        if case is None or not ok:
            raise PermissionDeniedError(
                "this temporary access pass is not valid (wrong, expired or already used)"
            )
        token = self._assurance.issue(
            user_id, purpose="enroll", ttl=self.policy.enrollment_lifetime, case_id=case.id
        )
        return Redeemed(
            case_id=case.id,
            enrollment_token=token,
            expires_at=now + self.policy.enrollment_lifetime,
        )

    def complete(
        self, case_id: str, *, decisions: Mapping[str, Literal["keep", "revoke"]], caller: Caller
    ) -> Completed:
        """Close a redeemed case: a new factor must be active; every factor older than the
        redemption is kept or revoked explicitly; the backup codes are regenerated."""
        now = self._clock.now()
        with self._db.write() as conn:
            case = self._current(conn, case_id, caller, lock=True)
            if case.state is not CaseState.READY or case.pass_redeemed_at is None:
                raise RecoveryStateError(
                    f"the case is {case.state.value}; it completes after its pass was redeemed"
                )
            factors = factors_repo.list_factors(conn, case.user_id, now=now)
            redeemed = case.pass_redeemed_at
            new = [
                r.factor
                for r in factors
                if r.factor.created_at >= redeemed and r.factor.status is FactorStatus.ACTIVE
            ]
            old = [r.factor for r in factors if r.factor.created_at < redeemed]
            if not new:
                raise RecoveryStateError("enroll and confirm a new factor before completing")
            undecided = sorted(f.id for f in old if f.id not in decisions)
            if undecided:
                raise InvalidInputError(
                    f"decide keep or revoke for every earlier factor: {', '.join(undecided)}",
                    field="factors",
                )
            unknown = sorted(set(decisions) - {f.id for f in old})
            if unknown:
                raise InvalidInputError(
                    f"not an earlier factor of this user: {', '.join(unknown)}", field="factors"
                )
            revoked = sorted(fid for fid, d in decisions.items() if d == "revoke")
            for factor_id in revoked:
                factors_repo.delete_factor(conn, case.user_id, factor_id)
                entry = AuditEntry(
                    event="factor.removed",
                    user_id=case.user_id,
                    details={"factor_id": factor_id, "recovery_case": case.id},
                )
                self._auditor.record(conn, entry, caller)
            fresh = self._backup_codes.regenerate(case.user_id, caller=caller, conn=conn)
            self._move(
                conn,
                case,
                CaseState.COMPLETED,
                caller,
                expected=CaseState.READY,
                closed_at=now,
                closed_by=caller.label,
                details={"revoked": revoked, "kept": sorted(set(decisions) - set(revoked))},
            )
            done = self._current(conn, case_id, caller)
            crashpoint("recovery.before_commit")
        crashpoint("recovery.committed")
        return Completed(case=done, backup_codes=fresh, revoked=revoked)

    # -- trusted contacts -----------------------------------------------------------------------

    def contacts(self, user_id: str) -> list[str]:
        with self._db.read() as conn:
            if not users_repo.user_exists(conn, user_id):
                raise UserNotFoundError(user_id)
            return repo.contacts_of(conn, user_id)

    def contact_requests(self, contact_id: str) -> list[RecoveryCase]:
        """Open cases, approved by contacts, of the users who named ``contact_id``: what this
        contact may approve."""
        with self._db.write() as conn:
            found: list[RecoveryCase] = []
            for user_id in repo.users_naming(conn, contact_id):
                case = repo.open_case_of(conn, user_id)
                if case is not None and case.approval == "contacts":
                    found.append(self._refresh(conn, case, SYSTEM))
        return [c for c in found if c.state in (CaseState.REQUESTED, CaseState.IDENTITY_VERIFIED)]

    def set_contacts(
        self,
        user_id: str,
        contact_ids: Sequence[str],
        *,
        caller: Caller,
        assurance: Assurance = NO_ASSURANCE,
    ) -> list[str]:
        """A sensitive change: needs a step-up while the user has an active factor."""
        chosen = sorted(set(contact_ids))
        low, high = self.policy.min_contacts, self.policy.max_contacts
        if chosen and not low <= len(chosen) <= high:
            raise InvalidInputError(
                f"name between {low} and {high} trusted contacts (or none)", field="contacts"
            )
        if user_id in chosen:
            raise InvalidInputError("a user cannot be their own trusted contact", field="contacts")
        with self._db.write() as conn:
            if not users_repo.user_exists(conn, user_id):
                raise UserNotFoundError(user_id)
            self._assurance.require(
                conn,
                user_id,
                operation=Operation.CHANGE_CONTACTS,
                assurance=assurance,
                caller=caller,
            )
            missing = [c for c in chosen if not users_repo.user_exists(conn, c)]
            if missing:
                raise InvalidInputError(
                    f"not users of this deployment: {', '.join(missing)}", field="contacts"
                )
            repo.set_contacts(conn, user_id, chosen, now=self._clock.now())
            entry = AuditEntry(
                event="recovery.contacts_changed", user_id=user_id, details={"contacts": chosen}
            )
            self._auditor.record(conn, entry, caller)
        return chosen

    # -- internals ------------------------------------------------------------------------------

    def _current(
        self, conn: Connection, case_id: str, caller: Caller, *, lock: bool = False
    ) -> RecoveryCase:
        case = repo.get_case(conn, case_id, lock=lock)
        if case is None:
            raise CaseNotFoundError(case_id)
        return self._refresh(conn, case, caller)

    def _refresh(self, conn: Connection, case: RecoveryCase, caller: Caller) -> RecoveryCase:
        """Apply the moves time has made: the wait over, or the case past its lifetime. Of
        concurrent readers (on any nodes) one makes the move; the others read the case it left."""
        now = self._clock.now()
        if not case.state.open:
            return case
        try:
            if case.created_at + self.policy.case_lifetime <= now:
                self._move(
                    conn,
                    case,
                    CaseState.EXPIRED,
                    SYSTEM,
                    expected=case.state,
                    closed_at=now,
                    closed_by="system",
                    close_reason="not completed in time",
                )
                return replace(case, state=CaseState.EXPIRED, closed_at=now, closed_by="system")
            if case.state is CaseState.WAITING and case.waiting_until and case.waiting_until <= now:
                self._move(conn, case, CaseState.READY, SYSTEM, expected=CaseState.WAITING)
                return replace(case, state=CaseState.READY)
        except RecoveryStateError:  # another request moved it first: read what it committed
            moved = repo.get_case(conn, case.id)
            if moved is None:
                raise CaseNotFoundError(case.id) from None
            return self._refresh(conn, moved, caller)
        return case

    def _move(
        self,
        conn: Connection,
        case: RecoveryCase,
        state: CaseState,
        caller: Caller,
        *,
        expected: CaseState,
        event: str | None = None,
        details: Mapping[str, object] | None = None,
        **values: object,
    ) -> None:
        now = self._clock.now()
        if not repo.transition(conn, case.id, expected=expected, now=now, state=state, **values):
            raise RecoveryStateError(
                f"the case is no longer {expected.value}; reload it and try again"
            )
        crashpoint("recovery.state_updated")
        self._record(conn, case, event or f"recovery.{state.value}", caller, **(details or {}))

    def _record(
        self, conn: Connection, case: RecoveryCase, event: str, caller: Caller, **details: object
    ) -> None:
        entry = AuditEntry(
            event=event,
            outcome="success",
            user_id=case.user_id,
            details={"case_id": case.id, **details},
        )
        self._auditor.record(conn, entry, caller)

    @staticmethod
    def _require_operator(caller: Caller, roles: set[str], action: str) -> None:
        if caller.type != "operator" or caller.role not in roles:
            raise PermissionDeniedError(
                f"only an operator with the role {' or '.join(sorted(roles))} may {action}"
            )
