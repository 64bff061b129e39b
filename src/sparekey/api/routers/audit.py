"""/v1/audit: reading the audit log (admin scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from sparekey.api.deps import App, require
from sparekey.api.schemas import USER_ID_PATTERN, AuditPageOut, AuditRecordOut, Moment
from sparekey.domain.models import Scope

router = APIRouter(tags=["audit"], dependencies=[Depends(require(Scope.ADMIN))])


@router.get("/v1/audit", response_model=AuditPageOut)
def read_audit(
    app: App,
    user: Annotated[str | None, Query(pattern=USER_ID_PATTERN, max_length=128)] = None,
    event: Annotated[
        list[Annotated[str, Query(pattern=r"^[a-z_.]{1,64}$")]] | None,
        Query(description="Event types, e.g. verify.failed; repeat for several"),
    ] = None,
    since: Annotated[
        Moment | None, Query(description="From this time (inclusive), with its zone")
    ] = None,
    until: Annotated[
        Moment | None, Query(description="Until this time (exclusive), with its zone")
    ] = None,
    cursor: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPageOut:
    """Audit events, newest first, filtered by user, event type and time range."""
    page = app.audit.query(
        user_id=user,
        events=tuple(event or ()),
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return AuditPageOut(
        events=[AuditRecordOut.of(r) for r in page.records], next_cursor=page.next_cursor
    )
