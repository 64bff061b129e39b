"""A software WebAuthn authenticator, with the browser around it, for tests and benchmarks.

``SoftAuthenticator.create`` answers ``PublicKeyCredentialCreationOptionsJSON`` and
``SoftAuthenticator.get`` answers ``PublicKeyCredentialRequestOptionsJSON`` the way a browser's
``credential.toJSON()`` does (WebAuthn Level 3, section 5.1: ``RegistrationResponseJSON`` and
``AuthenticationResponseJSON``), so a test can drive a relying party without a browser.

What it builds, byte for byte (the layouts py_webauthn 3.0.1 parses):

- authenticator data (section 6.1): ``sha256(rpId) || flags (1) || signCount (4, big-endian)
  [|| attested credential data]``, flags UP=0x01, UV=0x04, BE=0x08, BS=0x10, AT=0x40, ED=0x80;
- attested credential data (section 6.5.1): ``aaguid (16) || credentialIdLength (2, big-endian)
  || credentialId || COSE key``, the key ``{1: 2, 3: -7, -1: 1, -2: x, -3: y}`` (ES256, P-256) or
  ``{1: 1, 3: -8, -1: 6, -2: x}`` (EdDSA, Ed25519), in CTAP2 canonical order;
- ``clientDataJSON`` (section 5.8.1) as browsers serialise it: compact, keys in the order
  ``type, challenge, origin, crossOrigin``, the challenge re-encoded as base64url without padding;
- the attestation object (section 6.5.4) ``{"fmt", "attStmt", "authData"}``: ``none``, or
  ``packed`` (section 8.2) with self attestation ``{alg, sig}`` signed by the credential key, or
  basic attestation ``{alg: -7, sig, x5c: [leaf]}`` signed by a batch attestation key whose leaf
  certificate a ``TestCA`` issued under the rules of section 8.2.1;
- signatures over ``authenticatorData || sha256(clientDataJSON)``: DER ECDSA for ES256, raw
  Ed25519 for EdDSA.

The browser's part is modelled too, because a relying party's options must pass it:
``rp.id``/``rpId`` defaults to the origin's host and must be that host or a parent domain of it
(else ``SecurityError``); a credential listed in ``excludeCredentials`` raises
``InvalidStateError``; ``userVerification: "required"`` on an authenticator that cannot verify
raises ``NotAllowedError``, as does a requested ``authenticatorAttachment`` of the other kind;
an RP that does not offer our algorithm in ``pubKeyCredParams`` gets ``NotSupportedError``. When
the RP's ``attestation`` preference is ``"none"`` (the default) the browser replaces the
statement with ``fmt: "none"`` (section 5.1.3), except packed self attestation with a zero
AAGUID: ask for ``"direct"`` to see ``packed-x5c`` attestation.

The authenticator's part follows CTAP 2.1: one credential per (RP ID, user handle) is
discoverable and a new one replaces the old; ``get`` without ``allowCredentials`` uses the most
recently created discoverable credential for the RP ID (or ``credential_id``), with
``allowCredentials`` the first listed credential we hold; user handles come back for
discoverable credentials only; each credential has its own signature counter, which goes up by
``counter_step`` before every assertion (``counter_step=0`` keeps it at zero, like most passkey
providers).

For tests that tamper, every response can be rebuilt from its parts: ``client_data_json``,
``authenticator_data`` and ``sign_assertion`` are public, ``SoftAuthenticator.credentials`` holds
the private keys, and the responses are plain dicts to edit.

Cost, measured on one core (cryptography 50, OpenSSL 3), ES256 and EdDSA alike: ``create`` about
0.035 ms with ``none`` (one key generation, two public-key serialisations, one small CBOR
encoding; the COSE key is laid out by hand) and 0.06 ms with ``packed`` (one more signature; the
``x5c`` leaf is issued once, when the authenticator is made, as a batch attestation certificate
is); ``get`` about 0.03 ms (one signature, one SHA-256, three base64url encodings). RP ID hashes
and origin hosts are cached; lookups are by dict, so thousands of credentials cost nothing more.
For comparison, py_webauthn verifies an assertion in about 0.1 ms and a ``none`` registration in
about 0.03 ms, the same order as making them.
Not thread-safe: give each thread its own authenticator.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID, ObjectIdentifier

__all__ = [
    "AT",
    "BE",
    "BS",
    "ED",
    "EDDSA",
    "ES256",
    "ID_FIDO_GEN_CE_AAGUID",
    "UP",
    "UV",
    "SoftAuthenticator",
    "SoftAuthenticatorError",
    "SoftCredential",
    "TestCA",
    "authenticator_data",
    "b64url",
    "b64url_decode",
    "client_data_json",
    "sign_assertion",
]

# Authenticator data flags (WebAuthn section 6.1).
UP: Final = 0x01
UV: Final = 0x04
BE: Final = 0x08
BS: Final = 0x10
AT: Final = 0x40
ED: Final = 0x80

# COSE algorithm identifiers (IANA COSE registry) this authenticator can use.
ES256: Final = -7
EDDSA: Final = -8

# id-fido-gen-ce-aaguid (WebAuthn section 8.2.1).
ID_FIDO_GEN_CE_AAGUID: Final = ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")

# A validity window wide enough that no test needs a clock.
_NOT_BEFORE: Final = datetime(2020, 1, 1, tzinfo=UTC)
_NOT_AFTER: Final = datetime(2100, 1, 1, tzinfo=UTC)

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
Attestation = Literal["none", "packed-self", "packed-x5c"]
Attachment = Literal["platform", "cross-platform"]

_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_COSE_EC2_PREFIX: Final = bytes.fromhex("a5010203262001215820")  # {1: 2, 3: -7, -1: 1, -2: h'..
_COSE_EC2_Y: Final = bytes.fromhex("225820")  # -3: h'..
_COSE_OKP_PREFIX: Final = bytes.fromhex("a4010103272006215820")  # {1: 1, 3: -8, -1: 6, -2: h'..


class SoftAuthenticatorError(Exception):
    """What the browser would reject the call with; ``name`` is the DOMException's name
    (``InvalidStateError``, ``NotAllowedError``, ``NotSupportedError``, ``SecurityError``)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


