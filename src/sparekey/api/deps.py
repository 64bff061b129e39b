"""Request dependencies: the wired application, the API key with its scope check, and the
device token of the vault-backup endpoints (a credential of its own kind)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sparekey.api.metrics import Metrics
from sparekey.api.schemas import RequestContext, UserIdPath
from sparekey.domain.errors import AuthenticationError, PermissionDeniedError
from sparekey.domain.models import ApiKey, Caller, DeviceToken, OperatorRole, Scope
from sparekey.runtime import Sparekey

__all__ = [
    "BEARER_SECURITY",
    "AdminKey",
    "App",
    "AppMetrics",
    "CurrentDeviceToken",
    "ManageKey",
    "authorize",
    "bearer_token",
    "caller_of",
    "device_caller",
    "get_app",
    "require",
]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sk_...`")
_device_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="DeviceToken",
    description="A device token of this user, for its vault backups only: "
    "`Authorization: Bearer skd_...`",
)


async def get_app(request: Request) -> Sparekey:
    app: Sparekey = request.app.state.sparekey
    return app


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


App = Annotated[Sparekey, Depends(get_app)]
AppMetrics = Annotated[Metrics, Depends(get_metrics)]


@functools.cache
def require(scope: Scope) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that admits API keys holding ``scope`` (or a scope that includes it).

    Dependencies are coroutines so that a request costs no thread hop before its endpoint: the
    API key check is a memory lookup, and a database read once per ``api_key_cache_seconds``.
    One callable per scope, so FastAPI resolves it once per request wherever it is declared.
    """

    async def dependency(
        app: App,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        token = credentials.credentials if credentials else None
        return authorize(app, token, scope, method=request.method)

    return dependency


def authorize(app: Sparekey, token: str | None, scope: Scope, *, method: str = "POST") -> ApiKey:
    """The API key behind a bearer ``token``, if it is live and holds ``scope``. An auditor's
    personal token reads and never changes anything."""
    if not token:
        raise AuthenticationError("send an API key as `Authorization: Bearer sk_...`")
    key = app.api_keys.authenticate(token)
    app.guard.api_key(key.id)
    if not key.allows(scope):
        raise PermissionDeniedError(f"this API key lacks the {scope.value!r} scope")
    if key.operator_role == OperatorRole.AUDITOR and method not in ("GET", "HEAD"):
        raise PermissionDeniedError("an auditor's token reads only")
    return key


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, as HTTPBearer reads it."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


BEARER_SECURITY: list[dict[str, list[str]]] = [{"HTTPBearer": []}]


VerifyKey = Annotated[ApiKey, Depends(require(Scope.VERIFY))]
ManageKey = Annotated[ApiKey, Depends(require(Scope.MANAGE))]
AdminKey = Annotated[ApiKey, Depends(require(Scope.ADMIN))]


def caller_of(key: ApiKey, context: RequestContext | None) -> Caller:
    """The caller a service records: the operator whose personal token this is, or the API key;
    and the end user's context if given."""
    ip = context.ip if context else None
    user_agent = context.user_agent if context else None
    if key.operator_id is not None:
        return Caller(
            type="operator",
            id=key.operator_id,
            role=key.operator_role,
            ip=ip,
            user_agent=user_agent,
        )
    return Caller(type="api_key", id=key.id, ip=ip, user_agent=user_agent)


def device_token(
    user_id: UserIdPath,
    app: App,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_device_bearer)],
) -> DeviceToken:
    """The live device token of ``user_id`` behind the bearer token (read from the database on
    every request, so a revocation holds at once everywhere). A plain function: FastAPI runs it
    in a worker thread."""
    token = credentials.credentials if credentials else None
    if not token:
        raise AuthenticationError(
            "send a device token of this user as `Authorization: Bearer skd_...`"
        )
    return app.device_tokens.authenticate(token, user_id=user_id)


CurrentDeviceToken = Annotated[DeviceToken, Depends(device_token)]


def device_caller(token: DeviceToken, request: Request) -> Caller:
    """A desktop authenticator as the audit log records it: its token, and the address and user
    agent it connected with (the desktop talks to Sparekey directly, not through an app)."""
    client = request.client.host if request.client else None
    agent = request.headers.get("user-agent")
    return Caller(
        type="device_token",
        id=token.id,
        ip=client[:64] if client else None,
        user_agent=agent[:400] if agent else None,
    )
