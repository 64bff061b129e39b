"""Request and response bodies of the API."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    Strict,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from webauthn.helpers import bytes_to_base64url

from sparekey.domain.models import (
    AuditRecord,
    DeviceToken,
    Factor,
    RecoveryCase,
    User,
    VaultBackup,
)
from sparekey.domain.readiness import OrgReadiness, UserReadiness
from sparekey.services.fallback import mask

USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+=:~-]{0,127}$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _safe_text(value: str) -> str:
    """Printable text every database can store: no control characters, no lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value.strip()


@dataclass(frozen=True, eq=False)
class Documented:
    """Metadata that adds JSON Schema keywords to a type's schema in the OpenAPI document, for
    rules a validator enforces (the validator stays the source of the error message)."""

    keywords: tuple[tuple[str, Any], ...]

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.update(dict(self.keywords))
        return schema


# _safe_text's rule in ECMA-262 syntax, so that clients (and fuzzers) know it.
SAFE_TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
SafeText = Annotated[str, AfterValidator(_safe_text), Documented((("pattern", SAFE_TEXT_PATTERN),))]
UserIdPath = Annotated[
    str, Path(pattern=USER_ID_PATTERN, max_length=128, description="The application's user id")
]
FactorIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="A factor id")]
Email = Annotated[
    str,
    Field(
        max_length=320, pattern=r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@\s\x00-\x1f\x7f-\x9f]{1,255}$"
    ),
    AfterValidator(_safe_text),
]


def _ip_address(value: str) -> str:
    """An IPv4 or IPv6 address as JSON Schema's ``ipv4``/``ipv6`` formats take it (no IPv6 zone,
    no surrounding space), in its canonical form."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    if address is None or "%" in value:
        raise ValueError("must be an IPv4 or IPv6 address")
    return str(address)


IpAddress = Annotated[
    str,
    Field(max_length=64),
    AfterValidator(_ip_address),
    Documented((("anyOf", [{"format": "ipv4"}, {"format": "ipv6"}]),)),
]


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: Any) -> Any:
    """A date and time as the ``date-time`` format says (RFC 3339), not the other forms pydantic
    would also parse (a number of seconds since 1970, no seconds)."""
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("must be a date and time with its zone, e.g. 2026-01-15T12:00:00Z")
    return value


Moment = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


# Request bodies are strict: a value of the wrong JSON type (0 for a boolean, "6" for a number) is
# a 422, not silently converted; the OpenAPI document promises the types it declares.
_REQUEST = ConfigDict(extra="forbid", strict=True)


def _json_integer(value: Any) -> Any:
    """JSON Schema's ``integer``: any number with no fraction (``30.0`` is one), never a string
    or a boolean."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number")
    return value


# An integer in a (strict) request body as JSON Schema counts them: ``Annotated[int, bounds,
# *WHOLE_NUMBER]``, the bounds before the validator (after it, they would be lost from the schema).
WHOLE_NUMBER = (Strict(False), BeforeValidator(_json_integer))


class RequestContext(BaseModel):
    """The end user's side of the call, as the application saw it: for limits and the audit."""

    model_config = _REQUEST

    ip: IpAddress | None = None
    user_agent: Annotated[SafeText, Field(max_length=400)] | None = None


class Body(BaseModel):
    model_config = _REQUEST

    context: RequestContext | None = Field(
        default=None, description="The end user's IP address and user agent, if known"
    )


class UserCreate(Body):
    id: str = Field(pattern=USER_ID_PATTERN, max_length=128, examples=["alice"])
    display_name: Annotated[SafeText, Field(max_length=200)] | None = None
    email: Email | None = Field(
        default=None, description="Where security notifications go", examples=["alice@example.com"]
    )


class UserPatch(Body):
    display_name: Annotated[SafeText, Field(max_length=200)] | None = None
    email: Email | None = None


class ThrottleOut(BaseModel):
    failures: int = Field(description="Wrong authenticator codes in a row")
    locked_until: datetime | None = Field(description="Authenticator codes refused until then")
    suspended_at: datetime | None = Field(
        description="Authenticator codes refused until a backup code or an administrator"
    )


class UserOut(BaseModel):
    id: str
    display_name: str | None
    email: str | None
    created_at: datetime
    updated_at: datetime
    throttle: ThrottleOut

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            display_name=user.display_name,
            email=user.email,
            created_at=user.created_at,
            updated_at=user.updated_at,
            throttle=ThrottleOut(
                failures=user.throttle.failures,
                locked_until=user.throttle.locked_until,
                suspended_at=user.throttle.suspended_at,
            ),
        )


