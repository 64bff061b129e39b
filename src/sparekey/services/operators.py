"""Operators: the people behind recovery (admins, helpdesk, auditors), each with a personal token.

An operator's actions are theirs, not an API key's: their token makes the caller
``operator:<id>`` with their role, and four-eyes rules compare operators. Each operator's own
second factors live on a user record of this deployment (``operator:<name>`` unless an existing
user is named), so an admin who loses their factor is recovered through the same case flow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from sparekey.domain.errors import ConflictError, InvalidInputError, NotFoundError
from sparekey.domain.models import SYSTEM, Caller, Operator, OperatorRole, Scope, User
from sparekey.domain.ports import Clock
from sparekey.services._ids import new_id
from sparekey.services.api_keys import ApiKeyService
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.storage import operators as repo
from sparekey.storage import users as users_repo
from sparekey.storage.database import Database

__all__ = ["NewOperator", "OperatorService"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True, kw_only=True)
class NewOperator:
    operator: Operator
    token: str  # shown once


class OperatorService:
    def __init__(
        self, *, db: Database, clock: Clock, auditor: Auditor, api_keys: ApiKeyService
    ) -> None:
        self._db = db
        self._clock = clock
        self._auditor = auditor
        self._api_keys = api_keys

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
