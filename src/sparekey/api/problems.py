"""RFC 9457 problem details. Every error answer of the API is built here.

Each problem type has a stable slug; its ``type`` member is the relative URI ``/problems/<slug>``,
which this server answers with a description of the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from sparekey.domain import errors

__all__ = [
    "MEDIA_TYPE",
    "PROBLEMS",
    "ProblemModel",
    "ProblemType",
    "problem_response",
    "to_problem",
]

MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str
    description: str

    @property
    def uri(self) -> str:
        return f"/problems/{self.slug}"


_TYPES = [
    ProblemType("malformed-request", 400, "Malformed request", "The body is not valid JSON."),
    ProblemType(
        "unauthorized",
        401,
        "Not authenticated",
        "Send a live API key as `Authorization: Bearer sk_...`; on vault backups, a live device "
        "token of the user instead (`Authorization: Bearer skd_...`; an API key is refused there, "
        "and a device token everywhere else).",
    ),
    ProblemType(
        "forbidden",
        403,
        "Not allowed",
        "The API key lacks the scope this operation needs, or the device token belongs to "
        "another user.",
    ),
    ProblemType(
        "assurance-required",
        403,
        "Fresh second factor required",
        "Adding or removing a factor, or making new backup codes, for a user who has an active "
        "factor needs a fresh verification: send the `assurance_token` of a successful verify "
        "(valid a few minutes) in the `Sparekey-Assurance` header. `detail` says whether it "
        "was missing, expired, for another user, not valid, or an enrollment token used for "
        "more than adding a factor. An admin-scope key may send `Sparekey-Assurance: override` "
        "instead (audited).",
    ),
    ProblemType(
        "fallback-disabled",
        403,
        "Email and SMS codes unavailable",
        "This server does not send email or SMS codes: `fallback_channels` is `disabled`, or no "
        "SMTP server or SMS provider is configured for this channel.",
    ),
    ProblemType(
        "fallback-not-allowed",
        403,
        "Email and SMS codes are a fallback here",
        "With `fallback_channels = fallback_only` an email or SMS code signs in only a user who "
        "has no other active factor; this user has an authenticator app or security key.",
    ),
    ProblemType("not-found", 404, "Not found", "There is no such resource."),
    ProblemType("user-not-found", 404, "User not found", "No user has this id."),
    ProblemType(
        "factor-not-found", 404, "Factor not found", "This user has no factor with this id."
    ),
    ProblemType("api-key-not-found", 404, "API key not found", "No API key has this id."),
    ProblemType(
        "device-token-not-found",
        404,
        "Device token not found",
        "This user has no device token with this id.",
    ),
    ProblemType(
        "vault-backup-not-found",
        404,
        "Vault backup not found",
        "This user has no vault backup yet, or none of this version (only the newest few are "
        "kept).",
    ),
    ProblemType(
        "method-not-allowed",
        405,
        "Method not allowed",
        "This resource does not answer that method.",
    ),
    ProblemType("user-exists", 409, "User exists", "A user with this id already exists."),
    ProblemType(
        "factor-state",
        409,
        "Factor in the wrong state",
        "The factor's state does not allow this (for example confirming an active factor).",
    ),
    ProblemType(
        "factor-expired",
        409,
        "Enrollment expired",
        "The pending factor was not confirmed in time; enroll again.",
    ),
    ProblemType(
        "credential-exists",
        409,
        "Credential already registered",
        "This security key or passkey is already registered (to this or another user).",
    ),
    ProblemType(
        "no-credentials",
        409,
        "No security key",
        "The user has no security key or passkey to sign in with.",
    ),
    ProblemType(
        "last-factor",
        409,
        "Last factor",
        "Removing this factor would leave the user without any active factor, or without any "
        "security key or passkey. Add another first, mark it lost if the device is gone, or "
        "remove it with an admin-scope key and `force=true` (audited).",
    ),
    ProblemType(
        "destination-waiting",
        409,
        "New destination still waiting",
        "A changed phone number or address, or that of a second email or SMS factor, receives no "
        "code until its waiting period ends (`fallback_destination_wait_seconds`); `until` says "
        "when.",
    ),
    ProblemType(
        "recovery-state",
        409,
        "Recovery case in the wrong state",
        "The recovery case's state does not allow this step (steps cannot be skipped, and a "
        "closed case cannot be resumed); `detail` says which state it is in.",
    ),
    ProblemType(
        "fallback-evidence-missing",
        409,
        "No code was checked in this case",
        "`fallback_code` may be recorded as identity evidence only after an email or SMS code "
        "sent inside the case was checked (`POST .../fallback-code/check`).",
    ),
    ProblemType("case-not-found", 404, "Recovery case not found", "No recovery case has this id."),
    ProblemType("conflict", 409, "Conflict", "The request conflicts with the current state."),
    ProblemType(
        "precondition-failed",
        412,
        "Precondition failed",
        "The latest vault backup is not the one `If-Match` named (another computer stored one "
        "first), or a backup exists although `If-None-Match: *` said there was none. The `ETag` "
        "header names the latest; fetch it, merge, and retry with that ETag in `If-Match`.",
    ),
    ProblemType(
        "vault-backup-too-large",
        413,
        "Vault backup too large",
        "The body is larger than this server accepts for a vault backup "
        "(`vault_backup_max_bytes`, 1 MiB by default).",
    ),
    ProblemType(
        "unsupported-media-type",
        415,
        "Unsupported media type",
        "Send the body as the operation documents it: application/json, or "
        "application/octet-stream for a vault backup.",
    ),
    ProblemType(
        "invalid-input",
        422,
        "Invalid input",
        "A field is missing or out of range; `errors` lists each field and why.",
    ),
    ProblemType(
        "code-rejected",
        422,
        "Code rejected",
        "The code given to confirm or resynchronise a factor did not match it.",
    ),
    ProblemType(
        "credential-rejected",
        422,
        "Credential rejected",
        "The security key's registration response was not accepted: a wrong origin or relying "
        "party, an expired or reused challenge, a bad signature or attestation, or an "
        "authenticator this deployment's policy does not allow. `detail` says which.",
    ),
    ProblemType(
        "precondition-required",
        428,
        "Precondition required",
        "A vault backup is stored only on a condition: send `If-Match` with the ETag of the "
        "latest backup, or `If-None-Match: *` for the first one.",
    ),
    ProblemType(
        "too-many-attempts",
        429,
        "Too many wrong codes",
        "Codes from authenticator apps are locked for the seconds in `Retry-After`; a backup code "
        "still works.",
    ),
    ProblemType(
        "factors-suspended",
        429,
        "Authenticator codes suspended",
        "After too many wrong codes in a row, codes from authenticator apps are refused until the "
        "user signs in with a backup code or a security key, or an administrator lifts the "
        "suspension.",
    ),
    ProblemType(
        "drill-limited",
        429,
        "Too many backup-code checks",
        "Recovery drills may check a user's backup codes only a few times in a while "
        "(`drill_checks` per `drill_seconds`); retry after the seconds in `Retry-After`. "
        "Signing in with a backup code is not limited by this.",
    ),
    ProblemType(
        "send-limited",
        429,
        "Too many codes sent",
        "Email and SMS codes are sent only a few times in a while to one user and to one "
        "destination; retry after the seconds in `Retry-After`.",
    ),
    ProblemType(
        "rate-limited",
        429,
        "Too many requests",
        "This API key, or the end user's IP address, sent more requests than the service allows; "
        "retry after the seconds in `Retry-After`.",
    ),
    ProblemType(
        "delivery-failed",
        502,
        "Delivery failed",
        "The email or text message could not be handed to its provider (refused, unreachable or "
        "too slow); `detail` names the provider and the reason. Nothing was marked as sent: it is "
        "safe to ask for a new code.",
    ),
    ProblemType(
        "unavailable",
        503,
        "Temporarily unavailable",
        "The database is busy or unreachable; nothing was changed. Retry after a moment.",
    ),
    ProblemType(
        "internal-error",
        500,
        "Internal error",
        "Something failed on the server; nothing was changed. The error is logged.",
    ),
]
PROBLEMS: dict[str, ProblemType] = {t.slug: t for t in _TYPES}


class FieldError(BaseModel):
    field: str
    message: str


class ProblemModel(BaseModel):
    """The RFC 9457 body, as documented in the OpenAPI schema."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