class UserList(BaseModel):
    users: list[UserOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


def _destination_of(kind: str, field: str, other: str) -> dict[str, Any]:
    """JSON Schema for "a ``kind`` factor needs ``field``, and not ``other``"."""
    return {
        "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
        "then": {
            "required": [field],
            "properties": {field: {"type": "string", "minLength": 1}, other: {"type": "null"}},
        },
    }


class FactorCreate(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                _destination_of("email", "address", "phone"),
                _destination_of("sms", "phone", "address"),
            ]
        }
    )

    type: Literal["totp", "hotp", "email", "sms"]
    label: Annotated[SafeText, Field(max_length=100)] | None = None
    address: Annotated[str, Field(max_length=320)] | None = Field(
        default=None, description="`email` factors: where codes go (confirmed with one)"
    )
    phone: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="`sms` factors: the number, normalised to E.164"
    )
    algorithm: Literal["SHA1", "SHA256", "SHA512"] = "SHA1"
    digits: Annotated[int, Field(ge=6, le=8), *WHOLE_NUMBER] = 6
    period: Annotated[int, Field(ge=1, le=86_400), *WHOLE_NUMBER] = Field(
        default=30, description="Seconds per step (TOTP)"
    )
    qr_png: bool = Field(default=False, description="Also return the QR code as a PNG data URI")


class WebAuthnOut(BaseModel):
    credential_id: str = Field(description="base64url, as the browser names the credential")
    aaguid: str = Field(description="The authenticator model (all zeros when not disclosed)")
    authenticator_name: str | None = Field(description="The model's name, where known")
    transports: list[str]
    attestation_format: str
    backup_eligible: bool = Field(description="A passkey that may be synced to other devices")
    backed_up: bool = Field(description="... and is synced, as of its last use")
    discoverable: bool | None = Field(description="Usable without a user name, when known")


class FactorOut(BaseModel):
    id: str
    type: str
    status: Literal["pending", "active", "lost"]
    label: str | None
    algorithm: str | None = Field(description="OTP factors: the HMAC hash")
    digits: int | None = Field(description="OTP factors: the code length")
    period: int | None
    drift: int = Field(description="Steps the device's clock was off at its last use (TOTP)")
    created_at: datetime
    confirmed_at: datetime | None
    last_used_at: datetime | None
    expires_at: datetime | None = Field(description="When a pending enrollment lapses")
    webauthn: WebAuthnOut | None = Field(default=None, description="Security keys and passkeys")
    destination: str | None = Field(
        default=None, description="Email and SMS factors: the address or number, masked"
    )
    usable_after: datetime | None = Field(
        default=None, description="Email and SMS factors: a new destination gets no code before"
    )
    destination_unconfirmed: bool = Field(
        default=False,
        description="Email and SMS factors: a changed destination signs in only once a code sent "
        "there after `usable_after` was confirmed (`POST .../confirm`)",
    )

    @classmethod
    def of(cls, factor: Factor) -> FactorOut:
        info = factor.webauthn
        webauthn = None
        if info is not None:
            webauthn = WebAuthnOut(
                credential_id=bytes_to_base64url(info.credential_id),
                aaguid=info.aaguid,
                authenticator_name=info.authenticator_name,
                transports=list(info.transports),
                attestation_format=info.attestation_format,
                backup_eligible=info.backup_eligible,
                backed_up=info.backed_up,
                discoverable=info.discoverable,
            )
        return cls(
            id=factor.id,
            type=factor.type.value,
            status=factor.status.value,
            label=factor.label,
            algorithm=None if factor.algorithm is None else factor.algorithm.value,
            digits=factor.digits,
            period=factor.period,
            drift=factor.drift,
            created_at=factor.created_at,
            confirmed_at=factor.confirmed_at,
            last_used_at=factor.last_used_at,
            expires_at=factor.expires_at,
            webauthn=webauthn,
            destination=mask(factor.type, factor.destination),
            usable_after=factor.usable_after,
            destination_unconfirmed=factor.destination_unconfirmed,
        )


class ConfirmedFactorOut(FactorOut):
    assurance_token: str = Field(
        description="The confirming code was a fresh verification: a step-up token, as verify "
        "gives (for example to make backup codes right after a first enrollment)"
    )


