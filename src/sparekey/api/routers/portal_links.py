"""/v1/users/{id}/portal-links: the application sends a user it has signed in to their own
security page (``web/portal.py``) with a single-use link."""

from __future__ import annotations

from fastapi import APIRouter, status

from sparekey.api.deps import App, ManageKey, caller_of
from sparekey.api.schemas import Body, PortalLinkOut, UserIdPath
from sparekey.web.paths import portal_start_url

router = APIRouter(tags=["portal"])


@router.post(
    "/v1/users/{user_id}/portal-links",
    status_code=status.HTTP_201_CREATED,
    response_model=PortalLinkOut,
)
def create_portal_link(
    user_id: UserIdPath, app: App, key: ManageKey, body: Body | None = None
) -> PortalLinkOut:
    """A single-use URL, valid a few minutes (`portal_link_seconds`), that starts a session of
    the self-service security page for this user. Only for a user the application has just
    signed in: whoever opens it acts as the user."""
    link = app.sessions.create_link(user_id, caller=caller_of(key, body.context if body else None))
    return PortalLinkOut(
        url=portal_start_url(app.settings.resolved_public_url, link.token),
        expires_at=link.expires_at,
    )
