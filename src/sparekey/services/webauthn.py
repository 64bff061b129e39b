"""WebAuthn security keys and passkeys: the registration and authentication ceremonies.

The ceremonies themselves are py_webauthn's; this module keeps their state and applies the
deployment's policy around them:

- Challenges are 32 random bytes, single use, and live in the database (as their SHA-256), so any
  node can finish a ceremony another began. The browser sends the challenge back inside
  ``clientDataJSON``; taking it out of the table is one DELETE ... RETURNING, which exactly one
  response can win. An expired, unknown or reused challenge fails the ceremony.
- A credential's sign counter must move forward unless it is 0 for good (many passkeys keep 0).
  A counter that does not is a sign of a cloned authenticator: the assertion is refused,
  ``webauthn.counter_regressed`` is audited and the user is notified. The counter is checked only
  after the signature, so nobody without the key can raise that alarm.
- Security keys are not guessable: no attempt here counts against the OTP throttle, and a
  successful sign-in lifts it, as a backup code does.
- What the browser sends is hostile input. py_webauthn's own exceptions are not the only ones it
  lets out on malformed data (a COSE key without ``x`` is a ``KeyError``, deep JSON nesting a
  ``RecursionError``, a CBOR list where a map belongs an ``IndexError`` ...), so every call into
  it on that input maps any failure to :class:`InvalidInputError` or
  :class:`CredentialRejectedError`, with a one-line printable reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.authentication.verify_authentication_response import VerifiedAuthentication
from webauthn.helpers import (
    bytes_to_base64url,
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    parse_attestation_object,
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from sparekey.domain.errors import (
    ConflictError,
    CredentialExistsError,
    CredentialRejectedError,
    InvalidInputError,
    NoCredentialsError,
    UserNotFoundError,
)
from sparekey.domain.models import (
    SYSTEM,
    Caller,
    Factor,
    FactorStatus,
    FactorType,
    WebAuthnCredential,
)
from sparekey.domain.ports import Clock
from sparekey.services._ids import new_id
from sparekey.services.assurance import NO_ASSURANCE, Assurance, AssuranceService, Operation
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.services.factors import MAX_FACTORS_PER_USER
from sparekey.services.verification import SignInHook
from sparekey.storage import factors as factors_repo
from sparekey.storage import throttle as throttle_repo
from sparekey.storage import users as users_repo
from sparekey.storage import webauthn as repo
from sparekey.storage.database import Database
from sparekey.storage.factors import FactorRecord
from sparekey.storage.prepared import Unit

__all__ = ["AuthenticatorDirectory", "WebAuthnPolicy", "WebAuthnResult", "WebAuthnService"]

REGISTRATION = "registration"
AUTHENTICATION = "authentication"
_TRANSPORTS = {t.value for t in AuthenticatorTransport}
_MAX_LABEL = 100
MAX_CREDENTIAL_ID = 1023  # bytes (WebAuthn Level 3, section 7.1: longer ones SHOULD be refused)
_MAX_REASON = 200


class AuthenticatorDirectory(Protocol):
    """What is known of authenticator models (a FIDO Metadata Service BLOB)."""

    def name(self, aaguid: str) -> str | None: ...

    def pem_roots(self, aaguids: Collection[str]) -> list[bytes]:
        """The attestation trust anchors of these models, none for a revoked one."""
        ...


@dataclass(frozen=True, kw_only=True)
class WebAuthnPolicy:
    rp_id: str
    rp_name: str
    origins: list[str]
    user_verification: Literal["required", "preferred", "discouraged"] = "preferred"
    resident_key: Literal["required", "preferred", "discouraged"] = "preferred"
    attestation: Literal["none", "direct"] = "none"
    aaguids: frozenset[str] = frozenset()  # with direct attestation: only these (empty: any known)
    directory: AuthenticatorDirectory | None = None
    allow_synced: bool = True
    challenge_ttl: timedelta = timedelta(minutes=5)


@dataclass(frozen=True, kw_only=True)
class WebAuthnResult:
    verified: bool
    user_id: str | None = None
    factor_id: str | None = None
    assurance_token: str | None = None  # a verified answer's step-up token


NOT_VERIFIED = WebAuthnResult(verified=False)


class _RefusedError(Exception):
    """An assertion that does not verify; ``reason`` goes to the audit log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WebAuthnService:
    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        auditor: Auditor,
        policy: WebAuthnPolicy,
        assurance: AssuranceService,
        on_sign_in: SignInHook | None = None,
    ) -> None:
        self._on_sign_in = on_sign_in
        self._assurance = assurance
        self._db = db
        self._clock = clock
        self._auditor = auditor
        self.policy = policy

    # -- registration ---------------------------------------------------------------------------

    def begin_registration(
        self, user_id: str, *, caller: Caller = SYSTEM, assurance: Assurance = NO_ASSURANCE
    ) -> dict[str, Any]:
        """PublicKeyCredentialCreationOptionsJSON for a new credential of ``user_id``. A user
        with an active factor must step up first (``assurance``), here and to finish."""
        policy = self.policy
        challenge = os.urandom(32)
        now = self._clock.now()
        with self._db.write() as conn:
            user = users_repo.get_user(conn, user_id)
            if user is None:
                raise UserNotFoundError(user_id)
            self._assurance.require(
                conn,
                user_id,
                operation=Operation.REGISTER_WEBAUTHN,
                assurance=assurance,
                caller=caller,
            )
            handle = repo.user_handle(conn, user_id, new=os.urandom(32))
            assert handle is not None
            existing = repo.credentials_of(conn, user_id)
            self._store_challenge(conn, challenge, REGISTRATION, user_id, now)
        options = generate_registration_options(
            rp_id=policy.rp_id,
            rp_name=policy.rp_name,
            user_id=handle,
            user_name=user.email or user.id,
            user_display_name=user.display_name or user.email or user.id,
            challenge=challenge,
            timeout=int(policy.challenge_ttl.total_seconds() * 1000),
            attestation=AttestationConveyancePreference(policy.attestation),
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement(policy.resident_key),
                user_verification=UserVerificationRequirement(policy.user_verification),
            ),
            exclude_credentials=[_descriptor(c, t) for c, t in existing],
        )
        answer: dict[str, Any] = json.loads(options_to_json(options))
        answer["extensions"] = {"credProps": True}  # tells us whether a passkey was made
        return answer

    def finish_registration(
        self,
        user_id: str,
        credential: Mapping[str, Any],
        *,
        label: str | None = None,
        caller: Caller = SYSTEM,
        assurance: Assurance = NO_ASSURANCE,
    ) -> Factor:
        """Check the browser's RegistrationResponseJSON and store the new credential."""
        parsed = _parse(parse_registration_credential_json, credential)
        assert isinstance(parsed, RegistrationCredential)
        challenge = _challenge_of(parsed.response.client_data_json)
        now = self._clock.now()
        try:
            with self._db.write() as conn:
                taken = repo.consume_challenge(conn, hashlib.sha256(challenge).digest(), now=now)
            if taken is None or taken.ceremony != REGISTRATION or taken.user_id != user_id:
                raise CredentialRejectedError(
                    "the challenge is unknown, expired or already used; start the registration "
                    "again"
                )
            credential_info, public_key = self._verify_registration(
                parsed, challenge, require_uv=taken.user_verification == "required"
            )
        except CredentialRejectedError as exc:
            self._registration_refused(user_id, str(exc), caller)
            raise
        discoverable = _cred_props_rk(credential)
        credential_info = replace(credential_info, discoverable=discoverable)
        factor = Factor(
            id=new_id("fct"),
            user_id=user_id,
            type=FactorType.WEBAUTHN,
            status=FactorStatus.ACTIVE,
            label=(label or self._default_label(credential_info))[:_MAX_LABEL],
            algorithm=None,
            digits=None,
            period=None,
            last_step=None,
            drift=0,
            created_at=now,
            confirmed_at=now,
            last_used_at=None,
            expires_at=None,
            webauthn=credential_info,
        )
        try:
            with self._db.write() as conn:
                if not users_repo.user_exists(conn, user_id):
                    raise UserNotFoundError(user_id)
                self._assurance.require(
                    conn,
                    user_id,
                    operation=Operation.REGISTER_WEBAUTHN,
                    assurance=assurance,
                    caller=caller,
                )
                if len(factors_repo.list_factors(conn, user_id, now=now)) >= MAX_FACTORS_PER_USER:
                    raise ConflictError(
                        f"a user may hold at most {MAX_FACTORS_PER_USER} factors; remove one first"
                    )
                factors_repo.insert_factor(
                    conn, FactorRecord(factor=factor, secret=None, secret_key_id=None)
                )
                repo.insert_credential(
                    conn,
                    factor_id=factor.id,
                    user_id=user_id,
                    credential=credential_info,
                    public_key=public_key,
                )
                details = {
                    "factor_id": factor.id,
                    "factor_type": FactorType.WEBAUTHN.value,
                    "aaguid": credential_info.aaguid,
                    "backup_eligible": credential_info.backup_eligible,
                }
                for event in ("factor.enrolled", "factor.confirmed"):
                    entry = AuditEntry(event=event, user_id=user_id, details=details)
                    self._auditor.record(conn, entry, caller)
        except IntegrityError:
            raise CredentialExistsError() from None
        return factor

    def _verify_registration(
        self, parsed: RegistrationCredential, challenge: bytes, *, require_uv: bool
    ) -> tuple[WebAuthnCredential, bytes]:
        policy = self.policy
        roots = None
        if policy.attestation == "direct":
            roots = self._trust_anchors(parsed)
        try:
            verified = verify_registration_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=policy.rp_id,
                expected_origin=policy.origins,
                require_user_verification=require_uv,
                pem_root_certs_bytes_by_fmt=roots,
            )
        except Exception as exc:  # hostile input: see the module docstring
            raise CredentialRejectedError(
                f"the registration did not verify: {_reason(exc)}"
            ) from None
        if parsed.raw_id != verified.credential_id:
            raise CredentialRejectedError("rawId is not the id of the credential created")
        if len(verified.credential_id) > MAX_CREDENTIAL_ID:
            raise CredentialRejectedError(
                f"the credential id is longer than {MAX_CREDENTIAL_ID} bytes"
            )
        try:  # unchecked by py_webauthn without attestation; a key no assertion can verify under
            decoded_public_key_to_cryptography(
                decode_credential_public_key(verified.credential_public_key)
            )
        except Exception as exc:  # hostile input: see the module docstring
            raise CredentialRejectedError(
                f"the credential's public key is not usable: {_reason(exc)}"
            ) from None
        fmt = AttestationFormat(verified.fmt)  # py_webauthn may hand back the plain string
        if policy.attestation == "direct" and fmt == AttestationFormat.NONE:
            raise CredentialRejectedError("this deployment requires attestation; none was given")
        synced = verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE
        if synced and not policy.allow_synced:
            raise CredentialRejectedError(
                "this deployment accepts only device-bound keys, not synced passkeys"
            )
        given = (str(getattr(t, "value", t)) for t in (parsed.response.transports or []))
        transports = tuple(t for t in given if t in _TRANSPORTS)
        info = WebAuthnCredential(
            credential_id=verified.credential_id,
            aaguid=verified.aaguid,
            authenticator_name=self._name(verified.aaguid),
            transports=transports,
            attestation_format=fmt.value,
            backup_eligible=synced,
            backed_up=verified.credential_backed_up,
            discoverable=None,
            sign_count=verified.sign_count,
        )
        return info, verified.credential_public_key

    def _trust_anchors(
        self, parsed: RegistrationCredential
    ) -> dict[AttestationFormat, list[bytes]]:
        """With direct attestation: the roots of this authenticator's model, if it is allowed."""
        policy = self.policy
        try:
            attestation = parse_attestation_object(parsed.response.attestation_object)
        except Exception as exc:  # hostile input: see the module docstring
            raise CredentialRejectedError(
                f"the attestation object is malformed: {_reason(exc)}"
            ) from None
        data = attestation.auth_data.attested_credential_data
        if data is None:
            raise CredentialRejectedError("the response carries no credential")
        aaguid = _aaguid(data.aaguid)
        if attestation.fmt != AttestationFormat.NONE and not attestation.att_stmt.x5c:
            raise CredentialRejectedError(
                "self attestation proves nothing about the authenticator; a certified key is "
                "required"
            )
        if policy.aaguids and aaguid not in policy.aaguids:
            raise CredentialRejectedError(f"authenticator model {aaguid} is not on the allowlist")
        roots = policy.directory.pem_roots([aaguid]) if policy.directory is not None else []
        if not roots:
            raise CredentialRejectedError(
                f"no trust anchor for authenticator model {aaguid} in the metadata (unknown or "
                "revoked)"
            )
        return {fmt: roots for fmt in AttestationFormat if fmt is not AttestationFormat.NONE}

    def _store_challenge(
        self, conn: Connection, challenge: bytes, ceremony: str, user_id: str | None, now: datetime
    ) -> None:
        """Keep a new challenge (as its SHA-256) for one answer, and sweep out expired ones."""
        repo.purge_expired_challenges(conn, now=now)
        repo.insert_challenge(
            conn,
            hashlib.sha256(challenge).digest(),
            ceremony=ceremony,
            user_id=user_id,
            user_verification=self.policy.user_verification,
            now=now,
            expires_at=now + self.policy.challenge_ttl,
        )

    def _registration_refused(self, user_id: str, reason: str, caller: Caller) -> None:
        with self._db.write() as conn:
            if users_repo.user_exists(conn, user_id):
                entry = AuditEntry(
                    event="webauthn.registration_refused",
                    outcome="failure",
                    user_id=user_id,
                    details={"reason": reason[:200]},
                )
                self._auditor.record(conn, entry, caller)

    def _name(self, aaguid: str) -> str | None:
        directory = self.policy.directory
        return directory.name(aaguid) if directory is not None else None

    def _default_label(self, info: WebAuthnCredential) -> str:
        if info.authenticator_name:
            return info.authenticator_name
        return "Passkey" if info.backup_eligible else "Security key"

    def describe(self, factor: Factor) -> Factor:
        """The factor with its authenticator's name filled in, where the metadata knows it."""
        info = factor.webauthn
        if info is None or info.authenticator_name is not None:
            return factor
        name = self._name(info.aaguid)
        if name is None:
            return factor
        return replace(factor, webauthn=replace(info, authenticator_name=name))

    # -- authentication -------------------------------------------------------------------------

    def begin_authentication(
        self, user_id: str | None = None, *, caller: Caller = SYSTEM
    ) -> dict[str, Any]:
        """PublicKeyCredentialRequestOptionsJSON. Without ``user_id``: a passkey sign-in, where
        the browser offers the user's discoverable credentials and the user handle names them."""
        policy = self.policy
        challenge = os.urandom(32)
        now = self._clock.now()
        allowed: list[PublicKeyCredentialDescriptor] = []
        with self._db.write() as conn:
            if user_id is not None:
                if not users_repo.user_exists(conn, user_id):
                    raise UserNotFoundError(user_id)
                allowed = [_descriptor(c, t) for c, t in repo.credentials_of(conn, user_id)]
                if not allowed:
                    raise NoCredentialsError(user_id)
            self._store_challenge(conn, challenge, AUTHENTICATION, user_id, now)
        options = generate_authentication_options(
            rp_id=policy.rp_id,
            challenge=challenge,
            timeout=int(policy.challenge_ttl.total_seconds() * 1000),
            allow_credentials=allowed,
            user_verification=UserVerificationRequirement(policy.user_verification),
        )
        answer: dict[str, Any] = json.loads(options_to_json(options))
        return answer

    def finish_authentication(
        self, credential: Mapping[str, Any], *, caller: Caller = SYSTEM
    ) -> WebAuthnResult:
        """Check the browser's AuthenticationResponseJSON. A malformed one raises
        :class:`InvalidInputError`; one that does not verify answers ``verified: false``.

        The sign-in path: one read, the signature checked outside any transaction, then one short
        write transaction that takes the challenge, moves the counter and writes the audit
        record (prepared statements on one pooled connection, like code verification)."""
        parsed = _parse(parse_authentication_credential_json, credential)
        assert isinstance(parsed, AuthenticationCredential)
        challenge = _challenge_of(parsed.response.client_data_json)
        now = self._clock.now()
        with self._db.unit() as unit:
            stored = repo.find_credential(unit, parsed.raw_id)
            checked = self._check_assertion(parsed, challenge, stored)
            unit.write()
            taken = repo.consume_challenge(unit, hashlib.sha256(challenge).digest(), now=now)
            try:
                result = self._conclude(unit, parsed, taken, stored, checked, now, caller)
            except _RefusedError as refused:
                details: dict[str, object] = {"kind": "webauthn", "reason": refused.reason}
                if stored is not None:
                    details["factor_id"] = stored.factor_id
                entry = AuditEntry(
                    event="verify.failed",
                    outcome="failure",
                    user_id=None if stored is None else stored.user_id,
                    details=details,
                )
                self._auditor.record(unit, entry, caller)
                return NOT_VERIFIED
        assert result.user_id is not None  # committed: the sign-in counts, and steps the user up
        return replace(result, assurance_token=self._assurance.issue(result.user_id))

    def _check_assertion(
        self,
        parsed: AuthenticationCredential,
        challenge: bytes,
        stored: repo.StoredCredential | None,
    ) -> VerifiedAuthentication | str:
        """The signature, origin, RP id and flags, checked against the stored public key (no
        state involved); a string says why it failed. User verification is checked later, with
        what the challenge asked for."""
        if stored is None:
            return "unknown credential"
        try:
            return verify_authentication_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=self.policy.rp_id,
                expected_origin=self.policy.origins,
                credential_public_key=stored.public_key,
                credential_current_sign_count=0,  # compared in _conclude, after the signature
            )
        except Exception as exc:  # hostile input (or a stored key no longer usable): fail closed
            return f"did not verify: {_reason(exc)}"

    def _conclude(
        self,
        unit: Unit,
        parsed: AuthenticationCredential,
        taken: repo.Challenge | None,
        stored: repo.StoredCredential | None,
        checked: VerifiedAuthentication | str,
        now: datetime,
        caller: Caller,
    ) -> WebAuthnResult:
        if stored is None:
            raise _RefusedError("unknown credential")
        if taken is None or taken.ceremony != AUTHENTICATION:
            raise _RefusedError("unknown, expired or reused challenge")
        if stored.status is not FactorStatus.ACTIVE:
            raise _RefusedError("credential not active")
        if taken.user_id is not None and taken.user_id != stored.user_id:
            raise _RefusedError("credential of another user")
        handle = parsed.response.user_handle
        if (taken.user_id is None and not handle) or (handle and handle != stored.user_handle):
            raise _RefusedError("user handle does not match the credential")
        if isinstance(checked, str):
            raise _RefusedError(checked)
        if taken.user_verification == "required" and not checked.user_verified:
            raise _RefusedError("user verification was required but not performed")
        new_count = checked.new_sign_count
        if (new_count or stored.sign_count) and new_count <= stored.sign_count:
            self._counter_regressed(unit, stored, new_count, caller)
        if not repo.record_use(
            unit,
            stored.factor_id,
            old_count=stored.sign_count,
            new_count=new_count,
            backed_up=checked.credential_backed_up,
            now=now,
        ):  # another sign-in with this key moved the counter first: the same alarm
            self._counter_regressed(unit, stored, new_count, caller)
        if stored.throttled:
            throttle_repo.clear(unit, stored.user_id)  # not guessable: lifts the throttle
        if stored.open_recovery_case and self._on_sign_in is not None:
            self._on_sign_in(unit, stored.user_id, caller)
        details = {"factor_id": stored.factor_id, "factor_type": "webauthn"}
        entry = AuditEntry(event="verify.succeeded", user_id=stored.user_id, details=details)
        self._auditor.record(unit, entry, caller)
        return WebAuthnResult(verified=True, user_id=stored.user_id, factor_id=stored.factor_id)

    def _counter_regressed(
        self, unit: Unit, stored: repo.StoredCredential, new_count: int, caller: Caller
    ) -> None:
        entry = AuditEntry(
            event="webauthn.counter_regressed",
            outcome="failure",
            user_id=stored.user_id,
            details={
                "factor_id": stored.factor_id,
                "stored": stored.sign_count,
                "received": new_count,
            },
        )
        self._auditor.record(unit, entry, caller)
        raise _RefusedError("sign counter did not increase: a cloned authenticator?")


