"""The admin console (``/console``): operators sign in with their password and a second factor.

Signing in takes the operator's name, password and a code from their authenticator app in one
form, and refuses with one message whatever was wrong (see ``OperatorService.check_password``).
An operator with a security key or passkey (and no code factor, or who chooses the key) gets a
second step after the password, held by a short ``console_setup`` session: the key's assertion
signs them in only if it is one of their own user's keys. An operator whose user record has no
active factor yet sets up an authenticator app or a security key right after the password (the
same kind of session holds that step); the confirming code or the registered key signs them
in. Every action is the operator's (``Caller(type="operator")``), as from the command line.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from sparekey.domain.errors import (
    AuthError,
    CodeRejectedError,
    ConflictError,
    FactorExpiredError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    SparekeyError,
)
from sparekey.domain.models import (
    AuditRecord,
    Caller,
    CaseState,
    FactorStatus,
    FactorType,
    NewApiKey,
    Operator,
    OperatorRole,
    RecoveryCase,
    Scope,
)
from sparekey.domain.readiness import ScoreBand
from sparekey.protocols.otpauth import b32encode
from sparekey.runtime import Sparekey
from sparekey.services.audit import ChainReport
from sparekey.services.sessions import CONSOLE, CONSOLE_SETUP, OpenedSession, WebSession
from sparekey.web.csrf import (
    ConsoleForm,
    ConsoleSetupForm,
    ConsoleSetupJson,
    CsrfRefusedError,
    form_token_matches,
)
from sparekey.web.forms import factor_kind, field, grouped, json_body, qr_png
from sparekey.web.paths import CONSOLE as CONSOLE_PATH
from sparekey.web.render import page
from sparekey.web.sessions import (
    ConsoleSession,
    ConsoleSetupSession,
    SignInRequiredError,
    clear_cookie,
    set_cookie,
    sparekey_of,
)

__all__ = ["SIGN_IN_COOKIE", "router"]

router = APIRouter(prefix=CONSOLE_PATH, include_in_schema=False)

# The sign-in form's CSRF token (double submit: this cookie and the hidden field must match)
SIGN_IN_COOKIE = "sparekey_console_sign_in"

REFUSED = (
    "The name, password or code was not accepted. Check them and try again; after several "
    "attempts, wait a few minutes."
)

ROLES = {
    "admin": "You can open, verify, approve and deny recovery cases, and issue recovery passes.",
    "helpdesk": "You can open recovery cases, verify a person's identity and issue recovery "
    "passes. Approving is for admins.",
    "auditor": "You can read recovery cases, users and their audit records; you change nothing.",
}

# What a finished step says on the case page (?done=<key>); never text from the URL itself.
NOTICES = {
    "opened": "The case was opened. The user was notified.",
    "verified": "The identity check was recorded.",
    "approved": "Your approval was recorded.",
    "denied": "The case was denied. The user was notified.",
}


@dataclass(frozen=True, kw_only=True)
class SignedIn:
    """A live console session and its operator."""

    session: WebSession
    operator: Operator


def _client(request: Request) -> tuple[str | None, str | None]:
    host = request.client.host if request.client else None
    agent = request.headers.get("user-agent")
    return (host[:64] if host else None, agent[:400] if agent else None)


def operator_caller(request: Request, operator: Operator) -> Caller:
    """The operator acting through the console, as the audit log records them."""
    ip, agent = _client(request)
    return Caller(
        type="operator", id=operator.id, role=operator.role.value, ip=ip, user_agent=agent
    )


def _live_operator(app: Sparekey, session: WebSession) -> Operator | None:
    operator = app.operators.by_user(session.subject)
    if operator is None or operator.disabled_at is not None:
        app.sessions.discard(session)  # a disabled operator's sessions end at their next request
        return None
    return operator


async def _signed_in(request: Request, session: ConsoleSession) -> SignedIn:
    operator = await run_in_threadpool(_live_operator, sparekey_of(request), session)
    if operator is None:
        raise SignInRequiredError(CONSOLE)
    request.state.console_role = operator.role.value
    return SignedIn(session=session, operator=operator)


Operating = Annotated[SignedIn, Depends(_signed_in)]


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _signed_in_response(request: Request, opened: OpenedSession) -> Response:
    response = _redirect(CONSOLE_PATH)
    set_cookie(request, response, opened)
    response.delete_cookie(SIGN_IN_COOKIE, path=CONSOLE_PATH, httponly=True, samesite="lax")
    return response


# -- signing in --------------------------------------------------------------------------------


def _sign_in_page(
    request: Request, *, status: int = 200, error: str | None = None, name: str = ""
) -> HTMLResponse:
    token = request.cookies.get(SIGN_IN_COOKIE) or ""
    if not (20 <= len(token) <= 100 and token.isascii()):
        token = secrets.token_urlsafe(32)
    request.state.web_session = None
    response = page(
        request,
        "console/sign_in.html",
        session=None,
        status=status,
        form_token=token,
        error=error,
        name=name,
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path=CONSOLE_PATH,
    )
    return response


@router.get("/sign-in")
def sign_in_form(request: Request) -> HTMLResponse:
    return _sign_in_page(request)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    try:
        form = await request.form()
    except Exception:  # an unparsable body has no token either
        form = FormData()
    if not form_token_matches(request.cookies.get(SIGN_IN_COOKIE), form):
        raise CsrfRefusedError()
    return await run_in_threadpool(_sign_in, request, form)


def _sign_in(request: Request, form: FormData) -> Response:
    app = sparekey_of(request)
    name = field(form, "name", max_length=64) or ""
    typed = form.get("password")
    password = typed if isinstance(typed, str) else ""
    code = (field(form, "code", max_length=64) or "").replace(" ", "")
    ip, agent = _client(request)
    anonymous = Caller(type="console", ip=ip, user_agent=agent)  # nobody known yet
    try:
        operator = app.operators.check_password(name, password)
    except RateLimitedError:
        app.operators.sign_in_failed(name, "throttled", caller=anonymous)
        return _sign_in_page(request, status=429, error=REFUSED, name=name)
    if operator is None:
        app.operators.sign_in_failed(name, "password", caller=anonymous)
        return _sign_in_page(request, status=401, error=REFUSED, name=name)
    caller = operator_caller(request, operator)
    active = [f for f in app.factors.list(operator.user_id) if f.status is FactorStatus.ACTIVE]
    if not active:
        # First sign-in: the password was right and there is no factor to ask for yet
        opened = app.sessions.start(CONSOLE_SETUP, operator.user_id, caller=caller)
        response = _redirect(f"{CONSOLE_PATH}/setup")
        set_cookie(request, response, opened)
        return response
    has_codes = any(f.type.guessable for f in active)
    if any(f.type is FactorType.WEBAUTHN for f in active) and (
        not has_codes or form.get("method") == "key"
    ):
        # The key step: the password is right, but this is no console session yet
        opened = app.sessions.start(CONSOLE_SETUP, operator.user_id, caller=caller)
        response = _redirect(f"{CONSOLE_PATH}/key")
        set_cookie(request, response, opened)
        return response
    if not has_codes:
        app.operators.sign_in_failed(name, "no_code_factor", caller=caller)
        return _sign_in_page(request, status=401, error=REFUSED, name=name)
    try:
        result = app.verification.verify(operator.user_id, code, caller=caller) if code else None
    except SparekeyError:  # throttled: the same answer, so the password stays unconfirmed
        result = None
    if result is None or not result.verified:
        app.operators.sign_in_failed(name, "code", caller=caller)
        return _sign_in_page(request, status=401, error=REFUSED, name=name)
    opened = app.sessions.start(CONSOLE, operator.user_id, caller=caller, event="console.signed_in")
    return _signed_in_response(request, opened)


# -- the second step with a security key or passkey --------------------------------------------


def _active(app: Sparekey, operator: Operator) -> list[Any]:
    return [f for f in app.factors.list(operator.user_id) if f.status is FactorStatus.ACTIVE]


def _back_to_sign_in(request: Request, session: WebSession) -> Response:
    sparekey_of(request).sessions.discard(session)
    response = _redirect(f"{CONSOLE_PATH}/sign-in")
    clear_cookie(request, response, CONSOLE_SETUP)
    return response


def _signed_in_json(request: Request, session: WebSession, operator: Operator) -> Response:
    """The pending session ends and a console session starts; the page's script follows."""
    app = sparekey_of(request)
    caller = operator_caller(request, operator)
    app.sessions.discard(session)
    opened = app.sessions.start(CONSOLE, operator.user_id, caller=caller, event="console.signed_in")
    response = JSONResponse({"redirect": CONSOLE_PATH})
    set_cookie(request, response, opened)
    clear_cookie(request, response, CONSOLE_SETUP)
    response.delete_cookie(SIGN_IN_COOKIE, path=CONSOLE_PATH, httponly=True, samesite="lax")
    return response


