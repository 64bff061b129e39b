"""Jinja2 templates (autoescaped) and the one way pages are answered."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from sparekey.services.sessions import WebSession
from sparekey.web.paths import CONSOLE

__all__ = ["page", "templates"]

_HERE = Path(__file__).parent

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: datetime | None) -> str:
    if value is None:
        return "never"
    return value.strftime("%-d %b %Y, %H:%M UTC")


templates.filters["when"] = _when


def page(
    request: Request,
    template: str,
    *,
    session: WebSession | None = None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` with the layout's variables: the signed-in subject and the CSRF
    token for the forms (a page without a session has neither)."""
    if session is None:
        session = getattr(request.state, "web_session", None)
    area = "console" if request.url.path.startswith(CONSOLE) else "portal"
    context.setdefault("who", session.subject if session else None)
    html = templates.get_template(template).render(
        request_path=request.url.path,
        session_subject=session.subject if session else None,
        # a session of the area itself (not a sign-in step): the header shows sign-out and tabs
        signed_in=session is not None and session.kind in ("portal", "console"),
        csrf_token=session.csrf_token if session else "",
        area=area,
        # the signed-in operator's role (set by the console's sign-in check): the nav's links
        console_role=getattr(request.state, "console_role", None),
        **context,
    )
    return HTMLResponse(html, status_code=status)
