"""Device tokens: the desktop authenticator's credential for one user's vault backups.

A token reads ``skd_`` and 43 urlsafe base64 characters (256 random bits). It is a credential of
its own kind (docs/decisions/0014-device-tokens-and-vault-backups.md): bound to one user, accepted
by the vault-backup endpoints only, and never where an API key is (nor an API key there).

The table keeps an HMAC-SHA-256 of the token under the keyring's MAC key, never the token. The
token has no id part, so it is found by that keyed hash: computed under every MAC key the keyring
knows (a rotation does not strand a token), looked up by a unique index, then compared again in
constant time with the digest under the key the row names. Without the MAC key, a database reader
can neither recover a token nor steer the lookup. Tokens are read on every request (no cache), so
a revocation holds at once on every node. ``last_used_at`` is refreshed at most once a minute.

Creating one is a sensitive change (step-up, as adding a factor; an enrollment token from a
temporary access pass is not enough); revoking one is not (it only takes access away).
Both are audited in their transaction, and the user is told by email and the application by
webhook (``device_token.created``, ``device_token.revoked``).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import os
import re
from datetime import timedelta

from sparekey.crypto.keyring import KeyPurpose, Keyring, UnknownKeyError
from sparekey.domain.errors import (
    AuthenticationError,
    ConflictError,
    DeviceTokenNotFoundError,
    InvalidInputError,
    PermissionDeniedError,
    UserNotFoundError,
)
from sparekey.domain.models import SYSTEM, Caller, DeviceToken, NewDeviceToken
from sparekey.domain.ports import Clock
from sparekey.services._ids import new_id
from sparekey.services.assurance import NO_ASSURANCE, Assurance, AssuranceService, Operation
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.storage import device_tokens as repo
from sparekey.storage import users as users_repo
from sparekey.storage.database import Database
from sparekey.storage.device_tokens import DeviceTokenRecord

__all__ = ["MAX_LIVE_TOKENS", "TOKEN_PREFIX", "DeviceTokenService"]

TOKEN_PREFIX = "skd_"  # noqa: S105 - what every token starts with
MAX_LIVE_TOKENS = 20  # per user; revoke one to make another
MAX_NAME = 64
_LABEL = "device-token"
_TOKEN = re.compile(r"skd_[A-Za-z0-9_-]{43}")
_TOUCH_EVERY = timedelta(minutes=1)


class DeviceTokenService:
    def __init__(
        self,
        *,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        auditor: Auditor,
        assurance: AssuranceService,
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._auditor = auditor
        self._assurance = assurance

    def create(
        self,
        user_id: str,
        *,
        name: str,
        caller: Caller = SYSTEM,
        assurance: Assurance = NO_ASSURANCE,
    ) -> NewDeviceToken:
        """A new token for ``user_id``, returned only here. A user with an active factor must
        step up first (``assurance``: a step-up token, or an administrator's override)."""
        name = name.strip()
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise InvalidInputError(
                f"the name must be 1 to {MAX_NAME} printable characters", field="name"
            )
        secret = base64.urlsafe_b64encode(os.urandom(32)).decode("ascii").rstrip("=")
        token = TOKEN_PREFIX + secret
        mac_key_id, digest = self._keyring.mac(_LABEL, token.encode("ascii"))
        device_token = DeviceToken(
            id=new_id("dtk"),
            user_id=user_id,
            name=name,
            created_at=self._clock.now(),
            last_used_at=None,
            revoked_at=None,
        )
        with self._db.write() as conn:
            if not users_repo.user_exists(conn, user_id):
                raise UserNotFoundError(user_id)
            self._assurance.require(
                conn,
                user_id,
                operation=Operation.CREATE_DEVICE_TOKEN,
                assurance=assurance,
                caller=caller,
            )
            if repo.count_live(conn, user_id) >= MAX_LIVE_TOKENS:
                raise ConflictError(
                    f"a user may hold at most {MAX_LIVE_TOKENS} live device tokens; "
                    "revoke one first"
                )
            repo.insert_device_token(
                conn,
                DeviceTokenRecord(device_token=device_token, digest=digest, mac_key_id=mac_key_id),
            )
            entry = AuditEntry(
                event="device_token.created",
                user_id=user_id,
                details={"device_token_id": device_token.id, "name": name},
            )
            self._auditor.record(conn, entry, caller)
        return NewDeviceToken(device_token=device_token, token=token)

    def list(self, user_id: str) -> list[DeviceToken]:
        """Every token of the user, revoked ones included (with ``revoked_at``), oldest first."""
        with self._db.read() as conn:
            if not users_repo.user_exists(conn, user_id):
                raise UserNotFoundError(user_id)
            return repo.list_device_tokens(conn, user_id)

    def revoke(self, user_id: str, token_id: str, *, caller: Caller = SYSTEM) -> DeviceToken:
        """Revoke a token: it stops working at once, on every node. Revoking a revoked token
        changes nothing and records nothing (idempotent, as DELETE is)."""
        with self._db.write() as conn:
            if repo.revoke_device_token(conn, user_id, token_id, now=self._clock.now()):
                entry = AuditEntry(
                    event="device_token.revoked",
                    user_id=user_id,
                    details={"device_token_id": token_id},
                )
                self._auditor.record(conn, entry, caller)
            found = repo.get_device_token(conn, user_id, token_id)
            if found is None:
                if not users_repo.user_exists(conn, user_id):
                    raise UserNotFoundError(user_id)
                raise DeviceTokenNotFoundError(token_id)
        return found

    def authenticate(self, token: str, *, user_id: str) -> DeviceToken:
        """The live token behind ``token``, which must be ``user_id``'s. Raises
        :class:`AuthenticationError` (none, unknown, revoked, an API key) or
        :class:`PermissionDeniedError` (another user's token)."""
        if token.startswith("sk_"):
            raise AuthenticationError(
                "an API key does not open vault backups: send a device token of this user "
                "(`Authorization: Bearer skd_...`)"
            )
        if not _TOKEN.fullmatch(token):
            raise AuthenticationError("the device token is malformed: it reads skd_ and 43 more")
        record = self._find(token)
        if record is None:
            raise AuthenticationError("the device token is not known")
        found = record.device_token
        if found.revoked_at is not None:
            raise AuthenticationError("the device token was revoked")
        if found.user_id != user_id:
            raise PermissionDeniedError("this device token belongs to another user")
        now = self._clock.now()
        if found.last_used_at is None or found.last_used_at < now - _TOUCH_EVERY:
            with self._db.write() as conn:
                repo.touch(conn, found.id, now=now, stale_before=now - _TOUCH_EVERY)
        return found

    def _find(self, token: str) -> DeviceTokenRecord | None:
        data = token.encode("ascii")
        self._keyring.active_id(KeyPurpose.MAC)  # re-reads the keys if they may have rotated
        digests = []
        for key_id in self._keyring.mac_key_ids():
            with contextlib.suppress(UnknownKeyError):
                digests.append(self._keyring.mac_with(key_id, _LABEL, data))
        with self._db.read() as conn:
            record = repo.find_by_digests(conn, digests)
        if record is None:
            return None
        try:
            expected = self._keyring.mac_with(record.mac_key_id, _LABEL, data)
        except UnknownKeyError:
            return None
        return record if hmac.compare_digest(expected, record.digest) else None
