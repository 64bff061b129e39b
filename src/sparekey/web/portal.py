"""The self-service security page (``/portal``): a user's own factors, backup codes, readiness,
recovery, trusted contacts and the device tokens of their desktop authenticator. Every route calls
the services the API calls; nothing is decided here that the services do not decide.

Sensitive changes take the session's step-up (the assurance token of a fresh verification on
``/portal/step-up``, kept in the session row); a change refused for want of one sends the user to
the step-up page and back.
"""

from __future__ import annotations

import re
import shlex
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from sparekey.domain.errors import (
    AssuranceRequiredError,
    AuthenticationError,
    CodeRejectedError,
    FactorExpiredError,
    SparekeyError,
)
from sparekey.domain.models import FactorStatus, FactorType
from sparekey.protocols.otpauth import b32encode
from sparekey.runtime import Sparekey
from sparekey.services.assurance import Assurance
from sparekey.services.sessions import WebSession
from sparekey.web.csrf import PortalForm, PortalJson
from sparekey.web.forms import (
    factor_kind,
    field,
    grouped,
    has_control_characters,
    json_body,
    qr_png,
)
from sparekey.web.paths import PORTAL
from sparekey.web.render import page
from sparekey.web.sessions import (
    PortalSession,
    caller_of,
    clear_cookie,
    set_cookie,
    sparekey_of,
)

__all__ = ["router"]

router = APIRouter(prefix=PORTAL, include_in_schema=False)

# What a finished change says on the overview (?done=<key>); never text from the URL itself.
NOTICES = {
    "app_added": "Your authenticator app is set up.",
    "key_added": "Your security key or passkey is registered.",
    "renamed": "The name was changed.",
    "lost": "The factor was marked lost: it no longer works, and you were notified.",
    "removed": "The factor was removed.",
    "recovery_cancelled": "The recovery was cancelled. Nobody can use it to get into your account.",
    "contacts_saved": "Your trusted contacts were saved.",
    "approved": "Your approval was recorded.",
    "denied": "You denied the request; the recovery is stopped.",
    "stepped_up": "Verified. You can make changes for the next few minutes.",
    "device_token_revoked": "The device token was revoked: that computer can no longer store or "
    "fetch backups.",
}

# Where each readiness action (services/readiness.py) is done.
ACTION_PATHS = {
    "enroll_factor": f"{PORTAL}/factors/new/app",
    "add_second_factor": f"{PORTAL}/factors/new/app",
    "generate_backup_codes": f"{PORTAL}/backup-codes",
    "regenerate_backup_codes": f"{PORTAL}/backup-codes",
    "prove_backup_codes_saved": f"{PORTAL}/drill",
    "run_recovery_drill": f"{PORTAL}/drill",
    "add_phishing_resistant_factor": f"{PORTAL}/factors/new/key",
    "check_unused_factor": f"{PORTAL}#factors",
}

_USER_ID = re.compile(r"^[A-Za-z0-9._@+:-]{1,128}$")


# -- helpers ---------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path of this area: never another site (``//evil``) or a scheme."""
    if not target or not target.startswith(PORTAL) or "//" in target or "\\" in target:
        return PORTAL
    return target


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _step_up(next_path: str) -> RedirectResponse:
    return _redirect(f"{PORTAL}/step-up?next={quote(_safe_next(next_path), safe='/')}")


def _assurance(app: Sparekey, session: WebSession) -> Assurance:
    return Assurance(token=session.step_up(app.clock.now()))


def _needs_step_up(app: Sparekey, session: WebSession) -> bool:
    """Whether a sensitive change would be refused now: the user has a confirmed factor (active,
    or marked lost) and the session holds no live step-up (the services decide the same; this
    only saves a detour)."""
    if session.step_up(app.clock.now()):
        return False
    return any(f.status.confirmed for f in app.factors.list(session.subject))


# -- signing in and out ------------------------------------------------------------------------


