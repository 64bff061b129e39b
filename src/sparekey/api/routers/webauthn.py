"""WebAuthn ceremonies: registering security keys and passkeys (manage scope) and signing in
with them (verify scope). The JSON in and out is what browsers' WebAuthn JSON methods use."""

from __future__ import annotations

from fastapi import APIRouter, status

from sparekey.api.deps import App, ManageKey, VerifyKey, caller_of
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

router = APIRouter(tags=["webauthn"])


@router.post("/v1/users/{user_id}/webauthn/registrations", response_model=WebAuthnOptionsOut)
def begin_registration(
    user_id: UserIdPath, app: App, key: ManageKey, body: Body | None = None
) -> WebAuthnOptionsOut:
    """Options for `navigator.credentials.create()`; the challenge is good for one answer."""
    caller = caller_of(key, body.context if body else None)
    return WebAuthnOptionsOut(options=app.webauthn.begin_registration(user_id, caller=caller))


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
) -> FactorOut:
    """Check the browser's answer and add the credential to the user's factors."""
    factor = app.webauthn.finish_registration(
        user_id, body.credential, label=body.label, caller=caller_of(key, body.context)
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


@router.post("/v1/webauthn/authentications/verify", response_model=WebAuthnResultOut)
def finish_authentication(
    body: WebAuthnAuthenticationBody,
    app: App,
    key: VerifyKey,
) -> WebAuthnResultOut:
    """`verified: true` with the user and factor, or `verified: false`; never says why (the
    audit log does)."""
    result = app.webauthn.finish_authentication(
        body.credential, caller=caller_of(key, body.context)
    )
    return WebAuthnResultOut(
        verified=result.verified, user_id=result.user_id, factor_id=result.factor_id
    )
