"""CSRF: a synchronizer token per session, in a hidden field of every form (``csrf_token``) and
in the ``X-CSRF-Token`` header of the WebAuthn fetch calls; compared in constant time.

SameSite=Lax cookies already keep cross-site POSTs from carrying the session; the token is the
defence that does not depend on the browser.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from sparekey.services.sessions import WebSession, csrf_matches
from sparekey.web.sessions import ConsoleSession, ConsoleSetupSession, PortalSession

__all__ = [
    "FIELD",
    "HEADER",
    "ConsoleForm",
    "ConsoleSetupForm",
    "ConsoleSetupJson",
    "CsrfRefusedError",
    "PortalForm",
    "PortalJson",
    "form_token_matches",
]

FIELD = "csrf_token"
HEADER = "x-csrf-token"


class CsrfRefusedError(Exception):
    """A state-changing request without the session's CSRF token: refused with a 403 page."""


async def _checked_form(request: Request, session: WebSession) -> FormData:
    try:
        form = await request.form()
    except Exception:  # a body python-multipart cannot parse: no token either
        raise CsrfRefusedError() from None
    presented = form.get(FIELD)
    if not isinstance(presented, str) or not csrf_matches(session, presented):
        raise CsrfRefusedError()
    return form


def form_token_matches(expected: str | None, form: FormData) -> bool:
    """For a form without a session (the console's sign-in): the hidden field equals the value
    of the cookie set with the form (double submit), in constant time."""
    presented = form.get(FIELD)
    if not expected or not isinstance(presented, str) or not presented.isascii():
        return False
    return expected.isascii() and hmac.compare_digest(expected.encode(), presented.encode())


async def _portal_form(request: Request, session: PortalSession) -> FormData:
    return await _checked_form(request, session)


async def _console_form(request: Request, session: ConsoleSession) -> FormData:
    return await _checked_form(request, session)


async def _console_setup_form(request: Request, session: ConsoleSetupSession) -> FormData:
    return await _checked_form(request, session)


async def _portal_json(request: Request, session: PortalSession) -> None:
    if not csrf_matches(session, request.headers.get(HEADER)):
        raise CsrfRefusedError()


async def _console_setup_json(request: Request, session: ConsoleSetupSession) -> None:
    if not csrf_matches(session, request.headers.get(HEADER)):
        raise CsrfRefusedError()


PortalForm = Annotated[FormData, Depends(_portal_form)]
PortalJson = Annotated[None, Depends(_portal_json)]
ConsoleForm = Annotated[FormData, Depends(_console_form)]
ConsoleSetupForm = Annotated[FormData, Depends(_console_setup_form)]
ConsoleSetupJson = Annotated[None, Depends(_console_setup_json)]