@router.get("/start")
def start(request: Request, token: str = "") -> Response:
    """Redeem a portal link: a session for its user, then the page without the token."""
    app = sparekey_of(request)
    agent = request.headers.get("user-agent")
    try:
        opened = app.sessions.redeem_link(
            token,
            ip=request.client.host if request.client else None,
            user_agent=agent[:400] if agent else None,
        )
    except AuthenticationError as exc:
        return page(
            request, "message.html", status=400, title="This link has expired", message=exc.detail
        )
    response = _redirect(PORTAL)
    set_cookie(request, response, opened)
    return response


@router.post("/sign-out")
def sign_out(request: Request, session: PortalSession, form: PortalForm) -> Response:
    app = sparekey_of(request)
    app.sessions.sign_out(session, caller=caller_of(request, session))
    request.state.web_session = None
    response = page(
        request,
        "message.html",
        session=None,
        title="You are signed out",
        message="Your security settings are closed on this device. To come back, open them "
        "again from the application.",
    )
    clear_cookie(request, response, session.kind)
    return response


# -- the overview ------------------------------------------------------------------------------


@router.get("")
def overview(request: Request, session: PortalSession, done: str = "") -> HTMLResponse:
    app = sparekey_of(request)
    user_id = session.subject
    factors = [f for f in app.factors.list(user_id) if f.status is not FactorStatus.PENDING]
    readiness = app.readiness.assess(user_id)
    open_cases = [c for c in app.recovery.cases(user_id=user_id) if c.state.open]
    return page(
        request,
        "overview.html",
        user=app.users.get(user_id),
        factors=factors,
        kind=factor_kind,
        readiness=readiness,
        actions=[(a, ACTION_PATHS.get(a.id, PORTAL)) for a in readiness.assessment.actions],
        case=open_cases[0] if open_cases else None,
        contact_requests=app.recovery.contact_requests(user_id),
        device_tokens=sum(1 for t in app.device_tokens.list(user_id) if t.revoked_at is None),
        notice=NOTICES.get(done),
    )


# -- step-up -----------------------------------------------------------------------------------


def _step_up_page(
    request: Request, app: Sparekey, session: WebSession, next_path: str, **extra: Any
) -> HTMLResponse:
    factors = app.factors.list(session.subject)
    active = [f for f in factors if f.status is FactorStatus.ACTIVE]
    return page(
        request,
        "step_up.html",
        status=extra.pop("status", 200),
        next_path=_safe_next(next_path),
        has_codes=any(f.type.guessable for f in active),
        has_keys=any(f.type is FactorType.WEBAUTHN for f in active),
        all_lost=not active and any(f.status is FactorStatus.LOST for f in factors),
        error=extra.pop("error", None),
        **extra,
    )


@router.get("/step-up")
def step_up_form(request: Request, session: PortalSession, next: str = PORTAL) -> HTMLResponse:
    return _step_up_page(request, sparekey_of(request), session, next)


@router.post("/step-up")
def step_up(request: Request, session: PortalSession, form: PortalForm) -> Response:
    app = sparekey_of(request)
    next_path = _safe_next(field(form, "next", max_length=500))
    code = field(form, "code", max_length=64)
    if not code:
        return _step_up_page(
            request,
            app,
            session,
            next_path,
            status=422,
            error="Enter the code your authenticator app shows, or one of your backup codes.",
        )
    try:
        result = app.verification.verify(session.subject, code, caller=caller_of(request, session))
    except SparekeyError as exc:
        return _step_up_page(request, app, session, next_path, status=429, error=exc.detail)
    if not result.verified or result.assurance_token is None:
        return _step_up_page(
            request,
            app,
            session,
            next_path,
            status=422,
            error="That code was not accepted. Check the code and try again.",
        )
    app.sessions.record_step_up(session, result.assurance_token, ttl=app.assurance.ttl)
    return _redirect(next_path)


@router.post("/step-up/webauthn/options")
def step_up_key_options(request: Request, session: PortalSession, _: PortalJson) -> Response:
    app = sparekey_of(request)
    try:
        options = app.webauthn.begin_authentication(
            session.subject, caller=caller_of(request, session)
        )
    except SparekeyError as exc:
        return JSONResponse({"error": exc.detail}, status_code=400)
    return JSONResponse({"options": options})


