"""Request dependencies: the wired application and the API key with its scope check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sparekey.api.metrics import Metrics
from sparekey.domain.errors import AuthenticationError, PermissionDeniedError
from sparekey.domain.models import ApiKey, Scope
from sparekey.runtime import Sparekey

__all__ = ["App", "AppMetrics", "get_app", "require"]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sk_...`")


def get_app(request: Request) -> Sparekey:
    app: Sparekey = request.app.state.sparekey
    return app


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


App = Annotated[Sparekey, Depends(get_app)]
AppMetrics = Annotated[Metrics, Depends(get_metrics)]


def require(scope: Scope) -> Callable[..., ApiKey]:
    """A dependency that admits API keys holding ``scope`` (or a scope that includes it)."""

    def dependency(
        app: App,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        if credentials is None:
            raise AuthenticationError("send an API key as `Authorization: Bearer sk_...`")
        key = app.api_keys.authenticate(credentials.credentials)
        if not key.allows(scope):
            raise PermissionDeniedError(f"this API key lacks the {scope.value!r} scope")
        return key

    return dependency
