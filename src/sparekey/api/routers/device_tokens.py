"""/v1/users/{id}/device-tokens: credentials for the desktop authenticator's vault backups.

Creating one is a sensitive change: while the user has an active factor it needs the
``Sparekey-Assurance`` header, as adding a factor does (see ``api/assurance.py``). The token is
in the answer once; listings never show it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status

from sparekey.api.assurance import Assured
from sparekey.api.deps import App, ManageKey, caller_of, require
from sparekey.api.schemas import (
    DeviceTokenCreate,
    DeviceTokenIdPath,
    DeviceTokenList,
    DeviceTokenOut,
    NewDeviceTokenOut,
    UserIdPath,
)
from sparekey.domain.models import Scope

router = APIRouter(
    prefix="/v1/users/{user_id}/device-tokens",
    tags=["device tokens"],
    dependencies=[Depends(require(Scope.MANAGE))],
)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=NewDeviceTokenOut)
def create_device_token(
    user_id: UserIdPath, body: DeviceTokenCreate, app: App, key: ManageKey, assurance: Assured
) -> NewDeviceTokenOut:
    """A device token for the user's desktop authenticator, shown once. Needs
    `Sparekey-Assurance` if the user has an active factor (a step-up token; an enrollment token
    is not enough), or `override` from an admin-scope key. The user is notified."""
    made = app.device_tokens.create(
        user_id, name=body.name, caller=caller_of(key, body.context), assurance=assurance
    )
    token = made.device_token
    return NewDeviceTokenOut(
        id=token.id, name=token.name, token=made.token, created_at=token.created_at
    )


@router.get("", response_model=DeviceTokenList)
def list_device_tokens(user_id: UserIdPath, app: App) -> DeviceTokenList:
    """Every device token of the user, revoked ones with `revoked_at`; never a token itself."""
    return DeviceTokenList(
        device_tokens=[DeviceTokenOut.of(t) for t in app.device_tokens.list(user_id)]
    )


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def revoke_device_token(
    user_id: UserIdPath, token_id: DeviceTokenIdPath, app: App, key: ManageKey
) -> Response:
    """Revoke at once, on every node; the user is notified. Revoking a revoked token is 204
    again (and records nothing new)."""
    app.device_tokens.revoke(user_id, token_id, caller=caller_of(key, None))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
