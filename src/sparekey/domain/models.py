"""Frozen records that services return and the edges render."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sparekey.protocols.rfc4226 import HashAlgorithm


class FactorType(StrEnum):
    TOTP = "totp"
    HOTP = "hotp"
    WEBAUTHN = "webauthn"
    EMAIL = "email"
    SMS = "sms"

    @property
    def guessable(self) -> bool:
        """Codes computed from a seed the user's device holds (TOTP, HOTP)."""
        return self in (FactorType.TOTP, FactorType.HOTP)

    @property
    def fallback(self) -> bool:
        """One-time codes this server sends (email, SMS): the weakest factors, a last resort.
        They are guessable too and share the throttle's budget with TOTP and HOTP."""
        return self in (FactorType.EMAIL, FactorType.SMS)


class FactorStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    LOST = "lost"  # the user lost the device: it no longer verifies, and it is listed as lost

    @property
    def confirmed(self) -> bool:
        """Confirmed once, whether still in use or since lost: a user with such a factor is past
        their first enrollment, and adding another takes a step-up."""
        return self in (FactorStatus.ACTIVE, FactorStatus.LOST)


class Scope(StrEnum):
    """API key scopes. Each includes the ones below it: admin ⊇ manage ⊇ verify."""

    VERIFY = "verify"
    MANAGE = "manage"
    ADMIN = "admin"

    def includes(self, other: Scope) -> bool:
        order = [Scope.VERIFY, Scope.MANAGE, Scope.ADMIN]
        return order.index(self) >= order.index(other)


@dataclass(frozen=True, kw_only=True)
class ThrottleState:
    """The shared budget of a user's guessable codes (TOTP, HOTP, email and SMS codes)."""

    failures: int
    locked_until: datetime | None
    suspended_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class User:
    id: str
    display_name: str | None
    email: str | None
    created_at: datetime
    updated_at: datetime
    throttle: ThrottleState = ThrottleState(failures=0, locked_until=None, suspended_at=None)


@dataclass(frozen=True, kw_only=True)
class WebAuthnCredential:
    """What a WebAuthn factor's authenticator told us at registration (all of it public)."""

    credential_id: bytes
    aaguid: str
    authenticator_name: str | None
    transports: tuple[str, ...]
    attestation_format: str
    backup_eligible: bool  # a passkey that may be synced to other devices
    backed_up: bool  # ... and is, as of its last use
    discoverable: bool | None  # a resident key (passkey sign-in without a user name), when known
    sign_count: int


@dataclass(frozen=True, kw_only=True)
class Factor:
    """A second factor, without its secret."""

    id: str
    user_id: str
    type: FactorType
    status: FactorStatus
    label: str | None
    algorithm: HashAlgorithm | None  # OTP factors only
    digits: int | None  # OTP factors only
    period: int | None
    last_step: int | None
    drift: int
    created_at: datetime
    confirmed_at: datetime | None
    last_used_at: datetime | None
    expires_at: datetime | None
    webauthn: WebAuthnCredential | None = None
    destination: str | None = None  # email and SMS: the normalised address or E.164 number
    usable_after: datetime | None = None  # email and SMS: no code goes there before this
    destination_unconfirmed: bool = False  # email and SMS: changed, not yet confirmed by a code


@dataclass(frozen=True, kw_only=True)
class Enrollment:
    """A new pending factor and what the user needs to set up their app; shown once."""

    factor: Factor
    secret: bytes
    otpauth_uri: str


@dataclass(frozen=True, kw_only=True)
class ApiKey:
    id: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None
    operator_id: str | None = None  # an operator's personal token: actions are the operator's
    operator_role: str | None = None

    def allows(self, needed: Scope) -> bool:
        return self.revoked_at is None and any(s.includes(needed) for s in self.scopes)


@dataclass(frozen=True, kw_only=True)
class NewApiKey:
    key: ApiKey
    token: str


@dataclass(frozen=True, kw_only=True)
class DeviceToken:
    """A desktop authenticator's credential: good for one user's vault backups and nothing else
    (never where an API key is asked for). Its secret is never kept, only a keyed hash of it."""

    id: str
    user_id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None  # to the minute: refreshed at most once a minute
    revoked_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class NewDeviceToken:
    device_token: DeviceToken
    token: str  # ``skd_...``, returned once


@dataclass(frozen=True, kw_only=True)
class VaultBackup:
    """One stored version of a user's desktop vault: opaque bytes the server cannot read."""

    user_id: str
    version: int  # 1, 2, 3 ... per user
    size: int
    sha256: str  # hex, of the bytes as stored
    created_at: datetime
    device_token_id: str | None  # the device token that uploaded it

    @property
    def etag(self) -> str:
        """The version's strong entity tag (RFC 9110 §8.8.3), quoted: ``"v3-<16 hex>"``."""
        return f'"v{self.version}-{self.sha256[:16]}"'


@dataclass(frozen=True, kw_only=True)
class VaultBackupData:
    backup: VaultBackup
    content: bytes


@dataclass(frozen=True, kw_only=True)
class VerifyResult:
    verified: bool
    factor_id: str | None = None
    factor_type: str | None = None
    backup_codes_remaining: int | None = None
    assurance_token: str | None = None  # a verified answer's step-up token


@dataclass(frozen=True, kw_only=True)
class BackupCodeSet:
    codes: list[str]
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class Caller:
    """Who asked for a change, and the end user's context the application passed on."""

    type: str  # "api_key", "operator", "system", "user" (the portal), "device_token"
    id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    role: str | None = None  # an operator's role: admin, helpdesk, auditor

    @property
    def label(self) -> str:
        """``type:id``: how a case records who requested, verified or approved it."""
        return f"{self.type}:{self.id}" if self.id else self.type


SYSTEM = Caller(type="system")


class OperatorRole(StrEnum):
    ADMIN = "admin"  # approves recovery, manages everything
    HELPDESK = "helpdesk"  # opens cases, verifies identity, issues passes; never approves
    AUDITOR = "auditor"  # reads only


@dataclass(frozen=True, kw_only=True)
class Operator:
    id: str
    name: str
    role: OperatorRole
    user_id: str  # the user record holding the operator's own second factors
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    id: int
    occurred_at: datetime
    event: str
    outcome: str
    actor_type: str
    actor_id: str | None
    user_id: str | None
    ip: str | None
    user_agent: str | None
    details: dict[str, object]
    seq: int | None


class CaseState(StrEnum):
    REQUESTED = "requested"
    IDENTITY_VERIFIED = "identity_verified"
    APPROVED = "approved"
    WAITING = "waiting"
    READY = "ready"
    COMPLETED = "completed"
    DENIED = "denied"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def open(self) -> bool:
        return self not in (
            CaseState.COMPLETED,
            CaseState.DENIED,
            CaseState.CANCELLED,
            CaseState.EXPIRED,
        )


@dataclass(frozen=True, kw_only=True)
class RecoveryCase:
    """A helpdesk recovery of a user who has no working factor (see services/recovery.py)."""

    id: str
    user_id: str
    state: CaseState
    approval: str  # "admins" or "contacts"
    approvals_needed: int
    approvals: tuple[str, ...]  # "operator:<id>" or "contact:<user id>"
    reason: str | None
    requested_by: str
    created_at: datetime
    updated_at: datetime
    evidence: tuple[str, ...]
    verified_by: str | None
    waiting_until: datetime | None
    pass_expires_at: datetime | None
    pass_redeemed_at: datetime | None
    closed_at: datetime | None
    closed_by: str | None
    close_reason: str | None
    fallback_verified_at: datetime | None = None  # a code checked inside the case
    fallback_factor_id: str | None = None
