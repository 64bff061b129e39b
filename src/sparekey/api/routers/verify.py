"""/v1/users/{id}/verify: checking a code at sign-in. The hot path.

On this path FastAPI's per-request machinery (dependency resolution, body and response models,
its middleware stack) costs more than the verification itself, so the request is served by a
plain Starlette route, :data:`fast_route`, which the application answers before its middleware
(:class:`sparekey.api.app.SparekeyAPI`). The FastAPI route below declares the same operation for
the OpenAPI document and calls the same :func:`handle`, so the two cannot differ; it is reached
only if the fast route is not mounted.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from sparekey.api.batching import VerifyBatcher
from sparekey.api.deps import BEARER_SECURITY, authorize, bearer_token, caller_of
from sparekey.api.metrics import Metrics
from sparekey.api.schemas import USER_ID_PATTERN, CodeBody, UserIdPath, VerifyOut
from sparekey.domain.models import Scope, VerifyResult
from sparekey.runtime import Sparekey

__all__ = ["PATH", "fast_route", "router"]

PATH = "/v1/users/{user_id}/verify"
_USER_ID = re.compile(USER_ID_PATTERN)


def read_body(raw: bytes) -> CodeBody:
    """Validate the JSON body as FastAPI would, with the same errors (``body`` leads each loc)."""
    try:
        return CodeBody.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def check_user_id(user_id: str) -> None:
    if len(user_id) > 128 or not _USER_ID.match(user_id):
        raise RequestValidationError(
            [
                {
                    "type": "string_pattern_mismatch",
                    "loc": ("path", "user_id"),
                    "msg": f"String should match pattern '{USER_ID_PATTERN}'",
                }
            ]
        )


_NOT_VERIFIED = b'{"verified":false}'


def render(result: VerifyResult) -> Response:
    if not result.verified:
        return Response(_NOT_VERIFIED, media_type="application/json")
    body = {
        "verified": True,
        "factor_id": result.factor_id,
        "factor_type": result.factor_type,
        "backup_codes_remaining": result.backup_codes_remaining,
        "assurance_token": result.assurance_token,
    }
    content = {k: v for k, v in body.items() if v is not None}
    return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")


async def handle(request: Request, user_id: str) -> Response:
    started = time.perf_counter()
    app: Sparekey = request.app.state.sparekey
    check_user_id(user_id)
    key = authorize(app, bearer_token(request), Scope.VERIFY)
    body = read_body(await request.body())
    caller = caller_of(key, body.context)
    app.guard.ip(caller.ip)
    if app.db.is_sqlite:  # CPU-bound in this process: a thread hop would only add to it
        batcher: VerifyBatcher = request.app.state.verify_batcher
        result = await batcher.verify(user_id, body.code, caller=caller)
    else:  # waits on the network: let other requests run meanwhile
        result = await run_in_threadpool(app.verification.verify, user_id, body.code, caller=caller)
    metrics: Metrics = request.app.state.metrics
    metrics.count_verification(result, seconds=time.perf_counter() - started)
    return render(result)


async def _fast_endpoint(request: Request) -> Response:
    return await handle(request, request.path_params["user_id"])


fast_route = Route(PATH, _fast_endpoint, methods=["POST"])

router = APIRouter(tags=["verify"])
_OPENAPI: dict[str, Any] = {
    "security": BEARER_SECURITY,
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": CodeBody.model_json_schema()}},
    },
}


@router.post(PATH, response_model=VerifyOut, openapi_extra=_OPENAPI)
async def verify(user_id: UserIdPath, request: Request) -> Response:
    """Check a code against every active factor of the user, or spend a backup code.

    A wrong, expired or replayed code answers `{"verified": false}`. A right one carries an
    `assurance_token`: for a few minutes (`assurance_seconds`) it allows the user's sensitive
    changes (adding or removing a factor, new backup codes) in the `Sparekey-Assurance` header.
    Needs the `verify` scope.
    """
    return await handle(request, user_id)
