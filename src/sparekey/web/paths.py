"""Where the web areas live; imported by the API too (the portal-link URL)."""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["PORTAL", "STATIC", "WEB_PREFIXES", "portal_start_url"]

PORTAL = "/portal"
CONSOLE = "/console"
STATIC = "/static"
WEB_PREFIXES = (PORTAL, CONSOLE, STATIC)


def portal_start_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}{PORTAL}/start?token={quote(token, safe='')}"
