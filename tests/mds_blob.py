"""Builds signed FIDO Metadata Service (MDS3) BLOBs for tests.

A test MDS root CA signs an intermediate CA, which signs the BLOB's signing certificate; the BLOB
is a compact JWS ``{"alg", "typ": "JWT", "x5c": [leaf, intermediate]} . payload . signature``,
shaped like the one FIDO publishes closely enough for ``fido2.mds3`` to parse every entry::

    signer = make_mds_signer()
    vendor_root = make_attestation_root("Example Vendor Root")
    blob = build_blob([MdsEntry(aaguid, "Example Key", vendor_root)], signer=signer,
                      next_update=date(2026, 4, 1))
    MetadataIndex.load(path, trust_root_pem=signer.root_pem, now=date(2026, 3, 1))
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

VALID_FROM = date(2020, 1, 1)
VALID_UNTIL = date(2040, 1, 1)


@dataclass(frozen=True)
class MdsSigner:
    root_pem: bytes  # the trust root to load the BLOB with
    x5c: tuple[bytes, ...]  # DER: the signing certificate, then the intermediate CA
    key: PrivateKey  # the signing certificate's key
    alg: str  # "ES256" or "RS256"


@dataclass(frozen=True)
class MdsEntry:
    aaguid: str
    description: str
    root_cert: bytes  # the authenticator's attestation root, PEM or DER
    status: str = "FIDO_CERTIFIED_L1"  # the latest status report
    earlier_statuses: tuple[str, ...] = ()  # reported before it, oldest first
    status_date: date = date(2025, 6, 1)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sparekey Tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def make_cert(
    subject: str,
    key: PrivateKey,
    *,
    issuer: tuple[x509.Certificate, PrivateKey] | None = None,
    ca: bool = True,
    valid_from: date = VALID_FROM,
    valid_until: date = VALID_UNTIL,
) -> x509.Certificate:
    """A certificate for ``key``, self-signed unless ``issuer`` (certificate, key) is given."""
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (_name(subject), key)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_at(valid_from))
        .not_valid_after(_at(valid_until))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signing_key, hashes.SHA256())
    )


def make_mds_signer(
    *,
    alg: str = "ES256",
    root_name: str = "Test MDS Root CA",
    intermediate_is_ca: bool = True,
    valid_from: date = VALID_FROM,
    valid_until: date = VALID_UNTIL,
) -> MdsSigner:
    """A fresh root CA, intermediate CA and signing certificate (validity: the signing one's)."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_cert(root_name, root_key)
    mid_key = ec.generate_private_key(ec.SECP256R1())
    mid = make_cert(
        f"{root_name} Intermediate", mid_key, issuer=(root, root_key), ca=intermediate_is_ca
    )
    leaf_key: PrivateKey
    if alg == "RS256":
        leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        leaf_key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"unsupported alg {alg}")
    leaf = make_cert(
        "mds.test",
        leaf_key,
        issuer=(mid, mid_key),
        ca=False,
        valid_from=valid_from,
        valid_until=valid_until,
    )
    return MdsSigner(
        root_pem=root.public_bytes(serialization.Encoding.PEM),
        x5c=tuple(c.public_bytes(serialization.Encoding.DER) for c in (leaf, mid)),
        key=leaf_key,
        alg=alg,
    )


def make_attestation_root(name: str = "Test Authenticator Attestation Root") -> bytes:
    """A vendor's attestation root certificate, PEM."""
    cert = make_cert(name, ec.generate_private_key(ec.SECP256R1()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _der(cert: bytes) -> bytes:
    if cert.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    return cert


def entry_json(entry: MdsEntry) -> dict[str, Any]:
    """A MetadataBLOBPayloadEntry (MDS §3.1.1) with a FIDO2 metadata statement (statement §4)."""
    statuses = [*entry.earlier_statuses, entry.status]
    return {
        "aaguid": entry.aaguid,
        "metadataStatement": {
            "legalHeader": "Submission of this statement ... (test data)",
            "aaguid": entry.aaguid,
            "description": entry.description,
            "authenticatorVersion": 5,
            "protocolFamily": "fido2",
            "schema": 3,
            "upv": [{"major": 1, "minor": 0}, {"major": 1, "minor": 1}],
            "authenticationAlgorithms": ["secp256r1_ecdsa_sha256_raw"],
            "publicKeyAlgAndEncodings": ["cose"],
            "attestationTypes": ["basic_full"],
            "userVerificationDetails": [
                [{"userVerificationMethod": "none"}],
                [{"userVerificationMethod": "presence_internal"}],
                [
                    {
                        "userVerificationMethod": "passcode_external",
                        "caDesc": {"base": 10, "minLength": 4},
                    }
                ],
            ],
            "keyProtection": ["hardware", "secure_element"],
            "matcherProtection": ["on_chip"],
            "cryptoStrength": 128,
            "attachmentHint": ["external", "wired", "nfc"],
            "tcDisplay": [],
            "attestationRootCertificates": [
                base64.b64encode(_der(entry.root_cert)).decode("ascii")
            ],
            "authenticatorGetInfo": {
                "versions": ["U2F_V2", "FIDO_2_0", "FIDO_2_1"],
                "aaguid": entry.aaguid.replace("-", ""),
                "options": {"rk": True, "up": True, "clientPin": True},
            },
        },
        "statusReports": [
            {"status": status, "effectiveDate": entry.status_date.isoformat()}
            for status in statuses
        ],
        "timeOfLastStatusChange": entry.status_date.isoformat(),
    }


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign_jws(header: Mapping[str, Any], payload: Mapping[str, Any], *, signer: MdsSigner) -> bytes:
    """A compact JWS of these JSON objects, signed by ``signer`` whatever the header says."""
    message = b64url(json.dumps(header).encode()) + b"." + b64url(json.dumps(payload).encode())
    if isinstance(signer.key, rsa.RSAPrivateKey):
        signature = signer.key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    else:  # RFC 7518 §3.4: r || s, each 32 bytes, not DER
        r, s = decode_dss_signature(signer.key.sign(message, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return message + b"." + b64url(signature)


def header_for(signer: MdsSigner) -> dict[str, Any]:
    return {
        "alg": signer.alg,
        "typ": "JWT",
        "x5c": [base64.b64encode(c).decode("ascii") for c in signer.x5c],
    }


def build_blob(
    entries: Iterable[MdsEntry], *, signer: MdsSigner, next_update: date, number: int = 1
) -> bytes:
    """A signed MDS3 BLOB (§3.1.6) listing ``entries``, as the file an operator downloads."""
    payload = {
        "legalHeader": "Retrieval and use of this BLOB indicates acceptance of ... (test data)",
        "no": number,
        "nextUpdate": next_update.isoformat(),
        "entries": [entry_json(e) for e in entries],
    }
    return sign_jws(header_for(signer), payload, signer=signer)


def decode_part(part: bytes) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4)))
