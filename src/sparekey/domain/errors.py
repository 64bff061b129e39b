"""The one error hierarchy of Sparekey's services. Mapped to HTTP in ``sparekey.api`` alone.

::

    SparekeyError
     ├── NotFoundError
     │    ├── UserNotFoundError
     │    ├── FactorNotFoundError
     │    ├── ApiKeyNotFoundError
     │    ├── DeviceTokenNotFoundError
     │    └── VaultBackupNotFoundError
     ├── ConflictError
     │    ├── UserExistsError
     │    ├── FactorStateError          (confirming an active factor, resyncing a pending one ...)
     │    ├── FactorExpiredError        (a pending factor not confirmed in time)
     │    ├── LastFactorError           (removing the last active factor or security key)
     │    ├── DestinationWaitingError   (a new phone number or address in its waiting period)
     │    └── PreconditionFailedError   (If-Match / If-None-Match did not hold; the current ETag)
     ├── PreconditionRequiredError      (a conditional write sent without its condition)
     ├── VaultBackupTooLargeError       (a body over vault_backup_max_bytes; carries the limit)
     ├── InvalidInputError              (carries the field and why)
     │    └── CodeRejectedError         (a confirmation or resync code that did not match)
     ├── ThrottledError                 (guessable codes locked for a while; carries retry_after)
     │    └── FactorsSuspendedError     (guessable codes off until a non-guessable success)
     ├── RateLimitedError               (too many requests from one IP or API key)
     │    ├── DrillLimitedError         (too many backup-code checks for one user)
     │    └── SendLimitedError          (too many codes sent to one user or destination)
     ├── BackupError                    (a backup that cannot be made, opened or restored here)
     │    └── BackupDamagedError        (truncated, modified, or not a Sparekey backup at all)
     ├── DeliveryError                  (a mail or SMS provider did not take a message; says why)
     └── AuthError
          ├── AuthenticationError       (no or unknown credential)
          ├── PermissionDeniedError     (known credential, missing scope)
          │    ├── FallbackDisabledError (email and SMS codes are off here, or not configured)
          │    └── FallbackNotAllowedError (fallback only: the user has a stronger factor)
          └── AssuranceRequiredError    (a sensitive change without a fresh second factor)
"""

from __future__ import annotations

import math
from datetime import datetime


class SparekeyError(Exception):
    """Base of every error a service raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFoundError(SparekeyError):
    pass


class UserNotFoundError(NotFoundError):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"no user with id {user_id!r}")


class FactorNotFoundError(NotFoundError):
    def __init__(self, factor_id: str) -> None:
        super().__init__(f"no factor with id {factor_id!r} for this user")


class ApiKeyNotFoundError(NotFoundError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id!r}")


class DeviceTokenNotFoundError(NotFoundError):
    def __init__(self, token_id: str) -> None:
        super().__init__(f"no device token with id {token_id!r} for this user")


class VaultBackupNotFoundError(NotFoundError):
    def __init__(self, version: int | None = None) -> None:
        if version is None:
            super().__init__("this user has no vault backup yet")
        else:
            super().__init__(f"this user has no vault backup version {version} (never, or pruned)")


class ConflictError(SparekeyError):
    pass


class PreconditionFailedError(ConflictError):
    """A conditional write whose condition does not hold (someone else wrote first);
    ``current_etag`` is the entity tag of what is there now (None: nothing yet)."""

    def __init__(self, detail: str, *, current_etag: str | None) -> None:
        super().__init__(detail)
        self.current_etag = current_etag


class PreconditionRequiredError(SparekeyError):
    """A write that must be conditional (``If-Match`` or ``If-None-Match: *``) came without it."""


class VaultBackupTooLargeError(SparekeyError):
    def __init__(self, detail: str, *, limit: int) -> None:
        super().__init__(detail)
        self.limit = limit


class UserExistsError(ConflictError):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"a user with id {user_id!r} already exists")


class FactorStateError(ConflictError):
    pass


class FactorExpiredError(ConflictError):
    def __init__(self) -> None:
        super().__init__("this enrollment expired before it was confirmed; start a new one")


class LastFactorError(ConflictError):
    """Removing the factor would leave the user without an active factor, or without a
    phishing-resistant one (a security key or passkey)."""


class DestinationWaitingError(ConflictError):
    """A new phone number or address receives no code before its waiting period ends."""

    def __init__(self, until: datetime) -> None:
        super().__init__(
            "this phone number or address is new: it receives codes from "
            f"{until.isoformat()} on (a waiting period protects the account)"
        )
        self.until = until


class RecoveryStateError(ConflictError):
    """A recovery case is not in a state that allows this step."""


class FallbackEvidenceMissingError(RecoveryStateError):
    """``fallback_code`` claimed as identity evidence, but no email/SMS code was checked inside
    the case."""

    def __init__(self) -> None:
        super().__init__(
            "fallback_code is recorded only after the user proved a code sent inside this case "
            "(fallback-code/check)"
        )


class CaseNotFoundError(NotFoundError):
    def __init__(self, case_id: str) -> None:
        super().__init__(f"no recovery case {case_id!r}")


class InvalidInputError(SparekeyError):
    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class CredentialRejectedError(InvalidInputError):
    """A WebAuthn registration response was not accepted (or a policy refused the authenticator)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, field="credential")


