"""WebAuthn ceremonies: registering security keys and passkeys (manage scope) and signing in
with them (verify scope). The JSON in and out is what browsers' WebAuthn JSON methods use."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from sparekey.api.assurance import Assured
from sparekey.api.deps import (
    BEARER_SECURITY,
    App,
    ManageKey,
    VerifyKey,
    authorize,
    bearer_token,
    caller_of,
)
from sparekey.api.schemas import (
    Body,
    FactorOut,
    UserIdPath,
    WebAuthnAuthenticationBody,
    WebAuthnAuthenticationStart,
    WebAuthnOptionsOut,
    WebAuthnRegistrationBody,
    WebAuthnResultOut,
)
from sparekey.domain.models import Scope
from sparekey.runtime import Sparekey

router = APIRouter(tags=["webauthn"])


@router.post("/v1/users/{user_id}/webauthn/registrations", response_model=WebAuthnOptionsOut)
def begin_registration(
    user_id: UserIdPath, app: App, key: ManageKey, assurance: Assured, body: Body | None = None
) -> WebAuthnOptionsOut:
    """Options for `navigator.credentials.create()`; the challenge is good for one answer.
    Needs `Sparekey-Assurance` if the user has an active factor (here and to finish)."""
    caller = caller_of(key, body.context if body else None)
    options = app.webauthn.begin_registration(user_id, caller=caller, assurance=assurance)
    return WebAuthnOptionsOut(options=options)


@router.post(
    "/v1/users/{user_id}/webauthn/registrations/verify",
    status_code=status.HTTP_201_CREATED,
    response_model=FactorOut,
)
def finish_registration(
    user_id: UserIdPath,
    body: WebAuthnRegistrationBody,
    app: App,
    key: ManageKey,
    assurance: Assured,
) -> FactorOut:
    """Check the browser's answer and add the credential to the user's factors."""
    factor = app.webauthn.finish_registration(
        user_id,
        body.credential,
        label=body.label,
        caller=caller_of(key, body.context),
        assurance=assurance,
    )
    return FactorOut.of(factor)


@router.post("/v1/webauthn/authentications", response_model=WebAuthnOptionsOut)
def begin_authentication(
    app: App, key: VerifyKey, body: WebAuthnAuthenticationStart | None = None
) -> WebAuthnOptionsOut:
    """Options for `navigator.credentials.get()`. Without `user_id`, the browser offers the
    user's passkeys and the answer says whose it was."""
    user_id = body.user_id if body else None
    caller = caller_of(key, body.context if body else None)
    return WebAuthnOptionsOut(options=app.webauthn.begin_authentication(user_id, caller=caller))


VERIFY_PATH = "/v1/webauthn/authentications/verify"


def _read_body(raw: bytes) -> WebAuthnAuthenticationBody:
    """Validate the JSON body as FastAPI would, with the same errors (``body`` leads each loc)."""
    try:
        return WebAuthnAuthenticationBody.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


async def handle_verify(request: Request) -> Response:
    """The sign-in path, served like code verification (see ``verify.py``): a plain Starlette
    route the application answers before its middleware, the same handler behind the documented
    route."""
    app: Sparekey = request.app.state.sparekey
    key = authorize(app, bearer_token(request), Scope.VERIFY)
    body = _read_body(await request.body())
    caller = caller_of(key, body.context)
    app.guard.ip(caller.ip)
    if app.db.is_sqlite:  # CPU-bound in this process: a thread hop would only add to it
        result = app.webauthn.finish_authentication(body.credential, caller=caller)
    else:  # waits on the network: let other requests run meanwhile
        result = await run_in_threadpool(
            app.webauthn.finish_authentication, body.credential, caller=caller
        )
    content = {"verified": result.verified, "user_id": result.user_id}
    content["factor_id"] = result.factor_id
    if result.assurance_token is not None:
        content["assurance_token"] = result.assurance_token
    return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")


async def _fast_verify(request: Request) -> Response:
    return await handle_verify(request)


fast_route = Route(VERIFY_PATH, _fast_verify, methods=["POST"])
_OPENAPI: dict[str, Any] = {
    "security": BEARER_SECURITY,
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": WebAuthnAuthenticationBody.model_json_schema()}},
    },
}


@router.post(VERIFY_PATH, response_model=WebAuthnResultOut, openapi_extra=_OPENAPI)
async def finish_authentication(request: Request) -> Response:
    """`verified: true` with the user, the factor and an `assurance_token` (for the user's
    sensitive changes in the next minutes), or `verified: false`; never says why (the audit log
    does). Needs the `verify` scope."""
    return await handle_verify(request)
