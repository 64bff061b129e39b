"""Recovery readiness: per user and for the organisation, and recovery drills."""

from __future__ import annotations

from fastapi import APIRouter

from sparekey.api.deps import AdminKey, App, ManageKey, caller_of
from sparekey.api.schemas import (
    BackupCodeCheckOut,
    CodeBody,
    OrgReadinessOut,
    UserIdPath,
    UserReadinessOut,
)

router = APIRouter(tags=["readiness"])


@router.get("/v1/users/{user_id}/readiness", response_model=UserReadinessOut)
def user_readiness(user_id: UserIdPath, app: App, key: ManageKey) -> UserReadinessOut:
    """The user's readiness score, ways in, and what to do, highest impact first."""
    return UserReadinessOut.of(app.readiness.assess(user_id))


@router.post("/v1/users/{user_id}/backup-codes/check", response_model=BackupCodeCheckOut)
def check_backup_code(
    user_id: UserIdPath, body: CodeBody, app: App, key: ManageKey
) -> BackupCodeCheckOut:
    """A recovery drill: is this one of the user's unused backup codes? The code is not spent.
    Records the drill (a valid code proves the set saved); throttled per user (429)."""
    result = app.readiness.check_backup_code(
        user_id, body.code, caller=caller_of(key, body.context)
    )
    return BackupCodeCheckOut(valid=result.valid, remaining=result.remaining)


@router.get("/v1/readiness", response_model=OrgReadinessOut)
def organisation_readiness(app: App, key: AdminKey) -> OrgReadinessOut:
    """Every user's readiness, counted (admin scope)."""
    return OrgReadinessOut.of(app.readiness.report())
