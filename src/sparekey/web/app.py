"""Mounting the web areas into the FastAPI application, and their error pages."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from sparekey.web.console import router as console_router
from sparekey.web.csrf import CsrfRefusedError
from sparekey.web.paths import CONSOLE, STATIC, WEB_PREFIXES
from sparekey.web.portal import router as portal_router
from sparekey.web.render import page
from sparekey.web.security import SecurityHeaders
from sparekey.web.sessions import SignInRequiredError

__all__ = ["install_web", "is_web_path", "web_error_response"]

log = logging.getLogger("sparekey.web")

_TITLES = {
    400: "That did not work",
    401: "Please sign in again",
    403: "Not allowed",
    404: "Page not found",
    405: "Not allowed",
    409: "That cannot be done now",
    422: "Please check what you entered",
    429: "Too many attempts",
    503: "Busy, please retry",
}


def is_web_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in WEB_PREFIXES)


def web_error_response(request: Request, status: int, message: str) -> HTMLResponse:
    """An HTML error page (never a stack trace)."""
    title = _TITLES.get(status, "Something went wrong")
    return page(request, "message.html", status=status, title=title, message=message)


def install_web(api: FastAPI) -> None:
    """Add the pages, the static files and the security headers to ``api``."""
    api.include_router(portal_router)
    api.include_router(console_router)
    api.mount(STATIC, StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    api.add_middleware(SecurityHeaders)

    @api.exception_handler(SignInRequiredError)
    async def sign_in_required(request: Request, exc: SignInRequiredError) -> Response:
        if exc.kind.startswith("console"):
            return RedirectResponse(f"{CONSOLE}/sign-in", status_code=303)
        return page(
            request,
            "message.html",
            status=401,
            title="Your session has ended",
            message="For your security, sessions end after a while without use and when you "
            "sign out. Open your security settings again from the application.",
        )

    @api.exception_handler(CsrfRefusedError)
    async def csrf_refused(request: Request, exc: CsrfRefusedError) -> HTMLResponse:
        return page(
            request,
            "message.html",
            status=403,
            title="This request was refused",
            message="The form was missing its security token, or it came from another site. "
            "Nothing was changed. Go back, reload the page and try again.",
        )