@router.post("/step-up/webauthn")
async def step_up_key(request: Request, session: PortalSession, _: PortalJson) -> Response:
    body = await json_body(request)
    app = sparekey_of(request)
    if body is None:
        return JSONResponse({"error": "the browser sent no credential"}, status_code=400)
    try:
        result = await run_in_threadpool(
            app.webauthn.finish_authentication,
            body.get("credential") or {},
            caller=caller_of(request, session),
        )
    except SparekeyError as exc:
        return JSONResponse({"error": exc.detail}, status_code=400)
    if not result.verified or result.user_id != session.subject or not result.assurance_token:
        return JSONResponse(
            {"error": "That security key was not accepted. Try again, or use a code."},
            status_code=400,
        )
    await run_in_threadpool(
        app.sessions.record_step_up, session, result.assurance_token, ttl=app.assurance.ttl
    )
    return JSONResponse({"redirect": _safe_next(str(body.get("next") or PORTAL))})


# -- one factor: rename, mark lost, remove -----------------------------------------------------


def _factor_page(
    request: Request, app: Sparekey, session: WebSession, factor_id: str, **extra: Any
) -> HTMLResponse:
    factor = app.factors.get(session.subject, factor_id)
    return page(
        request,
        "factor.html",
        status=extra.pop("status", 200),
        factor=factor,
        kind=factor_kind(factor),
        error=extra.pop("error", None),
        **extra,
    )


@router.get("/factors/{factor_id}")
def factor_detail(request: Request, session: PortalSession, factor_id: str) -> HTMLResponse:
    return _factor_page(request, sparekey_of(request), session, factor_id)


@router.post("/factors/{factor_id}/rename")
def rename_factor(
    request: Request, session: PortalSession, form: PortalForm, factor_id: str
) -> Response:
    app = sparekey_of(request)
    label = field(form, "label", max_length=100)
    if not label:
        return _factor_page(
            request,
            app,
            session,
            factor_id,
            status=422,
            error="Enter a name of at most 100 characters (letters, digits, spaces).",
        )
    app.factors.rename(session.subject, factor_id, label=label, caller=caller_of(request, session))
    return _redirect(f"{PORTAL}?done=renamed")


@router.post("/factors/{factor_id}/lost")
def mark_lost(
    request: Request, session: PortalSession, form: PortalForm, factor_id: str
) -> Response:
    app = sparekey_of(request)
    try:
        app.factors.mark_lost(session.subject, factor_id, caller=caller_of(request, session))
    except SparekeyError as exc:
        return _factor_page(request, app, session, factor_id, status=409, error=exc.detail)
    return _redirect(f"{PORTAL}?done=lost")


@router.post("/factors/{factor_id}/remove")
def remove_factor(
    request: Request, session: PortalSession, form: PortalForm, factor_id: str
) -> Response:
    app = sparekey_of(request)
    try:
        app.factors.delete(
            session.subject,
            factor_id,
            caller=caller_of(request, session),
            assurance=_assurance(app, session),
        )
    except AssuranceRequiredError:
        return _step_up(f"{PORTAL}/factors/{factor_id}")
    except SparekeyError as exc:
        return _factor_page(request, app, session, factor_id, status=409, error=exc.detail)
    return _redirect(f"{PORTAL}?done=removed")


# -- adding an authenticator app ---------------------------------------------------------------


@router.get("/factors/new/app")
def new_app_form(request: Request, session: PortalSession) -> Response:
    app = sparekey_of(request)
    if _needs_step_up(app, session):
        return _step_up(f"{PORTAL}/factors/new/app")
    return page(request, "app_new.html", error=None)


@router.post("/factors/new/app")
def new_app(request: Request, session: PortalSession, form: PortalForm) -> Response:
    app = sparekey_of(request)
    label = field(form, "label", max_length=100)
    if label is None:
        return page(
            request, "app_new.html", status=422, error="The name may have at most 100 characters."
        )
    try:
        enrollment = app.factors.enroll(
            session.subject,
            type=FactorType.TOTP,
            label=label or "Authenticator app",
            caller=caller_of(request, session),
            assurance=_assurance(app, session),
        )
    except AssuranceRequiredError:
        return _step_up(f"{PORTAL}/factors/new/app")
    except SparekeyError as exc:
        return page(request, "app_new.html", status=409, error=exc.detail)
    return page(
        request,
        "app_setup.html",
        factor=enrollment.factor,
        qr=qr_png(enrollment.otpauth_uri),
        secret=grouped(b32encode(enrollment.secret)),
        error=None,
    )


