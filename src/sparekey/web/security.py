"""Security headers for every web page and static file (ASGI middleware).

The API's own answers are left as they are (its /docs page loads Swagger UI's scripts).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sparekey.web.paths import STATIC, WEB_PREFIXES

__all__ = ["CONTENT_SECURITY_POLICY", "SecurityHeaders"]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_ALWAYS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


def _is_web(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in WEB_PREFIXES)


class SecurityHeaders:
    """Adds the headers above to web answers, and ``Cache-Control: no-store`` to every page
    (they show one person's security settings, and some show secrets once)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not _is_web(path):
            await self.app(scope, receive, send)
            return
        static = path.startswith(STATIC + "/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _ALWAYS.items():
                    headers[name] = value
                headers["Cache-Control"] = "public, max-age=3600" if static else "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
