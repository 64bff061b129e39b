"""Operators: the people behind recovery (admins, helpdesk, auditors), each with a personal token
and, for the admin console, a password (kept as an Argon2id hash only).

An operator's actions are theirs, not an API key's: their token makes the caller
``operator:<id>`` with their role, and four-eyes rules compare operators. Each operator's own
second factors live on a user record of this deployment (``operator:<name>`` unless an existing
user is named), so an admin who loses their factor is recovered through the same case flow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError

from sparekey.domain.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RateLimitedError,
)
from sparekey.domain.models import SYSTEM, Caller, Operator, OperatorRole, Scope, User
from sparekey.domain.ports import Clock
from sparekey.services._ids import new_id
from sparekey.services.api_keys import ApiKeyService
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.services.ratelimit import InProcessRateLimiter, Limit, RateLimiter
from sparekey.storage import operators as repo
from sparekey.storage import users as users_repo
from sparekey.storage.database import Database

__all__ = ["MIN_PASSWORD_LENGTH", "NewOperator", "OperatorService"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

MIN_PASSWORD_LENGTH = 12
_MAX_PASSWORD_LENGTH = 1024

# Argon2id with argon2-cffi's defaults (RFC 9106's second recommendation: t=3, 64 MiB, p=4).
# A hash made with other parameters is replaced at the next successful sign-in.
_HASHER = PasswordHasher()

# Console sign-in attempts per operator name: 5 at once, then one a minute
SIGN_IN_LIMIT = Limit(requests=5, per_seconds=300)


@cache
def _decoy_hash() -> str:
    """A hash to check an unknown name's password against, so that an unknown name, an
    operator without a password and a wrong password take the same time."""
    return _HASHER.hash("no operator has this password")


@dataclass(frozen=True, kw_only=True)
class NewOperator:
    operator: Operator
    token: str  # shown once


class OperatorService:
    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        auditor: Auditor,
        api_keys: ApiKeyService,
        limiter: RateLimiter | None = None,
        sign_in_limit: Limit = SIGN_IN_LIMIT,
    ) -> None:
        self._db = db
        self._clock = clock
        self._auditor = auditor
        self._api_keys = api_keys
        self._limiter = limiter or InProcessRateLimiter()
        self._sign_in_limit = sign_in_limit

    def create(
        self,
        name: str,
        *,
        role: OperatorRole,
        user_id: str | None = None,
        caller: Caller = SYSTEM,
    ) -> NewOperator:
        """An operator, their user record (made if ``user_id`` is not given) and a personal
        token, in one transaction."""
        if not _NAME.match(name):
            raise InvalidInputError(
                "an operator name is 1 to 64 lowercase letters, digits, '.', '_' or '-'",
                field="name",
            )
        now = self._clock.now()
        operator = Operator(
            id=new_id("op"),
            name=name,
            role=role,
            user_id=user_id or f"operator:{name}",
            created_at=now,
            disabled_at=None,
        )
        try:
            with self._db.write() as conn:
                if repo.get_operator_by_name(conn, name) is not None:
                    raise ConflictError(f"an operator named {name!r} exists")
                if user_id is None:
                    users_repo.insert_user(
                        conn,
                        User(
                            id=operator.user_id,
                            display_name=name,
                            email=None,
                            created_at=now,
                            updated_at=now,
                        ),
                    )
                elif not users_repo.user_exists(conn, user_id):
                    raise NotFoundError(f"no user {user_id!r}")
                repo.insert_operator(conn, operator)
                details = {"operator_id": operator.id, "name": name, "role": role.value}
                self._auditor.record(
                    conn, AuditEntry(event="operator.created", details=details), caller
                )
                token = self._api_keys.create(
                    name=f"operator {name}",
                    scopes=[Scope.ADMIN],
                    operator_id=operator.id,
                    caller=caller,
                    conn=conn,
                ).token
        except IntegrityError:
            raise ConflictError(
                f"the user {operator.user_id!r} already belongs to an operator"
            ) from None
        return NewOperator(operator=operator, token=token)

    def list(self) -> list[Operator]:
        with self._db.read() as conn:
            return repo.list_operators(conn)

    def get(self, operator_id: str) -> Operator:
        with self._db.read() as conn:
            found = repo.get_operator(conn, operator_id)
        if found is None:
            raise NotFoundError(f"no operator {operator_id!r}")
        return found

    def by_name(self, name: str) -> Operator:
        with self._db.read() as conn:
            found = repo.get_operator_by_name(conn, name)
        if found is None:
            raise NotFoundError(f"no operator named {name!r}")
        return found

    def disable(self, name: str, *, caller: Caller = SYSTEM) -> Operator:
        """The operator's tokens stop working at once (cached API keys within seconds)."""
        with self._db.write() as conn:
            operator = repo.get_operator_by_name(conn, name)
            if operator is None:
                raise NotFoundError(f"no operator named {name!r}")
            if not repo.disable_operator(conn, operator.id, now=self._clock.now()):
                raise ConflictError(f"operator {name!r} is already disabled")
            details = {"operator_id": operator.id, "name": name}
            self._auditor.record(
                conn, AuditEntry(event="operator.disabled", details=details), caller
            )
        return self.by_name(name)

    def caller(self, name: str) -> Caller:
        """The caller a command-line action by this operator records (the server's shell is
        trusted to say who is at it; the audit log says it came from the command line)."""
        operator = self.by_name(name)
        if operator.disabled_at is not None:
            raise ConflictError(f"operator {name!r} is disabled")
        return Caller(type="operator", id=operator.id, role=operator.role.value, user_agent="cli")

    def set_password(self, name: str, password: str, *, caller: Caller = SYSTEM) -> None:
        """Set the operator's console password (its Argon2id hash; the password is not kept)."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInputError(
                f"a password has at least {MIN_PASSWORD_LENGTH} characters", field="password"
            )
        if len(password) > _MAX_PASSWORD_LENGTH:
            raise InvalidInputError(
                f"a password has at most {_MAX_PASSWORD_LENGTH} characters", field="password"
            )
        hashed = _HASHER.hash(password)
        with self._db.write() as conn:
            operator = repo.get_operator_by_name(conn, name)
            if operator is None:
                raise NotFoundError(f"no operator named {name!r}")
            repo.set_password_hash(conn, operator.id, hashed)
            details = {"operator_id": operator.id, "name": name}
            self._auditor.record(
                conn, AuditEntry(event="operator.password_set", details=details), caller
            )

    def check_password(self, name: str, password: str) -> Operator | None:
        """The operator if ``password`` is theirs and they are not disabled, else None -- the
        same answer, after the same work, whatever was wrong. Attempts per name are limited
        (:class:`RateLimitedError`), whether the name exists or not."""
        name = name.strip().lower()
        if not _NAME.match(name) or len(password) > _MAX_PASSWORD_LENGTH:
            name, password = "", ""
        decision = self._limiter.hit(
            f"console-sign-in:{name}", self._sign_in_limit, now=self._clock.now()
        )
        if not decision.allowed:
            raise RateLimitedError("operator name", decision.retry_after)
        with self._db.read() as conn:
            operator = repo.get_operator_by_name(conn, name) if name else None
            stored = repo.get_password_hash(conn, operator.id) if operator else None
        try:
            _HASHER.verify(stored or _decoy_hash(), password)
        except (VerificationError, InvalidHashError):
            return None
        if operator is None or stored is None or operator.disabled_at is not None:
            return None
        if _HASHER.check_needs_rehash(stored):
            with self._db.write() as conn:
                repo.set_password_hash(conn, operator.id, _HASHER.hash(password))
        return operator

    def by_user(self, user_id: str) -> Operator | None:
        """The operator whose factors live on ``user_id``, if any."""
        with self._db.read() as conn:
            return repo.get_operator_by_user(conn, user_id)

    def sign_in_failed(self, name: str, reason: str, *, caller: Caller) -> None:
        """Audit a refused console sign-in (the page says only that it was refused)."""
        with self._db.write() as conn:
            operator = repo.get_operator_by_name(conn, name.strip().lower()[:64])
            # Never the name typed when it is no operator's: it may be a password typed there
            details = {"reason": reason}
            if operator is not None:
                details["operator_id"] = operator.id
            entry = AuditEntry(
                event="console.sign_in_failed",
                outcome="failure",
                user_id=operator.user_id if operator else None,
                details=details,
            )
            self._auditor.record(conn, entry, caller)