class CredentialExistsError(ConflictError):
    def __init__(self) -> None:
        super().__init__("this security key or passkey is already registered")


class NoCredentialsError(ConflictError):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id!r} has no security key or passkey")


class CodeRejectedError(InvalidInputError):
    def __init__(
        self, detail: str = "the code is not valid for this factor", *, field: str = "code"
    ):
        super().__init__(detail, field=field)


class ThrottledError(SparekeyError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many wrong codes; try again in {retry_after} s, or use a backup code"
        )
        self.retry_after = retry_after


class FactorsSuspendedError(ThrottledError):
    def __init__(self) -> None:
        SparekeyError.__init__(
            self,
            "codes from authenticator apps are suspended after too many wrong codes; "
            "sign in with a backup code or a security key, or ask an administrator",
        )
        self.retry_after = 0


class RateLimitedError(SparekeyError):
    def __init__(self, what: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"too many requests from this {what}; retry in {self.retry_after} s")


class DrillLimitedError(RateLimitedError):
    """Recovery drills check a user's backup codes only a few times in a while."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        SparekeyError.__init__(
            self,
            f"too many backup-code checks for this user; retry in {self.retry_after} s "
            "(signing in with a backup code is not limited by this)",
        )


class SendLimitedError(RateLimitedError):
    """Codes by email or SMS are sent only a few times in a while, per user and per destination."""

    def __init__(self, what: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        SparekeyError.__init__(
            self, f"too many codes sent to this {what}; retry in {self.retry_after} s"
        )


class BackupError(SparekeyError):
    """Never raised by a request: backups are made and restored from the command line."""


class BackupDamagedError(BackupError):
    """The file is not what ``sparekey backup create`` wrote; nothing of it is used."""


class DeliveryError(SparekeyError):
    """An email or text message that was not handed over to its provider (refused, unreachable,
    timed out). ``detail`` is one line naming the provider and the reason; it never holds the
    code, the full phone number or a credential."""


class AuthError(SparekeyError):
    pass


class AuthenticationError(AuthError):
    pass


class PermissionDeniedError(AuthError):
    pass


class FallbackDisabledError(PermissionDeniedError):
    """Email and SMS codes are disabled by policy, or this server has no provider for them."""


class FallbackNotAllowedError(PermissionDeniedError):
    """``fallback_channels = fallback_only``: the user has an authenticator app or a security
    key, so an email or SMS code is not accepted (nor sent) for signing in."""


class AssuranceRequiredError(AuthError):
    """A sensitive change (adding or removing a factor, new backup codes) without a valid
    assurance token from a fresh verification; ``detail`` says what was wrong with it."""
