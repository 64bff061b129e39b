"""Recovery: helpdesk cases (admin scope; operators' personal tokens), the user's side through the
application (manage scope): redeeming a temporary access pass, cancelling, trusted contacts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta

from fastapi import APIRouter, Header, Query, status

from sparekey.api.assurance import Assured
from sparekey.api.deps import AdminKey, App, ManageKey, caller_of
from sparekey.api.schemas import (
    CaseCreate,
    CaseIdPath,
    CodeBody,
    CompleteBody,
    CompletedOut,
    ContactApprovalBody,
    ContactsBody,
    ContactsOut,
    EvidenceBody,
    FallbackCheckOut,
    FallbackCodeBody,
    PassBody,
    PassOut,
    ReasonBody,
    RecoveryCaseList,
    RecoveryCaseOut,
    RedeemBody,
    RedeemOut,
    SentCodeOut,
    UserIdPath,
)
from sparekey.domain.models import ApiKey, CaseState, RecoveryCase

router = APIRouter(tags=["recovery"])
CASES = "/v1/recovery/cases"


@router.post(CASES, status_code=status.HTTP_201_CREATED, response_model=RecoveryCaseOut)
def open_case(body: CaseCreate, app: App, key: AdminKey) -> RecoveryCaseOut:
    """Open a recovery case for a user who has no working factor (one open case per user)."""
    case = app.recovery.request(
        body.user_id,
        reason=body.reason,
        approval=body.approval,
        caller=caller_of(key, body.context),
    )
    return RecoveryCaseOut.of(case)


@router.get(CASES, response_model=RecoveryCaseList)
def list_cases(
    app: App,
    key: AdminKey,
    state: CaseState | None = Query(default=None),  # noqa: B008
    user_id: str | None = Query(default=None, max_length=128),
) -> RecoveryCaseList:
    """The queue: newest first, filtered by state or user."""
    cases = app.recovery.cases(state=state, user_id=user_id)
    return RecoveryCaseList(cases=[RecoveryCaseOut.of(c) for c in cases])


@router.get(CASES + "/{case_id}", response_model=RecoveryCaseOut)
def get_case(case_id: CaseIdPath, app: App, key: AdminKey) -> RecoveryCaseOut:
    return RecoveryCaseOut.of(app.recovery.get(case_id))


@router.post(CASES + "/{case_id}/identity", response_model=RecoveryCaseOut)
def verify_identity(
    case_id: CaseIdPath, body: EvidenceBody, app: App, key: AdminKey
) -> RecoveryCaseOut:
    """An operator records the evidence they checked (`recovery_checklist`)."""
    caller = caller_of(key, body.context)
    return RecoveryCaseOut.of(
        app.recovery.verify_identity(case_id, evidence=body.evidence, caller=caller)
    )


@router.post(CASES + "/{case_id}/fallback-code", response_model=SentCodeOut)
def send_fallback_code(
    case_id: CaseIdPath, body: FallbackCodeBody, app: App, key: AdminKey
) -> SentCodeOut:
    """Before identity is verified: a code to the user's email/SMS factor (the only one, or
    `factor_id`), even under `fallback_only`; never when `fallback_channels` is `disabled`."""
    caller = caller_of(key, body.context)
    sent = app.recovery.send_fallback_code(case_id, factor_id=body.factor_id, caller=caller)
    return SentCodeOut(**asdict(sent))


@router.post(
    CASES + "/{case_id}/fallback-code/check",
    response_model=FallbackCheckOut,
    response_model_exclude_unset=True,
)
def check_fallback_code(
    case_id: CaseIdPath, body: CodeBody, app: App, key: AdminKey
) -> FallbackCheckOut:
    """Spend the code the user reads out: single use, throttled, not a sign-in (the case stays
    open). Right: the case records it (`fallback_code` evidence); wrong: `{"verified": false}`."""
    caller = caller_of(key, body.context)
    case = app.recovery.check_fallback_code(case_id, code=body.code, caller=caller)
    if case is None:
        return FallbackCheckOut(verified=False)
    return FallbackCheckOut(verified=True, case=RecoveryCaseOut.of(case))


@router.post(CASES + "/{case_id}/approve", response_model=RecoveryCaseOut)
def approve(case_id: CaseIdPath, app: App, key: AdminKey) -> RecoveryCaseOut:
    """An admin operator approves; never the requester or the verifier. The last approval
    needed starts the waiting period."""
    return RecoveryCaseOut.of(app.recovery.approve(case_id, caller=caller_of(key, None)))


@router.post(CASES + "/{case_id}/contact-approvals", response_model=RecoveryCaseOut)
def approve_as_contact(
    case_id: CaseIdPath,
    body: ContactApprovalBody,
    app: App,
    key: ManageKey,
    sparekey_assurance: str | None = Header(default=None),
) -> RecoveryCaseOut:
    """A trusted contact approves, with their own assurance token from a fresh verification."""
    decide = app.recovery.approve_as_contact
    return _contact_decision(decide, case_id, body, key, sparekey_assurance)


@router.post(CASES + "/{case_id}/contact-denials", response_model=RecoveryCaseOut)
def deny_as_contact(
    case_id: CaseIdPath,
    body: ContactApprovalBody,
    app: App,
    key: ManageKey,
    sparekey_assurance: str | None = Header(default=None),
) -> RecoveryCaseOut:
    """A trusted contact refuses (they did not hear from the user): the case is denied."""
    decide = app.recovery.deny_as_contact
    return _contact_decision(decide, case_id, body, key, sparekey_assurance)


def _contact_decision(
    decide: Callable[..., RecoveryCase],
    case_id: str,
    body: ContactApprovalBody,
    key: ApiKey,
    assurance_token: str | None,
) -> RecoveryCaseOut:
    case = decide(
        case_id,
        contact_id=body.contact_id,
        assurance_token=assurance_token,
        caller=caller_of(key, body.context),
    )
    return RecoveryCaseOut.of(case)


@router.post(CASES + "/{case_id}/deny", response_model=RecoveryCaseOut)
def deny(case_id: CaseIdPath, body: ReasonBody, app: App, key: AdminKey) -> RecoveryCaseOut:
    caller = caller_of(key, body.context)
    return RecoveryCaseOut.of(app.recovery.deny(case_id, reason=body.reason, caller=caller))


@router.post(CASES + "/{case_id}/cancel", response_model=RecoveryCaseOut)
def cancel(case_id: CaseIdPath, body: ReasonBody, app: App, key: AdminKey) -> RecoveryCaseOut:
    caller = caller_of(key, body.context)
    return RecoveryCaseOut.of(app.recovery.cancel(case_id, reason=body.reason, caller=caller))


@router.post(CASES + "/{case_id}/pass", response_model=PassOut)
def issue_pass(case_id: CaseIdPath, body: PassBody, app: App, key: AdminKey) -> PassOut:
    """The temporary access pass of a ready case: shown once, single use."""
    lifetime = timedelta(seconds=body.lifetime_seconds) if body.lifetime_seconds else None
    issued = app.recovery.issue_pass(
        case_id, lifetime=lifetime, caller=caller_of(key, body.context)
    )
    return PassOut(
        case=RecoveryCaseOut.of(issued.case),
        access_pass=issued.access_pass,
        expires_at=issued.expires_at,
    )


@router.post(CASES + "/{case_id}/complete", response_model=CompletedOut)
def complete(case_id: CaseIdPath, body: CompleteBody, app: App, key: AdminKey) -> CompletedOut:
    """Keep or revoke every earlier factor; regenerates the backup codes (shown once)."""
    done = app.recovery.complete(
        case_id, decisions=body.factors, caller=caller_of(key, body.context)
    )
    return CompletedOut(
        case=RecoveryCaseOut.of(done.case),
        revoked=done.revoked,
        backup_codes=done.backup_codes.codes,
    )


@router.post("/v1/users/{user_id}/temporary-access/redeem", response_model=RedeemOut)
def redeem(user_id: UserIdPath, body: RedeemBody, app: App, key: ManageKey) -> RedeemOut:
    """Exchange the user's temporary access pass for an enrollment-only token (once)."""
    redeemed = app.recovery.redeem(user_id, body.access_pass, caller=caller_of(key, body.context))
    return RedeemOut(
        case_id=redeemed.case_id,
        enrollment_token=redeemed.enrollment_token,
        expires_at=redeemed.expires_at,
    )


@router.post("/v1/users/{user_id}/recovery/cancel", response_model=RecoveryCaseOut)
def cancel_mine(user_id: UserIdPath, body: ReasonBody, app: App, key: ManageKey) -> RecoveryCaseOut:
    """The real user stops a recovery of their account (through the application)."""
    case = app.recovery.cancel_for_user(
        user_id, reason=body.reason, caller=caller_of(key, body.context)
    )
    return RecoveryCaseOut.of(case)


@router.get("/v1/users/{user_id}/trusted-contacts", response_model=ContactsOut)
def get_contacts(user_id: UserIdPath, app: App, key: ManageKey) -> ContactsOut:
    return ContactsOut(contacts=app.recovery.contacts(user_id))


@router.put("/v1/users/{user_id}/trusted-contacts", response_model=ContactsOut)
def set_contacts(
    user_id: UserIdPath, body: ContactsBody, app: App, key: ManageKey, assurance: Assured
) -> ContactsOut:
    """Name 2 to 5 other users (or none). A sensitive change: while the user has an active
    factor it needs `Sparekey-Assurance`."""
    chosen = app.recovery.set_contacts(
        user_id, body.contacts, caller=caller_of(key, body.context), assurance=assurance
    )
    return ContactsOut(contacts=chosen)