@router.post("/factors/{factor_id}/confirm")
def confirm_app(
    request: Request, session: PortalSession, form: PortalForm, factor_id: str
) -> Response:
    app = sparekey_of(request)
    code = field(form, "code", max_length=16)
    factor = app.factors.get(session.subject, factor_id)

    def again(error: str, status: int) -> HTMLResponse:
        return page(
            request,
            "app_setup.html",
            status=status,
            factor=factor,
            qr=None,
            secret=None,
            error=error,
        )

    if not code or not code.replace(" ", "").isdigit():
        return again("Enter the 6-digit code your app shows for Sparekey.", 422)
    try:
        app.factors.confirm(
            session.subject,
            factor_id,
            code=code.replace(" ", ""),
            caller=caller_of(request, session),
            assurance=_assurance(app, session),
        )
    except AssuranceRequiredError:
        return _step_up(f"{PORTAL}/factors/new/app")
    except FactorExpiredError:
        return again("This setup expired. Start again to get a new QR code.", 409)
    except SparekeyError as exc:
        message = "That code was not accepted. Wait for the next code and enter it."
        return again(message if isinstance(exc, CodeRejectedError) else exc.detail, 422)
    # The code just checked is a fresh verification, as the API's confirm answer says.
    app.sessions.record_step_up(
        session, app.assurance.issue(session.subject), ttl=app.assurance.ttl
    )
    return _redirect(f"{PORTAL}?done=app_added")


# -- adding a security key or passkey ----------------------------------------------------------


@router.get("/factors/new/key")
def new_key_form(request: Request, session: PortalSession) -> Response:
    app = sparekey_of(request)
    if _needs_step_up(app, session):
        return _step_up(f"{PORTAL}/factors/new/key")
    return page(request, "key_new.html")


@router.post("/webauthn/registration/options")
def key_options(request: Request, session: PortalSession, _: PortalJson) -> Response:
    app = sparekey_of(request)
    try:
        options = app.webauthn.begin_registration(
            session.subject,
            caller=caller_of(request, session),
            assurance=_assurance(app, session),
        )
    except SparekeyError as exc:
        return JSONResponse({"error": exc.detail}, status_code=400)
    return JSONResponse({"options": options})


@router.post("/webauthn/registration")
async def key_register(request: Request, session: PortalSession, _: PortalJson) -> Response:
    body = await json_body(request)
    app = sparekey_of(request)
    if body is None or not isinstance(body.get("credential"), dict):
        return JSONResponse({"error": "the browser sent no credential"}, status_code=400)
    label = body.get("label")
    if not isinstance(label, str) or len(label) > 100 or has_control_characters(label):
        return JSONResponse({"error": "The name may have at most 100 characters."}, 400)
    try:
        await run_in_threadpool(
            app.webauthn.finish_registration,
            session.subject,
            body["credential"],
            label=label.strip() or None,
            caller=caller_of(request, session),
            assurance=_assurance(app, session),
        )
    except SparekeyError as exc:
        return JSONResponse({"error": exc.detail}, status_code=400)
    return JSONResponse({"redirect": f"{PORTAL}?done=key_added"})


# -- backup codes and drills -------------------------------------------------------------------


@router.get("/backup-codes")
def backup_codes_page(request: Request, session: PortalSession) -> HTMLResponse:
    readiness = sparekey_of(request).readiness.assess(session.subject)
    return page(request, "backup_codes.html", facts=readiness.facts, readiness=readiness)


@router.post("/backup-codes")
def backup_codes(request: Request, session: PortalSession, form: PortalForm) -> Response:
    app = sparekey_of(request)
    try:
        new_set = app.backup_codes.regenerate(
            session.subject, caller=caller_of(request, session), assurance=_assurance(app, session)
        )
    except AssuranceRequiredError:
        return _step_up(f"{PORTAL}/backup-codes")
    text = "\r\n".join(
        [f"{app.settings.issuer} backup codes for {session.subject}", "", *new_set.codes, ""]
    )
    return page(
        request,
        "backup_codes_shown.html",
        codes=new_set.codes,
        created_at=new_set.created_at,
        download="data:text/plain;charset=utf-8," + quote(text, safe=""),
    )


