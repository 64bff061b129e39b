"""Web sessions and single-use portal links (docs/decisions/0012-web-sessions.md).

The application asks for a **portal link** for a user it has already signed in; opening it
starts a **session** of the self-service pages for that user. Both are random 256-bit tokens that
only the browser holds; the database keeps their SHA-256.

- A link is redeemed by one conditional UPDATE (unused, unexpired): of racing redemptions
  exactly one starts a session.
- A session has a kind (``portal``; the console's will be ``console``), a subject (the user id),
  a CSRF secret, an idle deadline and an absolute one (the earlier is ``expires_at``), and
  perhaps a step-up: the assurance token of a fresh verification (sealed with the encryption
  data key, bound to the session) with its expiry, kept here so
  that it never reaches a cookie or a page.
- Signing out deletes the row.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from sparekey.crypto.aead import DecryptionError
from sparekey.crypto.keyring import Keyring, UnknownKeyError
from sparekey.domain.errors import AuthenticationError, UserNotFoundError
from sparekey.domain.models import Caller
from sparekey.domain.ports import Clock
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.storage import users as users_repo
from sparekey.storage import web_sessions as repo
from sparekey.storage.database import Database

__all__ = [
    "OpenedSession",
    "PortalLink",
    "SessionPolicy",
    "SessionService",
    "WebSession",
    "csrf_matches",
]

PORTAL = "portal"
CONSOLE = "console"
# A console sign-in whose password was right, while the operator sets up their authenticator app
CONSOLE_SETUP = "console_setup"


@dataclass(frozen=True, kw_only=True)
class SessionPolicy:
    idle: timedelta = timedelta(minutes=30)
    lifetime: timedelta = timedelta(hours=12)
    link_ttl: timedelta = timedelta(minutes=5)


@dataclass(frozen=True, kw_only=True)
class PortalLink:
    token: str  # shown once, to the application; only its digest is stored
    user_id: str
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class WebSession:
    digest: bytes
    kind: str
    subject: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime
    step_up_token: str | None
    step_up_expires_at: datetime | None

    def step_up(self, now: datetime) -> str | None:
        """The assurance token of the session's step-up, while it lasts."""
        if self.step_up_token and self.step_up_expires_at and now < self.step_up_expires_at:
            return self.step_up_token
        return None


@dataclass(frozen=True, kw_only=True)
class OpenedSession:
    token: str  # for the cookie; only its digest is stored
    session: WebSession


def _step_up_aad(digest: bytes) -> bytes:
    return b"sparekey/web-session-step-up/v1|" + digest


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def csrf_matches(session: WebSession, presented: str | None) -> bool:
    """Whether ``presented`` is the session's CSRF token (constant time)."""
    if not presented or not presented.isascii():
        return False
    return hmac.compare_digest(session.csrf_token.encode(), presented.encode())


