"""/v1/users/{id}/factors/{factor_id}/send: a fresh code to an email or SMS factor.

Part of signing in (the application asks for a code, then verifies it through ``/verify``), so it
needs the ``verify`` scope, like verify. Sending is limited per user and per destination and
audited; a provider's failure answers ``502`` ``/problems/delivery-failed`` and nothing is sent.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends

from sparekey.api.deps import App, VerifyKey, caller_of, require
from sparekey.api.schemas import Body, FactorIdPath, SentCodeOut, UserIdPath
from sparekey.domain.models import Scope

router = APIRouter(
    prefix="/v1/users/{user_id}", tags=["factors"], dependencies=[Depends(require(Scope.VERIFY))]
)


@router.post("/factors/{factor_id}/send", response_model=SentCodeOut)
def send_code(
    user_id: UserIdPath,
    factor_id: FactorIdPath,
    app: App,
    key: VerifyKey,
    body: Body | None = None,
) -> SentCodeOut:
    """Send a new code (voiding the one before) to an email or SMS factor: to confirm a pending
    one, or to sign in with an active one. `403 fallback-not-allowed` under `fallback_only` when
    the user has a stronger factor; `409 destination-waiting` for a new destination."""
    caller = caller_of(key, body.context if body else None)
    app.guard.ip(caller.ip)
    return SentCodeOut(**asdict(app.fallback.send(user_id, factor_id, caller=caller)))