@router.get("/key")
def key_step(request: Request, session: ConsoleSetupSession) -> Response:
    app = sparekey_of(request)
    operator = _setup_operator(request, session)
    if not any(f.type is FactorType.WEBAUTHN for f in _active(app, operator)):
        return _back_to_sign_in(request, session)
    return page(request, "console/key.html", who=operator.name)


@router.post("/key/options")
def key_step_options(
    request: Request, session: ConsoleSetupSession, _: ConsoleSetupJson
) -> Response:
    app = sparekey_of(request)
    operator = _setup_operator(request, session)
    try:
        options = app.webauthn.begin_authentication(
            operator.user_id, caller=operator_caller(request, operator)
        )
    except SparekeyError:
        return JSONResponse({"error": REFUSED}, status_code=400)
    return JSONResponse({"options": options})


@router.post("/key")
async def key_step_finish(
    request: Request, session: ConsoleSetupSession, _: ConsoleSetupJson
) -> Response:
    body = await json_body(request)
    return await run_in_threadpool(_key_step_finish, request, session, body)


def _key_step_finish(
    request: Request, session: WebSession, body: dict[str, Any] | None
) -> Response:
    app = sparekey_of(request)
    operator = _setup_operator(request, session)
    caller = operator_caller(request, operator)
    credential = body.get("credential") if body else None
    try:
        result = (
            app.webauthn.finish_authentication(credential, caller=caller)
            if isinstance(credential, dict)
            else None
        )
    except SparekeyError:
        result = None
    if result is None or not result.verified or result.user_id != operator.user_id:
        # One try per password: the pending step ends, and the answer says no more than the form
        app.operators.sign_in_failed(operator.name, "key", caller=caller)
        app.sessions.discard(session)
        response = JSONResponse({"error": REFUSED}, status_code=401)
        clear_cookie(request, response, CONSOLE_SETUP)
        return response
    return _signed_in_json(request, session, operator)


