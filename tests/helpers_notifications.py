"""Real receivers on loopback for notification tests: an SMTP server (aiosmtpd) and a webhook
endpoint (http.server), each in a thread of its own, recording what arrives."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"


# -- SMTP ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    tls: bool
    authenticated: bool

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Handler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self._receiver = receiver

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.original_content or b""
        mail = ReceivedMail(
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            raw=content,
            tls=session.ssl is not None,
            authenticated=bool(session.authenticated),
        )
        with self._receiver.lock:
            self._receiver.mails.append(mail)
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """An SMTP server on 127.0.0.1 (a free port), optionally requiring STARTTLS and a login."""

    def __init__(
        self,
        *,
        tls_context: ssl.SSLContext | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.mails: list[ReceivedMail] = []
        self.lock = threading.Lock()
        self._tls = tls_context
        self._login = login
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            self._login is not None
            and isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == self._login
        )
        return AuthResult(success=ok)

    def _protocol(self) -> SMTP:
        return SMTP(
            _Handler(self),
            hostname="localhost",
            tls_context=self._tls,
            require_starttls=self._tls is not None,
            authenticator=self._authenticate if self._login else None,
            auth_required=self._login is not None,
            loop=self._loop,
        )

    def __enter__(self) -> SmtpReceiver:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(self._protocol, LOOPBACK, 0), self._loop
        )
        self._server = started.result(timeout=5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


def tls_contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: (the server's context, a client context that
    trusts only it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sparekey test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / "smtp.crt", directory / "smtp.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


# -- webhooks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedHook:
    headers: dict[str, str]
    body: bytes
    status: int
    peer: tuple[str, int]  # the sender's address and port: one port, one kept-alive connection

    @property
    def event_id(self) -> str:
        return self.headers["sparekey-event-id"]


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 (a free port) recording every POST.

    ``respond(event_id, attempt)`` gives the status to answer, ``attempt`` counting from 1 per
    event id; ``delay`` seconds pass between receiving a request and answering it.
    """

    def __init__(
        self, *, respond: Callable[[str, int], int] = lambda _id, _n: 200, delay: float = 0.0
    ) -> None:
        self.hooks: list[ReceivedHook] = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self._respond = respond
        self._delay = delay
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real application's server

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                event_id = headers.get("sparekey-event-id", "")
                with receiver.lock:
                    attempt = 1 + sum(1 for h in receiver.hooks if h.event_id == event_id)
                    status = receiver._respond(event_id, attempt)
                    receiver.hooks.append(
                        ReceivedHook(
                            headers=headers, body=body, status=status, peer=self.client_address
                        )
                    )
                    receiver.arrived.notify_all()
                if receiver._delay:
                    time.sleep(receiver._delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away mid-answer (the crash test kills it)

        self._server = Server((LOOPBACK, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}/hooks/sparekey"

    def wait_for(self, count: int, *, timeout: float) -> None:
        """Block until ``count`` requests have arrived (answered or not)."""
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.hooks) >= count, timeout=timeout), (
                f"{len(self.hooks)} of {count} webhooks arrived within {timeout} s"
            )

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
