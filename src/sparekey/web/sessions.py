"""The session cookie: reading it into the session row it names, and setting or clearing it.

The cookie holds only a random 256-bit token; the row (``services/sessions.py``) holds the
subject, the CSRF secret, the deadlines and any step-up. One cookie per area (``sparekey_portal``,
``sparekey_console``; ``sparekey_console_setup`` while an operator sets up their authenticator
app), so the areas never share a session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from sparekey.domain.models import Caller
from sparekey.runtime import Sparekey
from sparekey.services.sessions import CONSOLE, CONSOLE_SETUP, PORTAL, OpenedSession, WebSession

__all__ = [
    "ConsoleSession",
    "ConsoleSetupSession",
    "PortalSession",
    "SignInRequiredError",
    "caller_of",
    "clear_cookie",
    "cookie_name",
    "session_of",
    "set_cookie",
    "sparekey_of",
]


class SignInRequiredError(Exception):
    """No live session of this area: answered with a page saying how to get back in."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def cookie_name(kind: str) -> str:
    return f"sparekey_{kind}"


def sparekey_of(request: Request) -> Sparekey:
    app: Sparekey = request.app.state.sparekey
    return app


def set_cookie(request: Request, response: Response, opened: OpenedSession) -> None:
    """HttpOnly, SameSite=Lax, Secure when the request came over HTTPS (after the trusted-proxy
    handling of ``forwarded_allow_ips``); a session cookie (the server decides expiry)."""
    response.set_cookie(
        cookie_name(opened.session.kind),
        opened.token,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


def clear_cookie(request: Request, response: Response, kind: str) -> None:
    response.delete_cookie(
        cookie_name(kind),
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def session_of(kind: str) -> Callable[[Request], object]:
    async def dependency(request: Request) -> WebSession:
        app = sparekey_of(request)
        token = request.cookies.get(cookie_name(kind))
        session = await run_in_threadpool(app.sessions.load, token, kind=kind)
        if session is None:
            raise SignInRequiredError(kind)
        request.state.web_session = session
        return session

    return dependency


PortalSession = Annotated[WebSession, Depends(session_of(PORTAL))]
ConsoleSession = Annotated[WebSession, Depends(session_of(CONSOLE))]
ConsoleSetupSession = Annotated[WebSession, Depends(session_of(CONSOLE_SETUP))]


def caller_of(request: Request, session: WebSession) -> Caller:
    """The person acting through the pages, as the audit log records them."""
    client = request.client.host if request.client else None
    agent = request.headers.get("user-agent")
    return Caller(
        type="user",
        id=session.subject,
        ip=client[:64] if client else None,
        user_agent=agent[:400] if agent else None,
    )