class SessionService:
    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        auditor: Auditor,
        policy: SessionPolicy,
        keyring: Keyring,
    ) -> None:
        self._keyring = keyring
        self._db = db
        self._clock = clock
        self._auditor = auditor
        self.policy = policy

    def create_link(self, user_id: str, *, caller: Caller) -> PortalLink:
        """A single-use link to the user's security page, valid ``link_ttl``."""
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        expires = now + self.policy.link_ttl
        with self._db.write() as conn:
            if not users_repo.user_exists(conn, user_id):
                raise UserNotFoundError(user_id)
            repo.purge_expired(conn, now=now)
            repo.insert_link(conn, _digest(token), user_id, now=now, expires_at=expires)
            entry = AuditEntry(
                event="portal.link_created",
                user_id=user_id,
                details={"expires_at": expires.isoformat()},
            )
            self._auditor.record(conn, entry, caller)
        return PortalLink(token=token, user_id=user_id, expires_at=expires)

    def redeem_link(
        self, token: str, *, ip: str | None = None, user_agent: str | None = None
    ) -> OpenedSession:
        """Spend the link and start a portal session for its user, in one transaction."""
        invalid = AuthenticationError(
            "this link has expired or was already used; open your security settings again "
            "from the application"
        )
        if not token or len(token) > 200:
            raise invalid
        now = self._clock.now()
        with self._db.write() as conn:
            user_id = repo.redeem_link(conn, _digest(token), now=now)
            if user_id is None:
                raise invalid
            opened = self._open(conn, PORTAL, user_id, now)
            caller = Caller(type="user", id=user_id, ip=ip, user_agent=user_agent)
            self._auditor.record(
                conn, AuditEntry(event="portal.signed_in", user_id=user_id), caller
            )
        return opened

    def start(
        self, kind: str, subject: str, *, caller: Caller, event: str | None = None
    ) -> OpenedSession:
        """A session of ``kind`` for ``subject`` (a user id), audited as ``event`` if given,
        in one transaction."""
        now = self._clock.now()
        with self._db.write() as conn:
            repo.purge_expired(conn, now=now)
            opened = self._open(conn, kind, subject, now)
            if event is not None:
                self._auditor.record(conn, AuditEntry(event=event, user_id=subject), caller)
        return opened

    def discard(self, session: WebSession) -> None:
        """End a session without a sign-out record (a setup step that led to a sign-in)."""
        with self._db.write() as conn:
            repo.delete_session(conn, session.digest)

    def _open(self, conn: Connection, kind: str, subject: str, now: datetime) -> OpenedSession:
        token = secrets.token_urlsafe(32)
        session = WebSession(
            digest=_digest(token),
            kind=kind,
            subject=subject,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=min(now + self.policy.idle, now + self.policy.lifetime),
            step_up_token=None,
            step_up_expires_at=None,
        )
        repo.insert_session(
            conn,
            {
                "id_digest": session.digest,
                "kind": kind,
                "subject": subject,
                "csrf_secret": session.csrf_token,
                "created_at": now,
                "last_seen_at": now,
                "expires_at": session.expires_at,
            },
        )
        return OpenedSession(token=token, session=session)

    def load(self, token: str | None, *, kind: str) -> WebSession | None:
        """The live session of this cookie value, its idle deadline moved on; None if there is
        none (never was, expired, signed out)."""
        if not token or len(token) > 200:
            return None
        digest = _digest(token)
        now = self._clock.now()
        with self._db.write() as conn:
            row = repo.get_session(conn, digest, kind=kind)
            if row is None or row.expires_at <= now:
                return None
            expires = min(now + self.policy.idle, row.created_at + self.policy.lifetime)
            if not repo.touch_session(conn, digest, now=now, expires_at=expires):
                return None
        return WebSession(
            digest=digest,
            kind=row.kind,
            subject=row.subject,
            csrf_token=row.csrf_secret,
            created_at=row.created_at,
            expires_at=expires,
            step_up_token=self._open_step_up(digest, row.step_up_token),
            step_up_expires_at=row.step_up_expires_at,
        )

    def record_step_up(self, session: WebSession, assurance_token: str, *, ttl: timedelta) -> None:
        """Keep a fresh verification's assurance token with the session until it expires."""
        expires = self._clock.now() + ttl
        key_id, sealed = self._keyring.encrypt(
            assurance_token.encode("ascii"), aad=_step_up_aad(session.digest)
        )
        stored = f"{key_id}.{base64.urlsafe_b64encode(sealed).decode('ascii')}"
        with self._db.write() as conn:
            repo.set_step_up(conn, session.digest, stored, expires_at=expires)

    def _open_step_up(self, digest: bytes, stored: str | None) -> str | None:
        """The session's assurance token, sealed at rest like every secret; a token that no
        longer opens (its data key rotated away) is simply no step-up."""
        if not stored:
            return None
        key_text, _, blob = stored.partition(".")
        try:
            plain = self._keyring.decrypt(
                int(key_text), base64.urlsafe_b64decode(blob), aad=_step_up_aad(digest)
            )
        except (ValueError, binascii.Error, DecryptionError, UnknownKeyError):
            return None
        return plain.decode("ascii")

    def sign_out(self, session: WebSession, *, caller: Caller) -> None:
        with self._db.write() as conn:
            subject = repo.delete_session(conn, session.digest)
            if subject is not None:
                entry = AuditEntry(event=f"{session.kind}.signed_out", user_id=subject)
                self._auditor.record(conn, entry, caller)