def _descriptor(credential_id: bytes, transports: tuple[str, ...]) -> PublicKeyCredentialDescriptor:
    return PublicKeyCredentialDescriptor(
        id=credential_id,
        transports=[AuthenticatorTransport(t) for t in transports if t in _TRANSPORTS] or None,
    )


def _reason(exc: Exception) -> str:
    """Why py_webauthn refused the input, as one printable line: its own exceptions in their
    words, anything raised from deeper inside by its type (the message may quote the input)."""
    if isinstance(exc, WebAuthnException):
        text = str(exc).replace(" See __cause__ for more info", "")
    else:
        text = f"malformed data ({type(exc).__name__})"
    text = "".join(char if char.isprintable() else "?" for char in text)
    return text[:_MAX_REASON] or type(exc).__name__


def _parse(parser: Any, credential: Mapping[str, Any]) -> Any:
    """py_webauthn's parse of the browser's JSON; any structural fault is one clear error."""
    try:
        return parser(dict(credential))
    except Exception as exc:  # hostile input: see the module docstring
        raise InvalidInputError(
            f"the credential is malformed: {_reason(exc)}", field="credential"
        ) from None


def _challenge_of(client_data_json: bytes) -> bytes:
    try:
        return bytes(parse_client_data_json(client_data_json).challenge)
    except Exception as exc:  # hostile input: see the module docstring
        raise InvalidInputError(
            f"clientDataJSON is malformed: {_reason(exc)}", field="credential"
        ) from None


def _cred_props_rk(credential: Mapping[str, Any]) -> bool | None:
    results = credential.get("clientExtensionResults")
    if isinstance(results, dict):
        props = results.get("credProps")
        if isinstance(props, dict) and isinstance(props.get("rk"), bool):
            return bool(props["rk"])
    return None


def _aaguid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def credential_id_text(credential_id: bytes) -> str:
    return bytes_to_base64url(credential_id)
