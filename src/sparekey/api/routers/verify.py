"""/v1/users/{id}/verify: checking a code at sign-in. The hot path."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from sparekey.api.deps import App, AppMetrics, require
from sparekey.api.schemas import CodeBody, UserIdPath, VerifyOut
from sparekey.domain.models import Scope

router = APIRouter(tags=["verify"], dependencies=[Depends(require(Scope.VERIFY))])


@router.post(
    "/v1/users/{user_id}/verify", response_model=VerifyOut, response_model_exclude_none=True
)
def verify(user_id: UserIdPath, body: CodeBody, app: App, metrics: AppMetrics) -> VerifyOut:
    """Check a code against every active factor of the user, or spend a backup code.

    A wrong, expired or replayed code answers `{"verified": false}`.
    """
    started = time.perf_counter()
    result = app.verification.verify(user_id, body.code)
    metrics.verifications.labels(
        result="success" if result.verified else "failure",
        factor_type=result.factor_type or "none",
    ).inc()
    metrics.verify_seconds.observe(time.perf_counter() - started)
    return VerifyOut(
        verified=result.verified,
        factor_id=result.factor_id,
        factor_type=result.factor_type,
        backup_codes_remaining=result.backup_codes_remaining,
    )
