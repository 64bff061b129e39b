"""Step-up: a fresh second-factor verification before a sensitive change to a user's factors.

A successful verification (a code, a backup code, a security key) answers with an **assurance
token**: a short-lived statement, signed by this server, that the user just proved a second
factor. Changes that could hand the account to someone else -- adding a factor, removing one,
regenerating backup codes, creating a device token for the desktop vault's backups -- need such a
token while the user holds an active factor; a user with none (a first enrollment) needs no token.

Tokens are ``sat1.<mac key id>.<payload>.<mac>``: the payload (base64url JSON) names the user,
the purpose, the expiry, a random nonce and, for a recovery, the case; the MAC is HMAC-SHA-256
under the keyring's MAC key (label ``assurance-token``) over everything before it, compared in
constant time. No database row is written or read to issue or check one, so the verify path
pays one HMAC. A token is not single use: it vouches for the user until it expires
(``assurance_seconds``, 5 minutes by default).

Two purposes:

- ``"step-up"`` (from a verification) satisfies every sensitive operation.
- ``"enroll"`` (from a redeemed temporary access pass) satisfies only adding a factor: enrolling
  and confirming a TOTP/HOTP factor, registering a security key. It never removes a factor,
  never regenerates backup codes, and is never a sign-in.

A token from an email or SMS code is marked ``fallback`` (claim ``w``). It satisfies no sensitive
operation while the user has an active factor that is not email or SMS (an authenticator app, a
hardware token, a security key): the weakest factor never vouches for changes to stronger ones.
For a user whose only factors are email or SMS it is their step-up, so they can add a stronger one.

An administrator may override the check (:attr:`Assurance.override`); every override is
audited as ``assurance.overridden`` in the transaction of the change.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from sqlalchemy import Connection

from sparekey.crypto.keyring import KeyPurpose, Keyring, UnknownKeyError
from sparekey.domain.errors import AssuranceRequiredError
from sparekey.domain.models import Caller, FactorStatus
from sparekey.domain.ports import Clock
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.storage import factors as factors_repo
from sparekey.storage import fallback as fallback_repo

__all__ = [
    "NO_ASSURANCE",
    "Assurance",
    "AssuranceClaims",
    "AssuranceService",
    "Operation",
    "Purpose",
]

Purpose = Literal["step-up", "enroll"]
_PURPOSES: tuple[Purpose, ...] = ("step-up", "enroll")
_PREFIX = "sat1"
_LABEL = "assurance-token"
_MAX_TOKEN = 2048
_MAX_REASON = 200


class Operation(StrEnum):
    """The sensitive changes, as named in the audit log."""

    ENROLL_FACTOR = "factor.enroll"
    CONFIRM_FACTOR = "factor.confirm"
    REGISTER_WEBAUTHN = "webauthn.register"
    REMOVE_FACTOR = "factor.remove"
    CHANGE_DESTINATION = "factor.change_destination"
    REGENERATE_BACKUP_CODES = "backup_codes.regenerate"
    CHANGE_CONTACTS = "recovery.contacts"
    CREATE_DEVICE_TOKEN = "device_token.create"  # noqa: S105 - an operation name

    @property
    def purpose(self) -> Purpose:
        """The least a token must vouch for: adding a factor takes an enroll token too."""
        adding = (Operation.ENROLL_FACTOR, Operation.CONFIRM_FACTOR, Operation.REGISTER_WEBAUTHN)
        return "enroll" if self in adding else "step-up"


@dataclass(frozen=True, kw_only=True)
class AssuranceClaims:
    """What a valid token says."""

    user_id: str
    purpose: Purpose
    expires_at: datetime
    nonce: str
    key_id: int
    case_id: str | None = None
    fallback: bool = False  # from an email or SMS code


@dataclass(frozen=True, kw_only=True)
class Assurance:
    """What the caller of a sensitive change presents: a token, or an administrator's override
    (the edge lets only admin-scope callers set it) with an optional reason for the audit log."""

    token: str | None = None
    override: bool = False
    reason: str | None = None


NO_ASSURANCE = Assurance()


class AssuranceService:
    def __init__(self, *, keyring: Keyring, clock: Clock, auditor: Auditor, ttl: timedelta) -> None:
        if ttl <= timedelta(0):
            raise ValueError("the assurance token lifetime must be positive")
        self._keyring = keyring
        self._clock = clock
        self._auditor = auditor
        self._ttl = ttl

    @property
    def ttl(self) -> timedelta:
        return self._ttl

    def issue(
        self,
        user_id: str,
        *,
        purpose: Purpose = "step-up",
        ttl: timedelta | None = None,
        case_id: str | None = None,
        fallback: bool = False,
    ) -> str:
        """A token vouching that ``user_id`` proved a factor (``step-up``) or redeemed a
        temporary access pass (``enroll``), valid for ``ttl`` (default ``assurance_seconds``)."""
        if purpose not in _PURPOSES:
            raise ValueError(f"unknown assurance purpose {purpose!r}")
        lifetime = self._ttl if ttl is None else ttl
        if lifetime <= timedelta(0):
            raise ValueError("the assurance token lifetime must be positive")
        expires = math.floor((self._clock.now() + lifetime).timestamp())
        claims: dict[str, object] = {
            "u": user_id,
            "p": purpose,
            "x": expires,
            "n": _b64(os.urandom(16)),
        }
        if case_id is not None:
            claims["c"] = case_id
        if fallback:
            claims["w"] = 1
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        key_id = self._keyring.active_id(KeyPurpose.MAC)
        signed = f"{_PREFIX}.{key_id}.{payload}"
        mac = self._keyring.mac_with(key_id, _LABEL, signed.encode("ascii"))
        return f"{signed}.{_b64(mac)}"

    def check(self, token: str, *, user_id: str, purpose: Purpose) -> AssuranceClaims:
        """The claims of a genuine, unexpired token for ``user_id`` that satisfies ``purpose``
        (a step-up token satisfies both purposes, an enroll token only ``enroll``); otherwise
        :class:`AssuranceRequiredError` saying why."""
        claims = self._open(token)
        if claims.user_id != user_id:
            raise AssuranceRequiredError("the assurance token was issued for another user")
        if purpose == "step-up" and claims.purpose != "step-up":
            raise AssuranceRequiredError(
                "an enrollment token (from a temporary access pass) only allows adding a "
                "factor; verify a second factor for this change"
            )
        if self._clock.now() >= claims.expires_at:
            raise AssuranceRequiredError(
                "the assurance token has expired; verify a second factor again"
            )
        return claims

    def require(
        self,
        conn: Connection,
        user_id: str,
        *,
        operation: Operation,
        assurance: Assurance,
        caller: Caller,
    ) -> None:
        """Allow ``operation`` on ``user_id``'s factors, inside the transaction of the change:
        with an administrator's override (audited here), a token good for it, or at a first
        enrollment (no factor ever confirmed; a factor marked lost still counts, so losing
        every device leads to a backup code or a recovery case, never to a free enrollment).
        Raises :class:`AssuranceRequiredError`."""
        if assurance.override:
            details: dict[str, object] = {"operation": operation.value}
            if assurance.reason:
                details["reason"] = assurance.reason[:_MAX_REASON]
            entry = AuditEntry(event="assurance.overridden", user_id=user_id, details=details)
            self._auditor.record(conn, entry, caller)
            return
        refused: AssuranceRequiredError | None = None
        if assurance.token:
            try:
                claims = self.check(assurance.token, user_id=user_id, purpose=operation.purpose)
            except AssuranceRequiredError as exc:
                refused = exc
            else:
                if not claims.fallback or not fallback_repo.stronger_factor_exists(conn, user_id):
                    return
                refused = AssuranceRequiredError(
                    "a code sent by email or SMS cannot approve this change while the user has "
                    "an authenticator app or security key: verify with one of those"
                )
        statuses = factors_repo.confirmed_factor_statuses(conn, user_id)
        if not statuses:
            return  # a first enrollment: nothing to step up with
        if refused is None and FactorStatus.ACTIVE not in statuses:
            # Every factor marked lost. Marking needs no step-up (it only takes access away),
            # so it must not open the way to adding a factor freely: that would hand the
            # account to whoever holds a session. A backup code, or recovery, is the way back.
            refused = AssuranceRequiredError(
                "every factor of this user is marked lost: verify a backup code for an "
                "assurance token, or recover through a recovery case (temporary access pass)"
            )
        raise refused or AssuranceRequiredError(
            "this change needs a fresh second-factor verification: send the assurance_token "
            "of a successful verify in the Sparekey-Assurance header"
        )

    def _open(self, token: str) -> AssuranceClaims:
        invalid = AssuranceRequiredError("the assurance token is not valid")
        if len(token) > _MAX_TOKEN or not token.isascii():
            raise invalid
        signed, _, mac_text = token.rpartition(".")
        prefix, _, rest = signed.partition(".")
        key_text, _, payload = rest.partition(".")
        if prefix != _PREFIX or not key_text.isdigit() or len(key_text) > 9:
            raise invalid
        key_id = int(key_text)
        try:
            expected = self._keyring.mac_with(key_id, _LABEL, signed.encode("ascii"))
        except UnknownKeyError:
            raise invalid from None
        if not hmac.compare_digest(_b64(expected), mac_text):
            raise invalid
        try:  # from here on the payload is ours: a failure is a bug, still refused
            claims = json.loads(_unb64(payload))
            purpose = claims["p"]
            if purpose not in _PURPOSES:
                raise ValueError(purpose)
            case_id = claims.get("c")
            return AssuranceClaims(
                user_id=str(claims["u"]),
                purpose=purpose,
                expires_at=datetime.fromtimestamp(int(claims["x"]), UTC),
                nonce=str(claims["n"]),
                key_id=key_id,
                case_id=None if case_id is None else str(case_id),
                fallback=bool(claims.get("w")),
            )
        except (ValueError, KeyError, TypeError):
            raise invalid from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
