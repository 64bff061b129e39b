"""API keys for the applications that call Sparekey.

A key reads ``sk_<id>_<secret>``: the id finds the row, the secret is checked against its keyed
hash in constant time. Verified keys are cached in memory for a moment (``api_key_cache_seconds``)
so the hot path does not read the table on every call; a revocation reaches every node within
that time, and this node at once.
"""

from __future__ import annotations

import base64
import hmac
import os
import threading
import time
from collections.abc import Iterable

from sqlalchemy import Connection

from sparekey.crypto.keyring import Keyring
from sparekey.domain.errors import ApiKeyNotFoundError, AuthenticationError, InvalidInputError
from sparekey.domain.models import SYSTEM, ApiKey, Caller, NewApiKey, Scope
from sparekey.domain.ports import Clock
from sparekey.services._ids import new_id
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.storage import api_keys as repo
from sparekey.storage.api_keys import ApiKeyRecord
from sparekey.storage.database import Database

__all__ = ["ApiKeyService"]

_LABEL = "api-key"
_PREFIX = "sk"


class ApiKeyService:
    def __init__(
        self,
        *,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        cache_seconds: float,
        auditor: Auditor,
    ) -> None:
        self._auditor = auditor
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, ApiKeyRecord]] = {}
        self._lock = threading.Lock()

    def create(
        self,
        *,
        name: str,
        scopes: Iterable[Scope],
        caller: Caller = SYSTEM,
        operator_id: str | None = None,
        conn: Connection | None = None,
    ) -> NewApiKey:
        """A new key, its token returned only here. ``conn`` makes it part of a larger change
        (an operator and their personal token are created together)."""
        scope_set = frozenset(scopes)
        if not scope_set:
            raise InvalidInputError("an API key needs at least one scope", field="scope")
        name = name.strip()
        if not name or len(name) > 100 or not name.isprintable():
            raise InvalidInputError("the name must be 1 to 100 printable characters", field="name")
        key_id = new_id(_PREFIX, nbytes=8).removeprefix(f"{_PREFIX}_")
        secret = base64.urlsafe_b64encode(os.urandom(32)).decode("ascii").rstrip("=")
        mac_key_id, digest = self._keyring.mac(_LABEL, secret.encode("ascii"))
        key = ApiKey(
            id=key_id,
            name=name,
            scopes=scope_set,
            created_at=self._clock.now(),
            revoked_at=None,
            operator_id=operator_id,
        )
        record = ApiKeyRecord(key=key, digest=digest, mac_key_id=mac_key_id)
        details: dict[str, object] = {
            "key_id": key_id,
            "name": name,
            "scopes": sorted(s.value for s in scope_set),
        }
        if operator_id is not None:
            details["operator_id"] = operator_id
        entry = AuditEntry(event="api_key.created", details=details)
        if conn is not None:
            repo.insert_api_key(conn, record)
            self._auditor.record(conn, entry, caller)
        else:
            with self._db.write() as own:
                repo.insert_api_key(own, record)
                self._auditor.record(own, entry, caller)
        return NewApiKey(key=key, token=f"{_PREFIX}_{key_id}_{secret}")

    def list(self) -> list[ApiKey]:
        with self._db.read() as conn:
            return [record.key for record in repo.list_api_keys(conn)]

    def revoke(self, key_id: str, *, caller: Caller = SYSTEM) -> ApiKey:
        with self._db.write() as conn:
            record = repo.get_api_key(conn, key_id)
            if record is None:
                raise ApiKeyNotFoundError(key_id)
            if repo.revoke_api_key(conn, key_id, now=self._clock.now()):
                entry = AuditEntry(event="api_key.revoked", details={"key_id": key_id})
                self._auditor.record(conn, entry, caller)
        with self._lock:
            self._cache.pop(key_id, None)
        with self._db.read() as conn:
            updated = repo.get_api_key(conn, key_id)
        assert updated is not None
        return updated.key

    def authenticate(self, token: str) -> ApiKey:
        """The live key behind ``token``; raises :class:`AuthenticationError` otherwise."""
        if token.startswith("skd_"):
            raise AuthenticationError(
                "a device token opens its user's vault backups only; send an API key (sk_...)"
            )
        prefix, _, rest = token.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != _PREFIX or not key_id or not secret or len(token) > 200:
            raise AuthenticationError("the API key is malformed")
        record = self._lookup(key_id)
        if record is None:
            raise AuthenticationError("the API key is not known")
        expected = self._keyring.mac_with(record.mac_key_id, _LABEL, secret.encode("utf-8"))
        if not hmac.compare_digest(expected, record.digest):
            raise AuthenticationError("the API key is not known")
        if record.key.revoked_at is not None:
            raise AuthenticationError("the API key was revoked")
        return record.key

    def _lookup(self, key_id: str) -> ApiKeyRecord | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        with self._db.read() as conn:
            record = repo.get_api_key(conn, key_id)
        if record is not None and self._cache_seconds > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key_id] = (now, record)
        return record