@router.get("/drill")
def drill_page(request: Request, session: PortalSession) -> HTMLResponse:
    readiness = sparekey_of(request).readiness.assess(session.subject)
    return page(request, "drill.html", readiness=readiness, result=None, error=None)


@router.post("/drill")
def drill(request: Request, session: PortalSession, form: PortalForm) -> Response:
    app = sparekey_of(request)
    code = field(form, "code", max_length=64)
    readiness = app.readiness.assess(session.subject)
    if not code:
        return page(
            request,
            "drill.html",
            status=422,
            readiness=readiness,
            result=None,
            error="Enter one of your backup codes, as printed.",
        )
    try:
        result = app.readiness.check_backup_code(
            session.subject, code, caller=caller_of(request, session)
        )
    except SparekeyError as exc:
        return page(
            request, "drill.html", status=429, readiness=readiness, result=None, error=exc.detail
        )
    readiness = app.readiness.assess(session.subject)
    return page(request, "drill.html", readiness=readiness, result=result, error=None)


# -- recovery and trusted contacts ---------------------------------------------------------------


@router.post("/recovery/cancel")
def cancel_recovery(request: Request, session: PortalSession, form: PortalForm) -> Response:
    app = sparekey_of(request)
    try:
        app.recovery.cancel_for_user(
            session.subject,
            reason="cancelled by the user on their security page",
            caller=caller_of(request, session),
        )
    except SparekeyError as exc:
        return page(
            request, "message.html", status=409, title="Nothing to cancel", message=exc.detail
        )
    return _redirect(f"{PORTAL}?done=recovery_cancelled")


def _contacts_page(request: Request, session: PortalSession, **extra: Any) -> HTMLResponse:
    app = sparekey_of(request)
    policy = app.recovery.policy
    return page(
        request,
        "contacts.html",
        status=extra.pop("status", 200),
        contacts=extra.pop("contacts", None) or app.recovery.contacts(session.subject),
        requests=app.recovery.contact_requests(session.subject),
        low=policy.min_contacts,
        high=policy.max_contacts,
        error=extra.pop("error", None),
        notice=NOTICES.get(extra.pop("done", "")),
    )


@router.get("/contacts")
def contacts_page(request: Request, session: PortalSession, done: str = "") -> HTMLResponse:
    return _contacts_page(request, session, done=done)


@router.post("/contacts")
def set_contacts(request: Request, session: PortalSession, form: PortalForm) -> Response:
    app = sparekey_of(request)
    raw = field(form, "contacts", max_length=2000, lines=True)
    chosen = [] if raw is None else [c for c in re.split(r"[\s,]+", raw) if c]
    if raw is None or any(not _USER_ID.match(c) for c in chosen):
        return _contacts_page(
            request, session, status=422, contacts=chosen, error="List user ids only, one per line."
        )
    try:
        app.recovery.set_contacts(
            session.subject,
            chosen,
            caller=caller_of(request, session),
            assurance=_assurance(app, session),
        )
    except AssuranceRequiredError:
        return _step_up(f"{PORTAL}/contacts")
    except SparekeyError as exc:
        return _contacts_page(request, session, status=422, contacts=chosen, error=exc.detail)
    return _redirect(f"{PORTAL}/contacts?done=contacts_saved")


@router.post("/contacts/requests/{case_id}/{decision}")
def decide_request(
    request: Request, session: PortalSession, form: PortalForm, case_id: str, decision: str
) -> Response:
    """A trusted contact approves or denies a recovery request, after a step-up."""
    app = sparekey_of(request)
    if decision not in ("approve", "deny"):
        return _contacts_page(request, session, status=404, error="There is no such decision.")
    token = session.step_up(app.clock.now())
    if token is None:
        return _step_up(f"{PORTAL}/contacts")
    recovery = app.recovery
    decide = recovery.approve_as_contact if decision == "approve" else recovery.deny_as_contact
    try:
        decide(
            case_id,
            contact_id=session.subject,
            assurance_token=token,
            caller=caller_of(request, session),
        )
    except SparekeyError as exc:
        return _contacts_page(request, session, status=409, error=exc.detail)
    done = "approved" if decision == "approve" else "denied"
    return _redirect(f"{PORTAL}/contacts?done={done}")