class EnrollmentOut(FactorOut):
    otpauth_uri: str = Field(description="Shown once; put it in a QR code or the user's app")
    secret: str = Field(description="The seed in base32, for typing in by hand; shown once")
    qr_svg: str = Field(description="The otpauth URI as an SVG QR code")
    qr_png: str | None = Field(default=None, description="PNG data URI, when asked for")


class FactorList(BaseModel):
    factors: list[FactorOut]


class FactorPatch(Body):
    label: Annotated[SafeText, Field(max_length=100)] | None = None
    address: Annotated[str, Field(max_length=320)] | None = Field(
        default=None, description="`email` factors: a new address (step-up; it waits first)"
    )
    phone: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="`sms` factors: a new number (step-up; it waits first)"
    )


class SentCodeOut(BaseModel):
    factor_id: str
    destination: str = Field(description="Masked")
    provider: str = Field(description="smtp, twilio or http")
    sent_at: datetime
    expires_at: datetime


class FallbackEnrollmentOut(FactorOut):
    code_sent: SentCodeOut | None = Field(
        description="The confirmation code sent; null while the destination waits"
    )


class CodeBody(Body):
    code: str = Field(min_length=1, max_length=256)


class ResyncBody(Body):
    codes: list[Annotated[str, Field(min_length=1, max_length=16)]] = Field(
        min_length=2, max_length=2, description="Two consecutive codes from the device"
    )


class PortalLinkOut(BaseModel):
    url: str = Field(
        description="Send the user's browser here (a redirect): a single-use link that opens "
        "their security page, signed in"
    )
    expires_at: datetime


# -- device tokens and vault backups of the desktop authenticator ---------------------------------

DeviceTokenIdPath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="A device token id (dtk_...)")
]
VersionPath = Annotated[
    int, Path(ge=1, le=2_147_483_647, description="A backup version (1, 2, 3 ...)")
]


class DeviceTokenCreate(Body):
    name: Annotated[
        SafeText,
        Field(
            min_length=1, max_length=64, description="Which computer holds it", examples=["Laptop"]
        ),
    ]


class DeviceTokenOut(BaseModel):
    id: str = Field(examples=["dtk_4p2xq7kfa3m5w6yz"])
    name: str
    created_at: datetime
    last_used_at: datetime | None = Field(description="To the minute; null if never used")
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: DeviceToken) -> DeviceTokenOut:
        return cls(
            id=token.id,
            name=token.name,
            created_at=token.created_at,
            last_used_at=token.last_used_at,
            revoked_at=token.revoked_at,
        )


class NewDeviceTokenOut(BaseModel):
    id: str
    name: str
    token: str = Field(
        description="`skd_...`: shown once; the desktop authenticator sends it as "
        "`Authorization: Bearer` to this user's vault backups (and nowhere else)"
    )
    created_at: datetime


class DeviceTokenList(BaseModel):
    device_tokens: list[DeviceTokenOut] = Field(description="Revoked ones too, oldest first")


class VaultBackupStored(BaseModel):
    version: int
    size: int = Field(description="Bytes")
    sha256: str = Field(description="Hex SHA-256 of the bytes as stored")
    created_at: datetime

    @classmethod
    def of(cls, backup: VaultBackup) -> VaultBackupStored:
        return cls(
            version=backup.version,
            size=backup.size,
            sha256=backup.sha256,
            created_at=backup.created_at,
        )


class VaultBackupOut(VaultBackupStored):
    device_token_id: str | None = Field(description="The device token that stored it")

    @classmethod
    def of(cls, backup: VaultBackup) -> VaultBackupOut:
        return cls(
            **VaultBackupStored.of(backup).model_dump(), device_token_id=backup.device_token_id
        )


class VaultBackupList(BaseModel):
    backups: list[VaultBackupOut] = Field(description="The versions kept, newest first")
    latest: int | None = Field(description="The newest version; null if there is none")


class BackupCodesOut(BaseModel):
    codes: list[str] = Field(description="Shown once; each works once")
    created_at: datetime


_STEP_UP_DOC = (
    "When verified: send it as `Sparekey-Assurance` to add or remove this user's factors or make "
    "new backup codes in the next minutes (`assurance_seconds`). A bearer secret: keep it in the "
    "user's server-side session, never log it"
)


class VerifyOut(BaseModel):
    verified: bool
    factor_id: str | None = Field(default=None, description="The factor that matched")
    factor_type: Literal["totp", "hotp", "backup_code"] | None = None
    backup_codes_remaining: int | None = None
    assurance_token: str | None = Field(default=None, description=_STEP_UP_DOC)


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]


