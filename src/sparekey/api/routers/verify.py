"""/v1/users/{id}/verify: checking a code at sign-in. The hot path.

This one route does by hand what FastAPI's dependencies and body model do for the others (read the
API key, validate the body, render the answer), because on this path they cost more than the
verification itself. The OpenAPI document describes it exactly like the others.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from sparekey.api.deps import BEARER_SECURITY, authorize, bearer_token
from sparekey.api.metrics import Metrics
from sparekey.api.schemas import CodeBody, UserIdPath, VerifyOut
from sparekey.domain.models import Scope, VerifyResult
from sparekey.runtime import Sparekey

router = APIRouter(tags=["verify"])

_OPENAPI: dict[str, Any] = {
    "security": BEARER_SECURITY,
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": CodeBody.model_json_schema()}},
    },
}


def read_body(model: type[CodeBody], raw: bytes) -> CodeBody:
    """Validate a JSON body as FastAPI would, with the same errors (``body`` first in each loc)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def render(result: VerifyResult) -> Response:
    body: dict[str, object] = {"verified": result.verified}
    if result.verified:
        body |= {
            "factor_id": result.factor_id,
            "factor_type": result.factor_type,
            "backup_codes_remaining": result.backup_codes_remaining,
        }
    content = {k: v for k, v in body.items() if v is not None}
    return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")


@router.post(
    "/v1/users/{user_id}/verify",
    response_model=VerifyOut,
    response_model_exclude_none=True,
    openapi_extra=_OPENAPI,
)
async def verify(user_id: UserIdPath, request: Request) -> Response:
    """Check a code against every active factor of the user, or spend a backup code.

    A wrong, expired or replayed code answers `{"verified": false}`. Needs the `verify` scope.
    """
    started = time.perf_counter()
    app: Sparekey = request.app.state.sparekey
    authorize(app, bearer_token(request), Scope.VERIFY)
    body = read_body(CodeBody, await request.body())
    if app.db.is_sqlite:  # CPU-bound in this process: a thread hop would only add to it
        result = app.verification.verify(user_id, body.code)
    else:  # waits on the network: let other requests run meanwhile
        result = await run_in_threadpool(app.verification.verify, user_id, body.code)
    metrics: Metrics = request.app.state.metrics
    metrics.verifications.labels(
        result="success" if result.verified else "failure",
        factor_type=result.factor_type or "none",
    ).inc()
    metrics.verify_seconds.observe(time.perf_counter() - started)
    return render(result)
