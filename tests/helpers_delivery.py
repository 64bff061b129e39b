"""A provider of text messages on loopback, for tests: an HTTP server recording every request,
answering as Twilio's message-create API or as a generic gateway would."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.helpers_notifications import LOOPBACK

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token-0123456789"


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), strict_parsing=True).items()}


@dataclass(frozen=True)
class Answer:
    status: int
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Provider:
    """An HTTP server on 127.0.0.1 recording every request; ``answer(request, n)`` (n counting
    from 1) says what to answer."""

    def __init__(self, answer: Callable[[Received, int], Answer]) -> None:
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                split = urlsplit(self.path)
                received = Received(
                    method=self.command,
                    path=split.path,
                    query=parse_qs(split.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with provider.lock:
                    provider.requests.append(received)
                    reply = answer(received, len(provider.requests))
                if reply.delay:
                    time.sleep(reply.delay)
                payload = b"" if reply.body is None else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up waiting

            do_POST = do_GET = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server((LOOPBACK, 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def __enter__(self) -> Provider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def twilio_api(*failures: Answer) -> Callable[[Received, int], Answer]:
    """Twilio's message create: the listed failures first, then what Twilio checks and answers."""

    def answer(request: Received, n: int) -> Answer:
        if n <= len(failures):
            return failures[n - 1]
        expected = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return Answer(401, {"code": 20003, "message": "Authenticate", "status": 401})
        if request.path != f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json":
            return Answer(404, {"code": 20404, "message": "Not Found", "status": 404})
        form = request.form()
        return Answer(
            201,
            {
                "sid": f"SM{n:032x}",
                "account_sid": ACCOUNT,
                "to": form["To"],
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form["Body"],
                "status": "queued" if "From" in form else "accepted",
                "error_code": None,
                "error_message": None,
            },
        )

    return answer


def twilio_settings(provider: Provider) -> dict[str, Any]:
    """Settings that send SMS through ``provider`` speaking Twilio's API, failing fast: one
    attempt, 2 s (pass them to ``load_settings`` with the test's own)."""
    return {
        "sms_provider": "twilio",
        "twilio_account_sid": ACCOUNT,
        "twilio_auth_token": TOKEN,
        "twilio_from": "+15005550006",
        "twilio_base_url": provider.base_url,
        "delivery_timeout_seconds": 2,
        "delivery_retries": 0,
    }