def problem_response(
    slug: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    kind = PROBLEMS[slug]
    body: dict[str, Any] = {
        "type": kind.uri,
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=kind.status, media_type=MEDIA_TYPE, headers=headers)


_ERROR_SLUGS: list[tuple[type[errors.SparekeyError], str]] = [
    (errors.UserNotFoundError, "user-not-found"),
    (errors.FactorNotFoundError, "factor-not-found"),
    (errors.ApiKeyNotFoundError, "api-key-not-found"),
    (errors.DeviceTokenNotFoundError, "device-token-not-found"),
    (errors.VaultBackupNotFoundError, "vault-backup-not-found"),
    (errors.CaseNotFoundError, "case-not-found"),
    (errors.NotFoundError, "not-found"),
    (errors.UserExistsError, "user-exists"),
    (errors.CredentialExistsError, "credential-exists"),
    (errors.NoCredentialsError, "no-credentials"),
    (errors.FactorExpiredError, "factor-expired"),
    (errors.FactorStateError, "factor-state"),
    (errors.LastFactorError, "last-factor"),
    (errors.DestinationWaitingError, "destination-waiting"),
    (errors.FallbackEvidenceMissingError, "fallback-evidence-missing"),
    (errors.RecoveryStateError, "recovery-state"),
    (errors.PreconditionFailedError, "precondition-failed"),
    (errors.PreconditionRequiredError, "precondition-required"),
    (errors.VaultBackupTooLargeError, "vault-backup-too-large"),
    (errors.ConflictError, "conflict"),
    (errors.CodeRejectedError, "code-rejected"),
    (errors.CredentialRejectedError, "credential-rejected"),
    (errors.FactorsSuspendedError, "factors-suspended"),
    (errors.ThrottledError, "too-many-attempts"),
    (errors.DrillLimitedError, "drill-limited"),
    (errors.SendLimitedError, "send-limited"),
    (errors.RateLimitedError, "rate-limited"),
    (errors.InvalidInputError, "invalid-input"),
    (errors.DeliveryError, "delivery-failed"),
    (errors.AssuranceRequiredError, "assurance-required"),
    (errors.FallbackDisabledError, "fallback-disabled"),
    (errors.FallbackNotAllowedError, "fallback-not-allowed"),
    (errors.AuthenticationError, "unauthorized"),
    (errors.PermissionDeniedError, "forbidden"),
    (errors.AuthError, "unauthorized"),
]


def to_problem(error: errors.SparekeyError) -> JSONResponse:
    slug = next((s for cls, s in _ERROR_SLUGS if isinstance(error, cls)), "internal-error")
    headers = {"WWW-Authenticate": "Bearer"} if slug == "unauthorized" else None
    if isinstance(error, errors.ThrottledError | errors.RateLimitedError) and error.retry_after:
        headers = {"Retry-After": str(error.retry_after)}
    if isinstance(error, errors.PreconditionFailedError) and error.current_etag:
        headers = {"ETag": error.current_etag}
    field_errors = None
    if isinstance(error, errors.InvalidInputError) and error.field:
        field_errors = [{"field": error.field, "message": error.detail}]
    until = error.until.isoformat() if isinstance(error, errors.DestinationWaitingError) else None
    return problem_response(slug, error.detail, headers=headers, errors=field_errors, until=until)