@dataclass(slots=True)
class SoftCredential:
    """One credential held by the authenticator. ``sign_count`` is mutable state, like on a
    real authenticator; everything else is fixed when the credential is created."""

    credential_id: bytes
    private_key: PrivateKey
    algorithm: int
    rp_id: str
    user_handle: bytes
    resident: bool
    sign_count: int
    cose_public_key: bytes
    public_key_der: bytes  # SubjectPublicKeyInfo, as ``response.publicKey`` carries it

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` with this credential's key under its COSE algorithm."""
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            return self.private_key.sign(data, _ECDSA_SHA256)
        return self.private_key.sign(data)


def b64url(data: bytes) -> str:
    """base64url without padding, as WebAuthn's JSON forms use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def client_data_json(
    *,
    ceremony: Literal["webauthn.create", "webauthn.get"],
    challenge: bytes,
    origin: str,
    cross_origin: bool = False,
) -> bytes:
    """``CollectedClientData`` serialised as browsers do (WebAuthn section 5.8.1.1)."""
    return json.dumps(
        {
            "type": ceremony,
            "challenge": b64url(challenge),
            "origin": origin,
            "crossOrigin": cross_origin,
        },
        separators=(",", ":"),
    ).encode()


def authenticator_data(
    *, rp_id: str, flags: int, sign_count: int, attested_credential_data: bytes = b""
) -> bytes:
    """Authenticator data (WebAuthn section 6.1). Set ``AT`` in ``flags`` when passing
    attested credential data; nothing here checks that the two agree."""
    return (
        _rp_id_hash(rp_id)
        + bytes((flags,))
        + sign_count.to_bytes(4, "big")
        + attested_credential_data
    )


def sign_assertion(
    credential: SoftCredential, *, authenticator_data: bytes, client_data_json: bytes
) -> bytes:
    """The assertion signature: over ``authenticatorData || sha256(clientDataJSON)``
    (WebAuthn section 6.3.3, step 11)."""
    return credential.sign(authenticator_data + hashlib.sha256(client_data_json).digest())


class TestCA:
    """A self-signed P-256 root that issues FIDO attestation certificates (WebAuthn section
    8.2.1). Validity runs from 2020 to 2100, so no clock is needed."""

    __test__ = False  # not a pytest test class

    def __init__(self, *, name: str = "Sparekey Test Attestation Root") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sparekey Tests"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        public_key = self._key.public_key()
        self.root_certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOT_BEFORE)
            .not_valid_after(_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def root_pem(self) -> bytes:
        """The root certificate in PEM, for ``pem_root_certs_bytes_by_fmt``."""
        return self.root_certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def root_der(self) -> bytes:
        """The root certificate in DER."""
        return self.root_certificate.public_bytes(serialization.Encoding.DER)

    def issue_attestation_certificate(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        aaguid: bytes,
        common_name: str = "Sparekey Soft Authenticator",
    ) -> x509.Certificate:
        """A leaf for ``public_key`` per section 8.2.1: version 3; subject C, O,
        OU="Authenticator Attestation", CN; basicConstraints CA=false; and, when ``aaguid`` is
        not all zero, id-fido-gen-ce-aaguid (not critical) holding it as an OCTET STRING."""
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sparekey Tests"),
                        x509.NameAttribute(
                            NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"
                        ),
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    ]
                )
            )
            .issuer_name(self.root_certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOT_BEFORE)
            .not_valid_after(_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if any(aaguid):
            # extnValue is the DER of an OCTET STRING holding the 16 bytes.
            octet_string = b"\x04\x10" + aaguid
            builder = builder.add_extension(
                x509.UnrecognizedExtension(ID_FIDO_GEN_CE_AAGUID, octet_string), critical=False
            )
        return builder.sign(self._key, hashes.SHA256())


class SoftAuthenticator:
    """An authenticator and the browser in front of it (see the module docstring).

    ``aaguid`` names the model (16 bytes). ``attestation`` is what the authenticator produces;
    for ``packed-x5c``, ``attestation_ca`` (a fresh ``TestCA`` when omitted, kept as
    ``self.attestation_ca``) issues the batch attestation certificate once. ``user_verification``
    says whether it can verify the user (UV is then set unless the RP says ``"discouraged"``).
    ``backup_eligible`` and ``backed_up`` set BE and BS on every credential (BS without BE is
    invalid and allowed, for testing the RP's check). ``algorithm`` is the one COSE algorithm it
    supports: ``-7`` (ES256) or ``-8`` (EdDSA). New credentials start at ``counter_start``.
    ``attachment`` decides ``authenticatorAttachment`` and the transports reported.
    """

    def __init__(
        self,
        *,
        aaguid: bytes = bytes(16),
        attestation: Attestation = "none",
        attestation_ca: TestCA | None = None,
        user_verification: bool = True,
        backup_eligible: bool = False,
        backed_up: bool = False,
        algorithm: int = ES256,
        counter_start: int = 0,
        counter_step: int = 1,
        attachment: Attachment = "platform",
    ) -> None:
        if len(aaguid) != 16:
            raise ValueError("aaguid must be 16 bytes")
        if algorithm not in (ES256, EDDSA):
            raise ValueError(f"unsupported COSE algorithm {algorithm}; use -7 or -8")
        if attestation not in ("none", "packed-self", "packed-x5c"):
            raise ValueError(f"unknown attestation {attestation!r}")
        self.aaguid = aaguid
        self.attestation = attestation
        self.user_verification = user_verification
        self.algorithm = algorithm
        self.counter_start = counter_start
        self.counter_step = counter_step
        self.attachment = attachment
        self.transports = ["hybrid", "internal"] if attachment == "platform" else ["usb"]
        self.credentials: dict[bytes, SoftCredential] = {}
        # Discoverable credentials: rp_id -> user handle -> credential id, oldest first.
        self._resident: dict[str, dict[bytes, bytes]] = {}
        self._backup_flags = (BE if backup_eligible else 0) | (BS if backed_up else 0)
        self.attestation_ca: TestCA | None = None
        self._attestation_key: ec.EllipticCurvePrivateKey | None = None
        self._attestation_x5c: list[bytes] = []
        if attestation == "packed-x5c":
            self.attestation_ca = attestation_ca or TestCA()
            self._attestation_key = ec.generate_private_key(ec.SECP256R1())
            leaf = self.attestation_ca.issue_attestation_certificate(
                self._attestation_key.public_key(), aaguid=aaguid
            )
            self._attestation_x5c = [leaf.public_bytes(serialization.Encoding.DER)]

    # -- navigator.credentials.create() --------------------------------------------------------

    def create(self, options: dict[str, Any], *, origin: str) -> dict[str, Any]:
        """Answer ``PublicKeyCredentialCreationOptionsJSON`` (camelCase, base64url strings) with
        a ``RegistrationResponseJSON`` dict, as ``credential.toJSON()`` gives it."""
        rp_id = _check_rp_id(options.get("rp", {}).get("id"), origin)
        selection = options.get("authenticatorSelection") or {}
        self._check_attachment(selection.get("authenticatorAttachment"))
        uv = self._user_verified(selection.get("userVerification", "preferred"))
        algorithm = self._choose_algorithm(options.get("pubKeyCredParams") or [])
        for excluded in options.get("excludeCredentials") or []:
            held = self.credentials.get(b64url_decode(excluded["id"]))
            if held is not None and held.rp_id == rp_id:
                raise SoftAuthenticatorError(
                    "InvalidStateError", "a credential in excludeCredentials is on this device"
                )
        resident_key = selection.get("residentKey")
        if resident_key is None:
            resident_key = "required" if selection.get("requireResidentKey") else "discouraged"
        resident = resident_key in ("required", "preferred")
        user_handle = b64url_decode(options["user"]["id"])

        credential = self._new_credential(algorithm, rp_id, user_handle, resident)
        flags = UP | (UV if uv else 0) | self._backup_flags | AT
        attested = (
            self.aaguid
            + len(credential.credential_id).to_bytes(2, "big")
            + credential.credential_id
            + credential.cose_public_key
        )
        auth_data = authenticator_data(
            rp_id=rp_id,
            flags=flags,
            sign_count=credential.sign_count,
            attested_credential_data=attested,
        )
        client_data = client_data_json(
            ceremony="webauthn.create", challenge=b64url_decode(options["challenge"]), origin=origin
        )
        fmt, statement = self._attest(credential, auth_data, client_data)
        if options.get("attestation", "none") == "none" and not (
            fmt == "packed" and "x5c" not in statement and not any(self.aaguid)
        ):
            fmt, statement = "none", {}  # the browser strips it (WebAuthn section 5.1.3)
        attestation_object = cbor2.dumps({"fmt": fmt, "attStmt": statement, "authData": auth_data})

        extension_results: dict[str, Any] = {}
        if (options.get("extensions") or {}).get("credProps"):
            extension_results["credProps"] = {"rk": resident}
        credential_id = b64url(credential.credential_id)
        return {
            "id": credential_id,
            "rawId": credential_id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation_object),
                "authenticatorData": b64url(auth_data),
                "transports": list(self.transports),
                "publicKey": b64url(credential.public_key_der),
                "publicKeyAlgorithm": algorithm,
            },
            "authenticatorAttachment": self.attachment,
            "clientExtensionResults": extension_results,
        }

    # -- navigator.credentials.get() -----------------------------------------------------------

    def get(
        self, options: dict[str, Any], *, origin: str, credential_id: bytes | None = None
    ) -> dict[str, Any]:
        """Answer ``PublicKeyCredentialRequestOptionsJSON`` with an
        ``AuthenticationResponseJSON`` dict. With ``allowCredentials``, the first listed
        credential we hold (or ``credential_id``, which must be listed); without, the most
        recent discoverable credential for the RP ID (or ``credential_id``, which must be one)."""
        rp_id = _check_rp_id(options.get("rpId"), origin)
        uv = self._user_verified(options.get("userVerification", "preferred"))
        credential = self._select(rp_id, options.get("allowCredentials") or [], credential_id)
        credential.sign_count += self.counter_step
        auth_data = authenticator_data(
            rp_id=rp_id,
            flags=UP | (UV if uv else 0) | self._backup_flags,
            sign_count=credential.sign_count,
        )
        client_data = client_data_json(
            ceremony="webauthn.get", challenge=b64url_decode(options["challenge"]), origin=origin
        )
        signature = sign_assertion(
            credential, authenticator_data=auth_data, client_data_json=client_data
        )
        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        if credential.resident:
            response["userHandle"] = b64url(credential.user_handle)
        encoded_id = b64url(credential.credential_id)
        return {
            "id": encoded_id,
            "rawId": encoded_id,
            "type": "public-key",
            "response": response,
            "authenticatorAttachment": self.attachment,
            "clientExtensionResults": {},
        }

    def set_sign_count(self, credential_id: bytes, value: int) -> None:
        """Set a credential's counter, e.g. back to an old value to play a cloned authenticator."""
        self.credentials[credential_id].sign_count = value

    # -- internals -----------------------------------------------------------------------------

    def _check_attachment(self, requested: str | None) -> None:
        if requested is not None and requested != self.attachment:
            raise SoftAuthenticatorError(
                "NotAllowedError", f"the RP asked for a {requested} authenticator"
            )

    def _user_verified(self, requirement: str) -> bool:
        if requirement == "required" and not self.user_verification:
            raise SoftAuthenticatorError(
                "NotAllowedError", "user verification required, and this authenticator cannot"
            )
        return self.user_verification and requirement != "discouraged"

    def _choose_algorithm(self, params: list[dict[str, Any]]) -> int:
        # An empty list means ES256 and RS256 (WebAuthn section 5.1.3, step 10).
        offered = [p["alg"] for p in params if p.get("type") == "public-key"] if params else [ES256]
        if self.algorithm not in offered:
            raise SoftAuthenticatorError(
                "NotSupportedError", f"algorithm {self.algorithm} not in pubKeyCredParams {offered}"
            )
        return self.algorithm

    def _new_credential(
        self, algorithm: int, rp_id: str, user_handle: bytes, resident: bool
    ) -> SoftCredential:
        private_key: PrivateKey
        if algorithm == ES256:
            private_key = ec.generate_private_key(ec.SECP256R1())
            point = private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            cose_key = _COSE_EC2_PREFIX + point[1:33] + _COSE_EC2_Y + point[33:]
        else:
            private_key = ed25519.Ed25519PrivateKey.generate()
            raw = private_key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            cose_key = _COSE_OKP_PREFIX + raw
        public_key_der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        credential = SoftCredential(
            credential_id=os.urandom(16),
            private_key=private_key,
            algorithm=algorithm,
            rp_id=rp_id,
            user_handle=user_handle,
            resident=resident,
            sign_count=self.counter_start,
            cose_public_key=cose_key,
            public_key_der=public_key_der,
        )
        self.credentials[credential.credential_id] = credential
        if resident:
            accounts = self._resident.setdefault(rp_id, {})
            replaced = accounts.pop(user_handle, None)
            if replaced is not None:
                del self.credentials[replaced]
            accounts[user_handle] = credential.credential_id
        return credential

    def _attest(
        self, credential: SoftCredential, auth_data: bytes, client_data: bytes
    ) -> tuple[str, dict[str, Any]]:
        if self.attestation == "none":
            return "none", {}
        signed = auth_data + hashlib.sha256(client_data).digest()
        if self._attestation_key is None:  # packed-self
            return "packed", {"alg": credential.algorithm, "sig": credential.sign(signed)}
        signature = self._attestation_key.sign(signed, _ECDSA_SHA256)
        return "packed", {"alg": ES256, "sig": signature, "x5c": self._attestation_x5c}

    def _select(
        self, rp_id: str, allowed: list[dict[str, Any]], credential_id: bytes | None
    ) -> SoftCredential:
        if allowed:
            candidates = [b64url_decode(entry["id"]) for entry in allowed]
            if credential_id is not None:
                candidates = [c for c in candidates if c == credential_id]
        else:
            accounts = self._resident.get(rp_id, {})
            if credential_id is not None:
                candidates = [credential_id] if credential_id in accounts.values() else []
            else:  # CTAP 2.1 section 6.2.2: most recently created first
                candidates = [next(reversed(accounts.values()))] if accounts else []
        for candidate in candidates:
            credential = self.credentials.get(candidate)
            if credential is not None and credential.rp_id == rp_id:
                return credential
        raise SoftAuthenticatorError("NotAllowedError", f"no usable credential for {rp_id}")


@lru_cache(maxsize=1024)
def _rp_id_hash(rp_id: str) -> bytes:
    return hashlib.sha256(rp_id.encode()).digest()


@lru_cache(maxsize=1024)
def _origin_host(origin: str) -> str:
    host = urlsplit(origin).hostname
    if not host:
        raise SoftAuthenticatorError("SecurityError", f"origin {origin!r} has no host")
    return host


def _check_rp_id(rp_id: str | None, origin: str) -> str:
    """The browser's check: the RP ID is the origin's host or a parent domain of it
    (WebAuthn section 5.1.3, step 8; public-suffix rules left out)."""
    host = _origin_host(origin)
    if rp_id is None:
        return host
    if host != rp_id and not host.endswith("." + rp_id):
        raise SoftAuthenticatorError(
            "SecurityError", f"RP ID {rp_id!r} is not a registrable suffix of {host!r}"
        )
    return rp_id
