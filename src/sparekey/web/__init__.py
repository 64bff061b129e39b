"""The web pages: the self-service security page (``/portal``) and, later, the admin console.

An edge like ``api/``: every page calls the same services as the API. The foundation shared by
every area -- server-side sessions (``sessions.py``), CSRF (``csrf.py``), security headers
(``security.py``), the layout and the static files -- is area-neutral; see
docs/decisions/0012-web-sessions.md.
"""

from sparekey.web.app import install_web, is_web_path, web_error_response

__all__ = ["install_web", "is_web_path", "web_error_response"]
