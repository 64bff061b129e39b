"""The FIDO Metadata Service (MDS3) BLOB, read offline: which authenticators exist, the roots their
attestation certificates chain to, and which of them must no longer be trusted.

FIDO Metadata Service v3.0, at
https://fidoalliance.org/specs/mds/fido-metadata-service-v3.0-ps-20210518.html:
§3.1.6-3.1.7 the BLOB is a JWS in compact serialization (RFC 7515) whose payload is the
``MetadataBLOBPayload`` (``legalHeader``, ``no``, ``nextUpdate``, ``entries``); §3.2 the processing
rules followed here, on a file the operator downloaded beforehand (no network at run time):

1. the ``x5c`` chain in the JWS header leads to the configured trust root (FIDO's: GlobalSign Root
   R46 since August 2026, Root CA - R3 before; see https://fidoalliance.org/metadata/), each
   certificate valid on ``now`` and each issuer in it a CA;
2. the signature verifies under the first ``x5c`` certificate with the header's ``alg``
   (RS256/384/512, or ES256/384/512 as the raw ``r || s`` of RFC 7518 §3.4);
3. a BLOB whose ``nextUpdate`` is more than ``grace_days`` past is refused.

Not done, because it needs the network: the CRLs of the signing chain. The caller keeps ``number``
(the BLOB's serial) if it wants to refuse going back to an older BLOB (§3.2 step 6).

The JWS is verified here rather than by ``fido2.mds3.parse_blob``, which verifies ES256 as a DER
signature (not JWS's ``r || s``), accepts whatever COSE algorithm the header names (RS1 included)
and checks neither validity dates nor CA flags in the chain. The entries are parsed with
``fido2.mds3`` one at a time: an entry it cannot parse is skipped and
counted (``skipped_entries``), never guessed at; an unknown authenticator gets no trust anchor.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import ssl
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from fido2.mds3 import MetadataBlobPayloadEntry, StatusReport

from sparekey.domain.errors import SparekeyError

__all__ = [
    "DO_NOT_TRUST",
    "FIDO_MDS_URL",
    "GRACE_DAYS",
    "Authenticator",
    "MetadataError",
    "MetadataIndex",
]

FIDO_MDS_URL = "https://mds3.fidoalliance.org/"
GRACE_DAYS = 30
"""How long past its ``nextUpdate`` a BLOB is still used (FIDO publishes one about monthly)."""

DO_NOT_TRUST = frozenset(
    {
        "REVOKED",
        "ATTESTATION_KEY_COMPROMISE",
        "USER_KEY_REMOTE_COMPROMISE",
        "USER_KEY_PHYSICAL_COMPROMISE",
    }
)
"""Statuses that revoke an authenticator for good, whatever status reports follow them."""

UNKNOWN_STATUS = "UNKNOWN"

_RSA_HASHES: Mapping[str, hashes.HashAlgorithm] = {
    "RS256": hashes.SHA256(),
    "RS384": hashes.SHA384(),
    "RS512": hashes.SHA512(),
}
_ECDSA: Mapping[str, tuple[hashes.HashAlgorithm, type[ec.EllipticCurve], int]] = {
    "ES256": (hashes.SHA256(), ec.SECP256R1, 32),
    "ES384": (hashes.SHA384(), ec.SECP384R1, 48),
    "ES512": (hashes.SHA512(), ec.SECP521R1, 66),
}


class MetadataError(SparekeyError):
    """The BLOB or the trust root cannot be used; the message says why, in one line."""


@dataclass(frozen=True, kw_only=True)
class Authenticator:
    aaguid: str  # canonical: lowercase 8-4-4-4-12
    name: str  # the metadata statement's description (the AAGUID when there is no statement)
    root_certs_pem: tuple[bytes, ...]  # attestationRootCertificates, one PEM each
    status: str  # the latest status report's, e.g. "FIDO_CERTIFIED_L1"
    revoked: bool  # some status report is in DO_NOT_TRUST
    last_status_change: date


class MetadataIndex:
    """The FIDO2 authenticators of one verified BLOB, by AAGUID."""

    def __init__(
        self,
        *,
        authenticators: Iterable[Authenticator],
        number: int,
        next_update: date,
        legal_header: str = "",
        skipped_entries: int = 0,
    ) -> None:
        self._by_aaguid: dict[str, Authenticator] = {}
        for found in authenticators:
            self._by_aaguid[found.aaguid] = _merge(self._by_aaguid.get(found.aaguid), found)
        self.number = number
        self.next_update = next_update
        self.legal_header = legal_header
        self.skipped_entries = skipped_entries

    @classmethod
    def load(
        cls, blob_path: Path, *, trust_root_pem: bytes, now: date, grace_days: int = GRACE_DAYS
    ) -> MetadataIndex:
        """Read, verify and index the BLOB at ``blob_path``; MetadataError if it cannot be trusted.

        ``trust_root_pem`` holds one or more PEM certificates (more than one while FIDO moves to
        a new root); the BLOB's chain must end at one of them.
        """
        roots = _load_roots(trust_root_pem)
        try:
            blob = blob_path.read_bytes()
        except OSError as exc:
            raise MetadataError(
                f"cannot read the metadata BLOB {blob_path}: {exc.strerror or exc}"
            ) from exc
        try:
            payload = _verified_payload(blob, roots=roots, now=now)
            index = _index(payload)
        except MetadataError as exc:
            raise MetadataError(f"metadata BLOB {blob_path}: {exc.detail}") from exc
        if now > index.next_update + timedelta(days=grace_days):
            raise MetadataError(
                f"metadata BLOB {blob_path} expired: its nextUpdate was {index.next_update}, "
                f"more than {grace_days} days before {now}; download a fresh one from "
                f"{FIDO_MDS_URL}"
            )
        return index

    def __len__(self) -> int:
        return len(self._by_aaguid)

    def get(self, aaguid: str) -> Authenticator | None:
        """The authenticator with this AAGUID (any usual spelling); None if the BLOB lacks it."""
        canonical = _canonical(aaguid)
        return self._by_aaguid.get(canonical) if canonical is not None else None

    def name(self, aaguid: str) -> str | None:
        found = self.get(aaguid)
        return found.name if found is not None else None

    def pem_roots(self, aaguids: Collection[str]) -> list[bytes]:
        """The attestation trust anchors of these AAGUIDs, leaving out revoked and unknown ones.

        May be empty, and then the caller must refuse the attestation: py_webauthn treats an
        empty list of roots as "do not validate the chain" and would accept any certificate.
        """
        if isinstance(aaguids, str):
            raise TypeError("pem_roots takes a collection of AAGUIDs, not one string")
        roots: dict[bytes, None] = {}
        for aaguid in aaguids:
            found = self.get(aaguid)
            if found is not None and not found.revoked:
                roots.update(dict.fromkeys(found.root_certs_pem))
        return list(roots)


def _canonical(aaguid: str) -> str | None:
    try:
        return str(uuid.UUID(aaguid.strip()))
    except ValueError:
        return None


def _load_roots(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise MetadataError("the metadata trust root is not a PEM certificate") from None


def _b64url(part: bytes) -> bytes:
    return base64.b64decode(part + b"=" * (-len(part) % 4), altchars=b"-_", validate=True)


def _json_object(part: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url(part))
    except (binascii.Error, ValueError):
        raise MetadataError(f"the JWS {what} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise MetadataError(f"the JWS {what} is not a JSON object")
    return value


def _verified_payload(blob: bytes, *, roots: list[x509.Certificate], now: date) -> dict[str, Any]:
    """§3.2 steps 1-5: the payload of a JWS whose chain leads to a root and whose signature holds.

    The chain is checked before the signature, so a BLOB signed by anyone else is named as such.
    """
    parts = blob.strip().split(b".")
    if len(parts) != 3 or not all(parts):
        raise MetadataError("not a JWS (three base64url parts separated by dots)")
    header = _json_object(parts[0], "header")
    payload = _json_object(parts[1], "payload")
    try:
        signature = _b64url(parts[2])
    except binascii.Error:
        raise MetadataError("the JWS signature is not base64url") from None

    chain = _x5c(header)
    _verify_chain(chain, roots=roots, now=now)
    alg = header.get("alg")
    if not isinstance(alg, str) or (alg not in _RSA_HASHES and alg not in _ECDSA):
        raise MetadataError(f"unsupported signature algorithm {alg!r}")
    try:
        _verify_signature(alg, chain[0].public_key(), parts[0] + b"." + parts[1], signature)
    except InvalidSignature:
        raise MetadataError(
            "the signature does not verify: the BLOB was changed after signing"
        ) from None
    return payload


def _x5c(header: Mapping[str, Any]) -> list[x509.Certificate]:
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
        raise MetadataError("the JWS header has no x5c certificate chain")
    try:
        # RFC 7515 §4.1.6: standard base64 (not base64url) of DER.
        return [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in x5c]
    except ValueError:
        raise MetadataError("a certificate in the JWS header's x5c cannot be read") from None


def _verify_chain(
    chain: list[x509.Certificate], *, roots: list[x509.Certificate], now: date
) -> None:
    """Each certificate issued by the next, and the last one a trust root or issued by one."""
    for cert in chain:
        if cert in roots:
            break
        if not cert.not_valid_before_utc.date() <= now <= cert.not_valid_after_utc.date():
            raise MetadataError(
                f"the signing certificate {cert.subject.rfc4514_string()!r} is not valid on {now} "
                f"(valid {cert.not_valid_before_utc.date()} to {cert.not_valid_after_utc.date()})"
            )
    for child, issuer in itertools.pairwise(chain):
        if child in roots:
            return
        if not _is_ca(issuer) or not _issued_by(child, issuer):
            raise MetadataError("the x5c certificates do not form a chain to the trust root")
    last = chain[-1]
    if last not in roots and not any(_issued_by(last, root) for root in roots):
        raise MetadataError(
            f"the certificate chain does not lead to the trust root "
            f"(it ends at {last.issuer.rfc4514_string()!r})"
        )


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _verify_signature(
    alg: str, key: CertificatePublicKeyTypes, message: bytes, signature: bytes
) -> None:
    if alg in _RSA_HASHES and isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, message, padding.PKCS1v15(), _RSA_HASHES[alg])
    elif alg in _ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
        hash_alg, curve, size = _ECDSA[alg]
        if not isinstance(key.curve, curve) or len(signature) != 2 * size:
            raise InvalidSignature
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hash_alg))
    else:
        raise MetadataError(f"the signing certificate's key cannot make {alg} signatures")


def _index(payload: Mapping[str, Any]) -> MetadataIndex:
    number, entries, legal_header = (
        payload.get("no"),
        payload.get("entries"),
        payload.get("legalHeader", ""),
    )
    if isinstance(number, bool) or not isinstance(number, int):
        raise MetadataError("the payload has no serial number ('no')")
    if not isinstance(entries, list):
        raise MetadataError("the payload has no list of entries")
    try:
        next_update = date.fromisoformat(payload["nextUpdate"])
    except (KeyError, TypeError, ValueError):
        raise MetadataError(
            f"the payload's nextUpdate is not a date: {payload.get('nextUpdate')!r}"
        ) from None
    authenticators: list[Authenticator] = []
    skipped = 0
    for raw in entries:
        if not isinstance(raw, dict):
            skipped += 1
            continue
        try:
            entry = MetadataBlobPayloadEntry.from_dict(raw)
        except (TypeError, ValueError, KeyError, AttributeError):
            skipped += 1
            continue
        if entry.aaguid:  # FIDO2; UAF (aaid) and U2F (key identifiers) entries are not ours
            authenticators.append(_authenticator(entry))
    return MetadataIndex(
        authenticators=authenticators,
        number=number,
        next_update=next_update,
        legal_header=str(legal_header),
        skipped_entries=skipped,
    )


def _authenticator(entry: MetadataBlobPayloadEntry) -> Authenticator:
    aaguid = str(entry.aaguid)
    statement = entry.metadata_statement
    reports = list(entry.status_reports)
    latest = max(
        range(len(reports)),
        key=lambda i: (reports[i].effective_date or date.min, i),
        default=None,
    )
    return Authenticator(
        aaguid=aaguid,
        name=statement.description if statement is not None else aaguid,
        root_certs_pem=tuple(
            ssl.DER_cert_to_PEM_cert(der).encode()
            for der in (statement.attestation_root_certificates if statement is not None else ())
        ),
        status=_status(reports[latest]) if latest is not None else UNKNOWN_STATUS,
        revoked=any(_status(r) in DO_NOT_TRUST for r in reports),
        last_status_change=entry.time_of_last_status_change,
    )


def _status(report: StatusReport) -> str:
    # fido2 parses a status it does not know yet as None rather than failing the entry.
    status: str | None = report.status
    return str(status) if status is not None else UNKNOWN_STATUS


def _merge(earlier: Authenticator | None, found: Authenticator) -> Authenticator:
    """Two entries for one AAGUID: the more recent one, revoked if either is."""
    if earlier is None:
        return found
    newer, older = (
        (found, earlier)
        if found.last_status_change >= earlier.last_status_change
        else (earlier, found)
    )
    return replace(newer, revoked=newer.revoked or older.revoked)