# -- first sign-in: setting up an authenticator app --------------------------------------------


def _setup_operator(request: Request, session: WebSession) -> Operator:
    operator = _live_operator(sparekey_of(request), session)
    if operator is None:
        raise SignInRequiredError(CONSOLE)
    return operator


@router.get("/setup")
def setup(request: Request, session: ConsoleSetupSession) -> Response:
    app = sparekey_of(request)
    operator = _setup_operator(request, session)
    if _active(app, operator):
        return _back_to_sign_in(request, session)  # set up meanwhile: sign in with it
    enrollment = app.factors.enroll(
        operator.user_id,
        type=FactorType.TOTP,
        label="Console authenticator app",
        caller=operator_caller(request, operator),
    )
    return page(
        request,
        "console/setup.html",
        who=operator.name,
        factor=enrollment.factor,
        qr=qr_png(enrollment.otpauth_uri),
        secret=grouped(b32encode(enrollment.secret)),
        error=None,
    )


@router.post("/setup/{factor_id}/confirm")
def confirm_setup(
    request: Request, session: ConsoleSetupSession, form: ConsoleSetupForm, factor_id: str
) -> Response:
    app = sparekey_of(request)
    operator = _setup_operator(request, session)
    caller = operator_caller(request, operator)
    code = (field(form, "code", max_length=16) or "").replace(" ", "")
    if _active(app, operator):
        return _back_to_sign_in(request, session)  # setup is only for a user with no factor
    factor = app.factors.get(operator.user_id, factor_id)

    def again(error: str, status: int) -> HTMLResponse:
        return page(
            request,
            "console/setup.html",
            status=status,
            who=operator.name,
            factor=factor,
            qr=None,
            secret=None,
            error=error,
        )

    if not code.isdigit():
        return again("Enter the 6-digit code your app shows for Sparekey.", 422)
    try:
        app.factors.confirm(operator.user_id, factor_id, code=code, caller=caller)
    except FactorExpiredError:
        return again("The setup took too long and expired. Start again for a new QR code.", 409)
    except CodeRejectedError:
        return again("That code was not accepted. Wait for the next code and try again.", 422)
    except SparekeyError as exc:
        return again(exc.detail, 409)
    app.sessions.discard(session)
    opened = app.sessions.start(CONSOLE, operator.user_id, caller=caller, event="console.signed_in")
    response = _signed_in_response(request, opened)
    clear_cookie(request, response, CONSOLE_SETUP)
    return response


