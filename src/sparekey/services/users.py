"""Creating, reading, changing, deleting and finding users."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from sparekey.domain.errors import (
    ConflictError,
    InvalidInputError,
    UserExistsError,
    UserNotFoundError,
)
from sparekey.domain.models import SYSTEM, Caller, User
from sparekey.domain.ports import Clock
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.storage import operators as operators_repo
from sparekey.storage import throttle as throttle_repo
from sparekey.storage import users as repo
from sparekey.storage import web_sessions as sessions_repo
from sparekey.storage.database import Database

__all__ = ["UserPage", "UserService"]


@dataclass(frozen=True, kw_only=True)
class UserPage:
    users: list[User]
    next_cursor: str | None


def _encode_cursor(user_id: str) -> str:
    return base64.urlsafe_b64encode(user_id.encode()).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInputError(
            "the cursor is not one this server gave out", field="cursor"
        ) from None


class UserService:
    def __init__(self, *, db: Database, clock: Clock, auditor: Auditor) -> None:
        self._db = db
        self._clock = clock
        self._auditor = auditor

    def create(
        self,
        *,
        user_id: str,
        display_name: str | None,
        email: str | None,
        caller: Caller = SYSTEM,
    ) -> User:
        now = self._clock.now()
        user = User(
            id=user_id, display_name=display_name, email=email, created_at=now, updated_at=now
        )
        try:
            with self._db.write() as conn:
                if repo.user_exists(conn, user_id):
                    raise UserExistsError(user_id)
                repo.insert_user(conn, user)
                self._auditor.record(
                    conn, AuditEntry(event="user.created", user_id=user_id), caller
                )
        except IntegrityError:
            raise UserExistsError(user_id) from None
        return user

    def get(self, user_id: str) -> User:
        with self._db.read() as conn:
            user = repo.get_user(conn, user_id)
        if user is None:
            raise UserNotFoundError(user_id)
        return user

    def update(
        self, user_id: str, *, changes: dict[str, str | None], caller: Caller = SYSTEM
    ) -> User:
        """Change the given fields (``display_name``, ``email``); others stay as they are."""
        allowed = {k: v for k, v in changes.items() if k in ("display_name", "email")}
        with self._db.write() as conn:
            if not repo.update_user(conn, user_id, now=self._clock.now(), **allowed):
                raise UserNotFoundError(user_id)
            entry = AuditEntry(
                event="user.updated", user_id=user_id, details={"fields": sorted(allowed)}
            )
            self._auditor.record(conn, entry, caller)
            user = repo.get_user(conn, user_id)
        assert user is not None
        return user

    def lift_throttle(self, user_id: str, *, caller: Caller = SYSTEM) -> User:
        """An administrator lifts a lock or suspension of the user's guessable codes."""
        with self._db.write() as conn:
            if not throttle_repo.clear(conn, user_id):
                raise UserNotFoundError(user_id)
            self._auditor.record(conn, AuditEntry(event="throttle.lifted", user_id=user_id), caller)
        return self.get(user_id)

    def delete(self, user_id: str, *, caller: Caller = SYSTEM) -> None:
        """Delete the user with every factor and backup code they had (the audit trail stays)."""
        with self._db.write() as conn:
            operator = operators_repo.get_operator_by_user(conn, user_id)
            if operator is not None:  # the operators row refers to it: keep both, say why
                raise ConflictError(
                    f"user {user_id!r} holds the second factors of operator {operator.name!r} "
                    "and cannot be deleted"
                )
            if not repo.delete_user(conn, user_id):
                raise UserNotFoundError(user_id)
            # Their web sessions end with them: the id may later be given to a new user, whose
            # page a session left behind would open.
            sessions_repo.delete_sessions_of(conn, user_id)
            self._auditor.record(conn, AuditEntry(event="user.deleted", user_id=user_id), caller)

    def search(self, *, query: str = "", cursor: str | None = None, limit: int = 50) -> UserPage:
        after = _decode_cursor(cursor) if cursor else None
        with self._db.read() as conn:
            found = repo.search_users(conn, query=query, after=after, limit=limit + 1)
        page, more = found[:limit], len(found) > limit
        return UserPage(users=page, next_cursor=_encode_cursor(page[-1].id) if more else None)