class AuditRecordOut(BaseModel):
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
    seq: int | None = Field(description="Position in the hash chain; null until sealed")

    @classmethod
    def of(cls, record: AuditRecord) -> AuditRecordOut:
        return cls(**{name: getattr(record, name) for name in cls.model_fields})


class AuditPageOut(BaseModel):
    events: list[AuditRecordOut]
    next_cursor: int | None


# -- WebAuthn -------------------------------------------------------------------------------------

WebAuthnJson = Annotated[
    dict[str, Any],
    Field(description="Browser JSON, as `PublicKeyCredential.toJSON()` gives it"),
]


class WebAuthnOptionsOut(BaseModel):
    options: dict[str, Any] = Field(
        description="Pass to `PublicKeyCredential.parseCreationOptionsFromJSON` (registration) or "
        "`parseRequestOptionsFromJSON` (authentication), then to `navigator.credentials`"
    )


class WebAuthnRegistrationBody(Body):
    credential: WebAuthnJson
    label: Annotated[SafeText, Field(max_length=100)] | None = None


class WebAuthnAuthenticationStart(Body):
    user_id: str | None = Field(
        default=None,
        pattern=USER_ID_PATTERN,
        max_length=128,
        description="Omit for a passkey sign-in without a user name",
    )


class WebAuthnAuthenticationBody(Body):
    credential: WebAuthnJson


class WebAuthnResultOut(BaseModel):
    verified: bool
    user_id: str | None = None
    factor_id: str | None = None
    assurance_token: str | None = Field(default=None, description=_STEP_UP_DOC)


# -- recovery -------------------------------------------------------------------------------------

CaseIdPath = Annotated[str, Path(pattern=r"^rc_[a-z2-7]{1,40}$", description="A recovery case id")]


class RecoveryCaseOut(BaseModel):
    id: str
    user_id: str
    state: str = Field(
        description="requested, identity_verified, waiting, ready, completed, denied, cancelled "
        "or expired"
    )
    approval: Literal["admins", "contacts"]
    approvals_needed: int
    approvals: list[str] = Field(description="`operator:<id>` or `contact:<user id>`")
    reason: str | None
    requested_by: str
    created_at: datetime
    updated_at: datetime
    evidence: list[str] = Field(description="The checklist items the verifier checked")
    verified_by: str | None
    waiting_until: datetime | None
    pass_expires_at: datetime | None
    pass_redeemed_at: datetime | None
    closed_at: datetime | None
    closed_by: str | None
    close_reason: str | None
    fallback_verified_at: datetime | None = Field(
        description="When the user proved a code sent inside the case (`fallback_code` evidence)"
    )
    fallback_factor_id: str | None = Field(description="The email/SMS factor that code went to")

    @classmethod
    def of(cls, case: RecoveryCase) -> RecoveryCaseOut:
        return cls(
            id=case.id,
            user_id=case.user_id,
            state=case.state.value,
            approval="contacts" if case.approval == "contacts" else "admins",
            approvals_needed=case.approvals_needed,
            approvals=list(case.approvals),
            reason=case.reason,
            requested_by=case.requested_by,
            created_at=case.created_at,
            updated_at=case.updated_at,
            evidence=list(case.evidence),
            verified_by=case.verified_by,
            waiting_until=case.waiting_until,
            pass_expires_at=case.pass_expires_at,
            pass_redeemed_at=case.pass_redeemed_at,
            closed_at=case.closed_at,
            closed_by=case.closed_by,
            close_reason=case.close_reason,
            fallback_verified_at=case.fallback_verified_at,
            fallback_factor_id=case.fallback_factor_id,
        )


class RecoveryCaseList(BaseModel):
    cases: list[RecoveryCaseOut]


class CaseCreate(Body):
    user_id: str = Field(pattern=USER_ID_PATTERN, max_length=128)
    reason: Annotated[SafeText, Field(max_length=500)] | None = None
    approval: Literal["admins", "contacts"] = "admins"


class EvidenceBody(Body):
    evidence: list[Annotated[str, Field(max_length=64)]] = Field(max_length=20)


class FallbackCodeBody(Body):
    factor_id: str | None = Field(
        default=None,
        max_length=32,
        description="The user's email/SMS factor to send to; needed when they have several",
    )