@router.post("/setup/key/options")
def setup_key_options(
    request: Request, session: ConsoleSetupSession, _: ConsoleSetupJson
) -> Response:
    app = sparekey_of(request)
    operator = _setup_operator(request, session)
    if _active(app, operator):
        return JSONResponse({"error": "A second factor is already set up. Sign in again."}, 409)
    try:
        options = app.webauthn.begin_registration(
            operator.user_id, caller=operator_caller(request, operator)
        )
    except SparekeyError as exc:
        return JSONResponse({"error": exc.detail}, status_code=400)
    return JSONResponse({"options": options})


@router.post("/setup/key")
async def setup_key(
    request: Request, session: ConsoleSetupSession, _: ConsoleSetupJson
) -> Response:
    body = await json_body(request)
    return await run_in_threadpool(_setup_key, request, session, body)


def _setup_key(request: Request, session: WebSession, body: dict[str, Any] | None) -> Response:
    app = sparekey_of(request)
    operator = _setup_operator(request, session)
    if _active(app, operator):
        return JSONResponse({"error": "A second factor is already set up. Sign in again."}, 409)
    credential = body.get("credential") if body else None
    if not isinstance(credential, dict):
        return JSONResponse({"error": "the browser sent no credential"}, status_code=400)
    try:
        app.webauthn.finish_registration(
            operator.user_id,
            credential,
            label="Console security key",
            caller=operator_caller(request, operator),
        )
    except SparekeyError as exc:
        return JSONResponse({"error": exc.detail}, status_code=400)
    return _signed_in_json(request, session, operator)


# -- signed in ---------------------------------------------------------------------------------


@router.post("/sign-out")
def sign_out(request: Request, signed_in: Operating, form: ConsoleForm) -> Response:
    app = sparekey_of(request)
    app.sessions.sign_out(signed_in.session, caller=operator_caller(request, signed_in.operator))
    request.state.web_session = None
    response = page(
        request,
        "message.html",
        session=None,
        title="You are signed out",
        message="The admin console is closed on this device.",
    )
    clear_cookie(request, response, CONSOLE)
    return response


@router.get("")
def home(request: Request, signed_in: Operating) -> HTMLResponse:
    operator = signed_in.operator
    return page(
        request,
        "console/home.html",
        who=operator.name,
        operator=operator,
        role_text=ROLES[operator.role.value],
    )


# -- the recovery queue ------------------------------------------------------------------------


def _status(exc: SparekeyError) -> int:
    if isinstance(exc, AuthError):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, InvalidInputError):
        return 422
    if isinstance(exc, RateLimitedError):
        return 429
    return 400


def _reason(form: FormData) -> str | None:
    """The optional reason: "" when left out, None when it is not acceptable."""
    if form.get("reason") is None:
        return ""
    return field(form, "reason", max_length=500, lines=True)


