"""Handing a composed email to the SMTP server, shared by security notifications and email codes.

One connection per message: connect, ``STARTTLS`` when configured (certificate checked against the
system's trust store, or the given context), ``AUTH`` when a username is set, send, quit. Every
failure becomes a :class:`~sparekey.domain.errors.DeliveryError` with a short reason.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parseaddr

from sparekey.domain.errors import DeliveryError

__all__ = ["MAX_REASON", "SmtpServer", "describe_error"]

MAX_REASON = 200


@dataclass(frozen=True, kw_only=True)
class SmtpServer:
    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)
    starttls: bool = True
    timeout: float = 10.0
    tls_context: ssl.SSLContext | None = field(default=None, repr=False)

    def send(self, mail: EmailMessage, *, sender: str, to: str) -> None:
        """Send ``mail`` from ``sender`` (its bare address is the envelope sender) to ``to``, or
        raise :class:`DeliveryError`."""
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=self.tls_context or ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(mail, from_addr=parseaddr(sender)[1], to_addrs=[to])
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(describe_error(exc)) from None


def describe_error(exc: BaseException) -> str:
    """One line about a failed send: the SMTP reply, or the exception's type and first line."""
    if isinstance(exc, smtplib.SMTPResponseException):
        raw = exc.smtp_error
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return " ".join(f"SMTP {exc.smtp_code} {text}".split())[:MAX_REASON]
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {detail}"[:MAX_REASON] if detail else type(exc).__name__