# -- the desktop authenticator: device tokens for its vault backups ------------------------------


def _device_tokens_page(
    request: Request, app: Sparekey, session: WebSession, **extra: Any
) -> HTMLResponse:
    return page(
        request,
        "device_tokens.html",
        status=extra.pop("status", 200),
        tokens=app.device_tokens.list(session.subject),
        created=extra.pop("created", None),
        restore_hint=extra.pop("restore_hint", None),
        error=extra.pop("error", None),
        notice=NOTICES.get(extra.pop("done", "")),
        name=extra.pop("name", ""),
    )


@router.get("/device-tokens")
def device_tokens_page(request: Request, session: PortalSession, done: str = "") -> HTMLResponse:
    return _device_tokens_page(request, sparekey_of(request), session, done=done)


@router.post("/device-tokens")
def create_device_token(request: Request, session: PortalSession, form: PortalForm) -> Response:
    """A new device token, shown on this answer only; needs the page's step-up."""
    app = sparekey_of(request)
    name = field(form, "name", max_length=64)
    if not name:
        return _device_tokens_page(
            request,
            app,
            session,
            status=422,
            error="Enter a name of 1 to 64 characters for the computer, e.g. Laptop.",
        )
    try:
        made = app.device_tokens.create(
            session.subject,
            name=name,
            caller=caller_of(request, session),
            assurance=_assurance(app, session),
        )
    except AssuranceRequiredError:
        return _step_up(f"{PORTAL}/device-tokens")
    except SparekeyError as exc:
        return _device_tokens_page(request, app, session, status=409, error=exc.detail, name=name)
    server, user = shlex.quote(app.settings.resolved_public_url), shlex.quote(session.subject)
    hint = f"skauth backup restore --server {server} --user {user} --token-file FILE"
    return _device_tokens_page(request, app, session, created=made, restore_hint=hint)


@router.post("/device-tokens/{token_id}/revoke")
def revoke_device_token(
    request: Request, session: PortalSession, form: PortalForm, token_id: str
) -> Response:
    """No step-up: revoking only takes access away."""
    app = sparekey_of(request)
    app.device_tokens.revoke(session.subject, token_id, caller=caller_of(request, session))
    return _redirect(f"{PORTAL}/device-tokens?done=device_token_revoked")


# -- activity ------------------------------------------------------------------------------------

EVENT_WORDS = {
    "portal.link_created": "The application opened a link to this page",
    "portal.signed_in": "Opened these security settings",
    "portal.signed_out": "Signed out of these security settings",
    "factor.enrolled": "Started adding an authenticator",
    "factor.confirmed": "Added an authenticator app",
    "factor.renamed": "Renamed a factor",
    "factor.removed": "Removed a factor",
    "factor.lost": "Marked a factor lost",
    "webauthn.registered": "Added a security key or passkey",
    "backup_codes.generated": "Made new backup codes",
    "backup_codes.checked": "Checked a backup code (drill)",
    "verify.succeeded": "Signed in with a second factor",
    "verify.failed": "A second-factor check failed",
    "recovery.cancelled": "A recovery was cancelled",
    "recovery.requested": "A recovery was requested",
    "recovery.contacts_changed": "Changed trusted contacts",
    "device_token.created": "Connected a desktop authenticator (device token)",
    "device_token.revoked": "Revoked a desktop authenticator's device token",
    "vault_backup.stored": "The desktop authenticator stored a vault backup",
}


@router.get("/activity")
def activity(request: Request, session: PortalSession) -> HTMLResponse:
    app = sparekey_of(request)
    records = app.audit.query(user_id=session.subject, limit=50).records
    return page(request, "activity.html", records=records, words=EVENT_WORDS)