def countdown(until: datetime | None, now: datetime) -> str:
    """``ready in 23 h 10 min`` (rounded up to the minute); ``ready now`` once it has passed."""
    if until is None:
        return ""
    minutes = max(0, -(-int((until - now).total_seconds()) // 60))
    if minutes == 0:
        return "ready now"
    hours, minutes = divmod(minutes, 60)
    return f"ready in {hours} h {minutes} min" if hours else f"ready in {minutes} min"


def _names(app: Sparekey) -> dict[str, str]:
    """``operator:<id>`` labels as operator names, for the pages."""
    return {f"operator:{o.id}": o.name for o in app.operators.list()}


def _can_act(operator: Operator) -> bool:
    return operator.role in (OperatorRole.ADMIN, OperatorRole.HELPDESK)


def _refuse_auditor(operator: Operator) -> None:
    if not _can_act(operator):
        raise PermissionDeniedError("an auditor reads only; ask an admin or the helpdesk")


_FILTERS = ("open", "all", *(s.value for s in CaseState))


@router.get("/cases")
def cases(request: Request, signed_in: Operating, state: str = "open") -> HTMLResponse:
    return _cases_page(request, signed_in, state)


def _cases_page(
    request: Request,
    signed_in: Operating,
    state: str,
    *,
    status: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    app = sparekey_of(request)
    if state not in _FILTERS:
        state = "open"
    listed = app.recovery.cases(state=None if state in ("open", "all") else CaseState(state))
    if state == "open":
        listed = [c for c in listed if c.state.open]
    now = app.clock.now()
    return page(
        request,
        "console/cases.html",
        status=status,
        who=signed_in.operator.name,
        operator=signed_in.operator,
        can_act=_can_act(signed_in.operator),
        cases=sorted(listed, key=lambda c: c.created_at, reverse=True),
        filters=_FILTERS,
        state=state,
        names=_names(app),
        countdown=lambda c: countdown(c.waiting_until, now) if c.state is CaseState.WAITING else "",
        error=error,
        form=form or {"user_id": "", "reason": ""},
    )


@router.post("/cases")
def open_case(request: Request, signed_in: Operating, form: ConsoleForm) -> Response:
    app = sparekey_of(request)
    user_id = field(form, "user_id", max_length=128) or ""
    reason = _reason(form)
    typed = {"user_id": user_id, "reason": reason or ""}
    try:
        _refuse_auditor(signed_in.operator)
        if not user_id:
            raise InvalidInputError("enter the id of the user who is locked out")
        if reason is None:
            raise InvalidInputError("the reason may have at most 500 characters")
        case = app.recovery.request(
            user_id, reason=reason or None, caller=operator_caller(request, signed_in.operator)
        )
    except SparekeyError as exc:
        return _cases_page(
            request, signed_in, "open", status=_status(exc), error=exc.detail, form=typed
        )
    return _redirect(f"{CONSOLE_PATH}/cases/{case.id}?done=opened")


def _case_page(
    request: Request,
    signed_in: Operating,
    case: RecoveryCase,
    *,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
    **extra: Any,
) -> HTMLResponse:
    app = sparekey_of(request)
    role = signed_in.operator.role
    now = app.clock.now()
    return page(
        request,
        "console/case.html",
        status=status,
        who=signed_in.operator.name,
        case=case,
        names=_names(app),
        checklist=app.recovery.policy.checklist,
        min_evidence=app.recovery.policy.min_evidence,
        can_act=_can_act(signed_in.operator) and case.state.open,
        can_decide=role is OperatorRole.ADMIN and case.state.open,
        countdown=countdown(case.waiting_until, now) if case.state is CaseState.WAITING else "",
        error=error,
        notice=notice,
        issued=extra.pop("issued", None),
        **extra,
    )


# -- users -------------------------------------------------------------------------------------


@router.get("/users")
def users(
    request: Request, signed_in: Operating, query: str = "", cursor: str = ""
) -> HTMLResponse:
    app = sparekey_of(request)
    query = query.strip()[:100]
    try:
        found = app.users.search(query=query, cursor=cursor[:200] or None, limit=50)
    except SparekeyError:
        found = app.users.search(query=query, limit=50)  # a spoilt cursor: the first page
    return page(
        request,
        "console/users.html",
        who=signed_in.operator.name,
        query=query,
        users=found.users,
        next_cursor=found.next_cursor,
    )


@router.get("/users/{user_id}")
def user_detail(request: Request, signed_in: Operating, user_id: str) -> HTMLResponse:
    app = sparekey_of(request)
    user = app.users.get(user_id)
    open_cases = [c for c in app.recovery.cases(user_id=user_id) if c.state.open]
    return page(
        request,
        "console/user.html",
        who=signed_in.operator.name,
        user=user,
        factors=[f for f in app.factors.list(user_id) if f.status is not FactorStatus.PENDING],
        kind=factor_kind,
        readiness=app.readiness.assess(user_id).assessment,
        records=app.audit.query(user_id=user_id, limit=50).records,
        names=_names(app),
        case=open_cases[0] if open_cases else None,
        can_act=_can_act(signed_in.operator),
    )


@router.get("/cases/{case_id}")
def case_detail(
    request: Request, signed_in: Operating, case_id: str, done: str = ""
) -> HTMLResponse:
    case = sparekey_of(request).recovery.get(case_id)
    return _case_page(request, signed_in, case, notice=NOTICES.get(done))


def _case_step(
    request: Request, signed_in: Operating, case_id: str, step: str, form: FormData
) -> Response:
    app = sparekey_of(request)
    caller = operator_caller(request, signed_in.operator)
    try:
        _refuse_auditor(signed_in.operator)
        if step == "verified":
            evidence = [v for v in form.getlist("evidence") if isinstance(v, str)]
            app.recovery.verify_identity(case_id, evidence=evidence, caller=caller)
        elif step == "approved":
            app.recovery.approve(case_id, caller=caller)
        elif step == "denied":
            reason = _reason(form)
            if reason is None:
                raise InvalidInputError("the reason may have at most 500 characters")
            app.recovery.deny(case_id, reason=reason or None, caller=caller)
        else:
            issued = app.recovery.issue_pass(case_id, caller=caller)
            return _case_page(request, signed_in, issued.case, issued=issued)
    except SparekeyError as exc:
        case = app.recovery.get(case_id)
        return _case_page(request, signed_in, case, status=_status(exc), error=exc.detail)
    return _redirect(f"{CONSOLE_PATH}/cases/{case_id}?done={step}")


@router.post("/cases/{case_id}/verify")
def verify_case(
    request: Request, signed_in: Operating, form: ConsoleForm, case_id: str
) -> Response:
    return _case_step(request, signed_in, case_id, "verified", form)


@router.post("/cases/{case_id}/approve")
def approve_case(
    request: Request, signed_in: Operating, form: ConsoleForm, case_id: str
) -> Response:
    return _case_step(request, signed_in, case_id, "approved", form)


@router.post("/cases/{case_id}/deny")
def deny_case(request: Request, signed_in: Operating, form: ConsoleForm, case_id: str) -> Response:
    return _case_step(request, signed_in, case_id, "denied", form)


@router.post("/cases/{case_id}/pass")
def issue_case_pass(
    request: Request, signed_in: Operating, form: ConsoleForm, case_id: str
) -> Response:
    return _case_step(request, signed_in, case_id, "pass", form)


# -- organisation readiness --------------------------------------------------------------------

# The score chart's geometry (SVG user units); it scales with the page through its viewBox.
CHART_WIDTH, CHART_HEIGHT = 640, 240
_PLOT_LEFT, _PLOT_TOP, _PLOT_BOTTOM = 8, 24, 200


@dataclass(frozen=True, kw_only=True)
class Bar:
    """One score band of the chart: its label, users and rectangle."""

    label: str
    users: int
    x: float
    y: float
    width: float
    height: float
    middle: float


def score_bars(scores: tuple[ScoreBand, ...]) -> list[Bar]:
    """A bar per band, its height proportional to the band's users (the tallest fills the plot)."""
    tallest = max((band.users for band in scores), default=0) or 1
    slot = (CHART_WIDTH - 2 * _PLOT_LEFT) / max(len(scores), 1)
    bars = []
    for n, band in enumerate(scores):
        height = round((_PLOT_BOTTOM - _PLOT_TOP) * band.users / tallest, 1)
        x = round(_PLOT_LEFT + n * slot + slot * 0.15, 1)
        bars.append(
            Bar(
                label=str(band.low) if band.low == band.high else f"{band.low}\u2013{band.high}",
                users=band.users,
                x=x,
                y=round(_PLOT_BOTTOM - height, 1),
                width=round(slot * 0.7, 1),
                height=height,
                middle=round(x + slot * 0.35, 1),
            )
        )
    return bars


@router.get("/readiness")
def readiness(request: Request, signed_in: Operating) -> HTMLResponse:
    report = sparekey_of(request).readiness.report()
    return page(
        request,
        "console/readiness.html",
        who=signed_in.operator.name,
        report=report,
        bars=score_bars(report.scores),
        chart_width=CHART_WIDTH,
        chart_height=CHART_HEIGHT,
        baseline=_PLOT_BOTTOM,
    )


# -- the audit log -----------------------------------------------------------------------------

AUDIT_PAGE = 50


def _day(typed: str, name: str) -> datetime | None:
    """A ``YYYY-MM-DD`` filter as midnight UTC; None when left empty."""
    if not typed:
        return None
    try:
        return datetime.combine(date.fromisoformat(typed), time(), tzinfo=UTC)
    except ValueError:
        raise InvalidInputError(f"enter the {name} date as YYYY-MM-DD") from None


def _audit_page(
    request: Request,
    signed_in: Operating,
    filters: dict[str, str],
    cursor: str = "",
    *,
    report: ChainReport | None = None,
) -> HTMLResponse:
    app = sparekey_of(request)
    error, status = None, 200
    records: list[AuditRecord] = []
    next_cursor: int | None = None
    try:
        since = _day(filters["since"], "since")
        until = _day(filters["until"], "until")
        found = app.audit.query(
            user_id=filters["user"] or None,
            events=(filters["event"],) if filters["event"] else (),
            since=since,
            until=until + timedelta(days=1) if until else None,  # the whole "until" day
            cursor=int(cursor) if cursor.isdigit() and len(cursor) < 19 else None,
            limit=AUDIT_PAGE,
        )
        records, next_cursor = found.records, found.next_cursor
    except SparekeyError as exc:
        error, status = exc.detail, _status(exc)
    return page(
        request,
        "console/audit.html",
        status=status,
        who=signed_in.operator.name,
        filters=filters,
        records=records,
        next_cursor=next_cursor,
        paged=bool(cursor),
        names=_names(app),
        report=report,
        error=error,
    )


def _audit_filters(user: object, event: object, since: object, until: object) -> dict[str, str]:
    def clean(value: object, length: int) -> str:
        return value.strip()[:length] if isinstance(value, str) else ""

    return {
        "user": clean(user, 128),
        "event": clean(event, 100),
        "since": clean(since, 10),
        "until": clean(until, 10),
    }


@router.get("/audit")
def audit(
    request: Request,
    signed_in: Operating,
    user: str = "",
    event: str = "",
    since: str = "",
    until: str = "",
    cursor: str = "",
) -> HTMLResponse:
    filters = _audit_filters(user, event, since, until)
    return _audit_page(request, signed_in, filters, cursor[:20])


@router.post("/audit/verify")
def verify_audit(request: Request, signed_in: Operating, form: ConsoleForm) -> HTMLResponse:
    """Checks the whole chain (slow on a big log, so only when asked); the answer shows it."""
    report = sparekey_of(request).audit.verify()
    filters = _audit_filters(
        form.get("user"), form.get("event"), form.get("since"), form.get("until")
    )
    return _audit_page(request, signed_in, filters, report=report)


# -- API keys ----------------------------------------------------------------------------------


def _refuse_non_admin(operator: Operator) -> None:
    if operator.role is not OperatorRole.ADMIN:
        raise PermissionDeniedError("API keys are managed by admins")


def _api_keys_page(
    request: Request,
    signed_in: Operating,
    *,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
    created: NewApiKey | None = None,
    form: dict[str, Any] | None = None,
) -> HTMLResponse:
    app = sparekey_of(request)
    keys = sorted(app.api_keys.list(), key=lambda k: k.created_at, reverse=True)
    return page(
        request,
        "console/api_keys.html",
        status=status,
        who=signed_in.operator.name,
        keys=keys,
        operators={o.id: o.name for o in app.operators.list()},
        scopes=[s.value for s in Scope],
        error=error,
        notice=notice,
        created=created,
        form=form or {"name": "", "scopes": []},
    )


@router.get("/api-keys")
def api_keys(request: Request, signed_in: Operating, done: str = "") -> HTMLResponse:
    _refuse_non_admin(signed_in.operator)
    notice = "The key was revoked: it no longer works." if done == "revoked" else None
    return _api_keys_page(request, signed_in, notice=notice)


@router.post("/api-keys")
def create_api_key(request: Request, signed_in: Operating, form: ConsoleForm) -> HTMLResponse:
    _refuse_non_admin(signed_in.operator)
    name = field(form, "name", max_length=100) or ""
    chosen = [v for v in form.getlist("scopes") if isinstance(v, str)]
    typed = {"name": name, "scopes": chosen}
    try:
        if any(v not in {s.value for s in Scope} for v in chosen):
            raise InvalidInputError("choose scopes from the list")
        created = sparekey_of(request).api_keys.create(
            name=name,
            scopes=[Scope(v) for v in chosen],
            caller=operator_caller(request, signed_in.operator),
        )
    except SparekeyError as exc:
        return _api_keys_page(request, signed_in, status=_status(exc), error=exc.detail, form=typed)
    return _api_keys_page(request, signed_in, created=created)


@router.post("/api-keys/{key_id}/revoke")
def revoke_api_key(
    request: Request, signed_in: Operating, form: ConsoleForm, key_id: str
) -> Response:
    _refuse_non_admin(signed_in.operator)
    sparekey_of(request).api_keys.revoke(
        key_id[:64], caller=operator_caller(request, signed_in.operator)
    )
    return _redirect(f"{CONSOLE_PATH}/api-keys?done=revoked")