class FallbackCheckOut(BaseModel):
    verified: bool
    case: RecoveryCaseOut | None = Field(
        default=None, description="The case, with the evidence recorded (when verified)"
    )


class ReasonBody(Body):
    reason: Annotated[SafeText, Field(max_length=500)] | None = None


class ContactApprovalBody(Body):
    contact_id: str = Field(pattern=USER_ID_PATTERN, max_length=128)


class PassBody(Body):
    lifetime_seconds: Annotated[int, Field(ge=300, le=28_800), *WHOLE_NUMBER] | None = None


class PassOut(BaseModel):
    case: RecoveryCaseOut
    access_pass: str = Field(description="Shown once; give it to the user by a trusted channel")
    expires_at: datetime


class RedeemBody(Body):
    access_pass: str = Field(alias="pass", min_length=1, max_length=64)


class RedeemOut(BaseModel):
    case_id: str
    enrollment_token: str = Field(
        description="Send as `Sparekey-Assurance` to enroll one new factor; good for nothing else"
    )
    expires_at: datetime


class CompleteBody(Body):
    factors: dict[str, Literal["keep", "revoke"]] = Field(
        description="For every factor the user had before redeeming the pass: keep or revoke"
    )


class CompletedOut(BaseModel):
    case: RecoveryCaseOut
    revoked: list[str]
    backup_codes: list[str] = Field(description="The new set, shown once")


class ContactsBody(Body):
    contacts: list[str] = Field(max_length=5)


class ContactsOut(BaseModel):
    contacts: list[str]


# -- Readiness and recovery drills ----------------------------------------------------------------


class ReadinessActionOut(BaseModel):
    id: str = Field(examples=["generate_backup_codes"])
    title: str
    why: str
    impact: int = Field(description="Points the score gains once this is done")


class ReadinessFactsOut(BaseModel):
    active_factors: int
    phishing_resistant_factors: int = Field(description="Active security keys and passkeys")
    stale_factors: int = Field(description="Active factors unused for 180 days")
    backup_codes_unused: int
    backup_codes_used: int
    backup_codes_proven: bool = Field(description="A drill checked a code of the current set")
    drilled: bool
    fallback_factors: int = Field(default=0, description="Active email and SMS factors")


class UserReadinessOut(BaseModel):
    user_id: str
    score: int = Field(ge=0, le=100)
    ways_in: int = Field(description="Active factors, plus one for a saved set of backup codes")
    one_device_from_lockout: bool = Field(description="Exactly one way in")
    actions: list[ReadinessActionOut] = Field(description="Highest impact first")
    facts: ReadinessFactsOut
    backup_codes_proven_at: datetime | None
    last_drill_at: datetime | None

    @classmethod
    def of(cls, readiness: UserReadiness) -> UserReadinessOut:
        assessment = readiness.assessment
        return cls(
            user_id=readiness.user_id,
            score=assessment.score,
            ways_in=assessment.ways_in,
            one_device_from_lockout=assessment.one_device_from_lockout,
            actions=[
                ReadinessActionOut.model_validate(a, from_attributes=True)
                for a in assessment.actions
            ],
            facts=ReadinessFactsOut.model_validate(readiness.facts, from_attributes=True),
            backup_codes_proven_at=readiness.backup_codes_proven_at,
            last_drill_at=readiness.last_drill_at,
        )


class BackupCodeCheckOut(BaseModel):
    valid: bool = Field(description="The code is one of the user's unused codes; it is not spent")
    remaining: int = Field(description="Unused backup codes")


class ScoreBandOut(BaseModel):
    low: int
    high: int
    users: int


class ActionCountOut(BaseModel):
    id: str
    title: str
    impact: int
    users: int = Field(description="Users this action applies to")
    points: int = Field(description="users times impact: what doing it for all of them is worth")


class OrgReadinessOut(BaseModel):
    generated_at: datetime
    users: int
    one_device_from_lockout: int = Field(description="Users with exactly one way in")
    no_way_in: int = Field(description="Users with no active factor and no saved unused code")
    mean_score: float
    median_score: int
    scores: list[ScoreBandOut] = Field(description="0-9, 10-19, ..., 90-99, 100")
    actions: list[ActionCountOut] = Field(description="Most points first")
    admins: int = Field(description="Enabled operators with the admin role")
    admins_without_phishing_resistant: list[str] = Field(description="Their operator names")

    @classmethod
    def of(cls, report: OrgReadiness) -> OrgReadinessOut:
        return cls.model_validate(report, from_attributes=True)
