"""CSRF: a synchronizer token per session, in a hidden field of every form (``csrf_token``) and
in the ``X-CSRF-Token`` header of the WebAuthn fetch calls; compared in constant time.

SameSite=Lax cookies already keep cross-site POSTs from carrying the session; the token is the
defence that does not depend on the browser.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from sparekey.services.sessions import csrf_matches
from sparekey.web.sessions import PortalSession

__all__ = ["FIELD", "HEADER", "CsrfRefusedError", "PortalForm", "PortalJson"]

FIELD = "csrf_token"
HEADER = "x-csrf-token"


class CsrfRefusedError(Exception):
    """A state-changing request without the session's CSRF token: refused with a 403 page."""


async def _portal_form(request: Request, session: PortalSession) -> FormData:
    try:
        form = await request.form()
    except Exception:  # a body python-multipart cannot parse: no token either
        raise CsrfRefusedError() from None
    presented = form.get(FIELD)
    if not isinstance(presented, str) or not csrf_matches(session, presented):
        raise CsrfRefusedError()
    return form


async def _portal_json(request: Request, session: PortalSession) -> None:
    if not csrf_matches(session, request.headers.get(HEADER)):
        raise CsrfRefusedError()


PortalForm = Annotated[FormData, Depends(_portal_form)]
PortalJson = Annotated[None, Depends(_portal_json)]
