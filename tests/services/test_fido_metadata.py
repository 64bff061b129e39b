"""The MDS3 BLOB read offline: trusted only when it chains to the root, is intact and is current."""

from __future__ import annotations

import base64
import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fido2.mds3 import parse_blob

from sparekey.services.fido_metadata import (
    DO_NOT_TRUST,
    GRACE_DAYS,
    MetadataError,
    MetadataIndex,
)
from tests.mds_blob import (
    MdsEntry,
    MdsSigner,
    b64url,
    build_blob,
    decode_part,
    entry_json,
    header_for,
    make_attestation_root,
    make_mds_signer,
    sign_jws,
)

NOW = date(2026, 3, 1)
NEXT = date(2026, 4, 1)
KEY_A = "cb69481e-8ff7-4039-93ec-0a2729a154a8"
KEY_B = "ee882879-721c-4913-9775-3dfcce97072a"
KEY_C = "2fc0579f-8113-47ea-b116-bb5a8db9202a"


@pytest.fixture(scope="module")
def signer() -> MdsSigner:
    return make_mds_signer(alg="ES256")


@pytest.fixture(scope="module")
def roots() -> dict[str, bytes]:
    return {k: make_attestation_root(f"Vendor {k[:8]} Root") for k in (KEY_A, KEY_B, KEY_C)}


def write(tmp_path: Path, blob: bytes) -> Path:
    path = tmp_path / "blob.jwt"
    path.write_bytes(blob)
    return path


def load(path: Path, signer: MdsSigner, *, now: date = NOW) -> MetadataIndex:
    return MetadataIndex.load(path, trust_root_pem=signer.root_pem, now=now)


def refused(path: Path, trust_root_pem: bytes, *, now: date = NOW) -> str:
    with pytest.raises(MetadataError) as caught:
        MetadataIndex.load(path, trust_root_pem=trust_root_pem, now=now)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_a_built_blob_gives_names_and_roots_by_aaguid(
    tmp_path: Path, roots: dict[str, bytes], alg: str
) -> None:
    signer = make_mds_signer(alg=alg)
    entries = [
        MdsEntry(KEY_A, "Example Key 5 NFC", roots[KEY_A]),
        MdsEntry(KEY_B, "Example Bio", roots[KEY_B], status="FIDO_CERTIFIED_L2"),
    ]
    path = write(tmp_path, build_blob(entries, signer=signer, next_update=NEXT, number=42))

    index = load(path, signer)

    assert len(index) == 2
    assert (index.number, index.next_update) == (42, NEXT)
    assert index.name(KEY_A) == "Example Key 5 NFC"
    assert index.name(KEY_B.upper().replace("-", "")) == "Example Bio"  # any usual spelling
    assert index.name(KEY_C) is None
    b = index.get(KEY_B)
    assert b is not None
    assert (b.aaguid, b.status, b.revoked) == (KEY_B, "FIDO_CERTIFIED_L2", False)
    assert b.root_certs_pem == (roots[KEY_B],)
    assert index.pem_roots([KEY_A, KEY_B]) == [roots[KEY_A], roots[KEY_B]]
    assert index.pem_roots([KEY_A, KEY_C]) == [roots[KEY_A]]


def test_roots_are_pem_of_the_same_certificate(
    tmp_path: Path, signer: MdsSigner, roots: dict[str, bytes]
) -> None:
    der = x509.load_pem_x509_certificate(roots[KEY_A]).public_bytes(serialization.Encoding.DER)
    path = write(tmp_path, build_blob([MdsEntry(KEY_A, "A", der)], signer=signer, next_update=NEXT))
    (pem,) = load(path, signer).pem_roots([KEY_A])
    assert x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER) == der


@pytest.mark.parametrize("status", sorted(DO_NOT_TRUST))
def test_a_revoked_authenticator_gives_no_trust_anchor(
    tmp_path: Path, signer: MdsSigner, roots: dict[str, bytes], status: str
) -> None:
    entries = [MdsEntry(KEY_A, "Good", roots[KEY_A]), MdsEntry(KEY_B, "Bad", roots[KEY_B], status)]
    index = load(write(tmp_path, build_blob(entries, signer=signer, next_update=NEXT)), signer)

    bad = index.get(KEY_B)
    assert bad is not None
    assert (bad.status, bad.revoked) == (status, True)
    assert bad.root_certs_pem == (roots[KEY_B],)  # still listed, never handed out
    assert index.pem_roots([KEY_A, KEY_B]) == [roots[KEY_A]]
    assert index.pem_roots([KEY_B]) == []


def test_a_revocation_is_not_undone_by_a_later_status(
    tmp_path: Path, signer: MdsSigner, roots: dict[str, bytes]
) -> None:
    entry = MdsEntry(
        KEY_A,
        "Once compromised",
        roots[KEY_A],
        status="FIDO_CERTIFIED_L1",
        earlier_statuses=("FIDO_CERTIFIED", "ATTESTATION_KEY_COMPROMISE"),
    )
    index = load(write(tmp_path, build_blob([entry], signer=signer, next_update=NEXT)), signer)
    found = index.get(KEY_A)
    assert found is not None
    assert (found.status, found.revoked) == ("FIDO_CERTIFIED_L1", True)


def test_unknown_and_malformed_aaguids_give_nothing(
    tmp_path: Path, signer: MdsSigner, roots: dict[str, bytes]
) -> None:
    path = write(
        tmp_path, build_blob([MdsEntry(KEY_A, "A", roots[KEY_A])], signer=signer, next_update=NEXT)
    )
    index = load(path, signer)
    assert index.pem_roots([KEY_C, "not-an-aaguid"]) == []
    assert index.pem_roots([]) == []
    assert index.get("not-an-aaguid") is None
    assert index.name("") is None
    with pytest.raises(TypeError):
        index.pem_roots(KEY_A)  # a string is a collection of characters, not of AAGUIDs


def test_a_blob_signed_under_another_root_is_refused(
    tmp_path: Path, signer: MdsSigner, roots: dict[str, bytes]
) -> None:
    other = make_mds_signer(root_name="Test MDS Root CA")  # same names, other keys
    path = write(
        tmp_path, build_blob([MdsEntry(KEY_A, "A", roots[KEY_A])], signer=other, next_update=NEXT)
    )
    assert "does not lead to the trust root" in refused(path, signer.root_pem)
    assert len(load(path, other)) == 1


def test_the_genuine_root_appended_to_a_foreign_chain_does_not_help(
    tmp_path: Path, signer: MdsSigner
) -> None:
    other = make_mds_signer()
    genuine_root = x509.load_pem_x509_certificate(signer.root_pem)
    header = header_for(other)
    header["x5c"].append(
        base64.b64encode(genuine_root.public_bytes(serialization.Encoding.DER)).decode()
    )
    payload = {"legalHeader": "", "no": 1, "nextUpdate": NEXT.isoformat(), "entries": []}
    path = write(tmp_path, sign_jws(header, payload, signer=other))
    assert "do not form a chain" in refused(path, signer.root_pem)


def test_a_tampered_payload_is_refused(
    tmp_path: Path, signer: MdsSigner, roots: dict[str, bytes]
) -> None:
    blob = build_blob(
        [MdsEntry(KEY_A, "A", roots[KEY_A], status="REVOKED")], signer=signer, next_update=NEXT
    )
    header, payload, signature = blob.split(b".")
    claims = decode_part(payload)
    claims["entries"][0]["statusReports"][0]["status"] = "FIDO_CERTIFIED_L1"
    forged = b".".join([header, b64url(json.dumps(claims).encode()), signature])

    assert "signature does not verify" in refused(write(tmp_path, forged), signer.root_pem)
    assert len(load(write(tmp_path, blob), signer)) == 1  # the original still loads


def test_a_tampered_signature_is_refused(tmp_path: Path, signer: MdsSigner) -> None:
    blob = build_blob([], signer=signer, next_update=NEXT)
    head, _, signature = blob.rpartition(b".")
    raw = bytearray(base64.urlsafe_b64decode(signature + b"=="))
    raw[-1] ^= 1
    assert "signature" in refused(
        write(tmp_path, head + b"." + b64url(bytes(raw))), signer.root_pem
    )


@pytest.mark.parametrize("alg", ["none", "HS256", "RS256", "ES384"])
def test_an_algorithm_other_than_the_signing_keys_is_refused(
    tmp_path: Path, signer: MdsSigner, alg: str
) -> None:
    payload = {"legalHeader": "", "no": 1, "nextUpdate": NEXT.isoformat(), "entries": []}
    path = write(tmp_path, sign_jws({**header_for(signer), "alg": alg}, payload, signer=signer))
    message = refused(path, signer.root_pem)
    assert alg in message or "signature does not verify" in message


def test_an_expired_blob_is_refused_after_the_grace_period(
    tmp_path: Path, signer: MdsSigner, roots: dict[str, bytes]
) -> None:
    next_update = date(2026, 1, 15)
    path = write(
        tmp_path,
        build_blob([MdsEntry(KEY_A, "A", roots[KEY_A])], signer=signer, next_update=next_update),
    )
    last_day = next_update + timedelta(days=GRACE_DAYS)
    assert len(load(path, signer, now=last_day)) == 1

    message = refused(path, signer.root_pem, now=last_day + timedelta(days=1))
    assert "expired" in message
    assert "2026-01-15" in message
    assert f"{GRACE_DAYS} days" in message
    assert "download a fresh one" in message


def test_a_signing_certificate_not_valid_today_is_refused(tmp_path: Path) -> None:
    old = make_mds_signer(valid_from=date(2024, 1, 1), valid_until=date(2025, 1, 1))
    path = write(tmp_path, build_blob([], signer=old, next_update=NEXT))
    assert "not valid on 2026-03-01" in refused(path, old.root_pem)


def test_a_chain_through_a_certificate_that_is_not_a_ca_is_refused(tmp_path: Path) -> None:
    signer = make_mds_signer(intermediate_is_ca=False)
    path = write(tmp_path, build_blob([], signer=signer, next_update=NEXT))
    assert "do not form a chain" in refused(path, signer.root_pem)


def test_the_trust_root_may_be_a_bundle(tmp_path: Path, signer: MdsSigner) -> None:
    other = make_mds_signer()
    path = write(tmp_path, build_blob([], signer=signer, next_update=NEXT, number=7))
    index = MetadataIndex.load(path, trust_root_pem=other.root_pem + signer.root_pem, now=NOW)
    assert index.number == 7


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"<html>502 Bad Gateway</html>\n",
        b"a.b.c",
        b"\xff\xfe\x00garbage",
        b64url(b"[1, 2]") + b"." + b64url(b"{}") + b"." + b64url(b"sig"),
        b64url(b'{"alg": "ES256"}') + b"." + b64url(b"{}") + b"." + b64url(b"sig"),
    ],
)
def test_garbage_gives_a_one_line_error(tmp_path: Path, signer: MdsSigner, content: bytes) -> None:
    path = write(tmp_path, content)
    assert str(path) in refused(path, signer.root_pem)


def test_a_missing_file_gives_a_one_line_error(tmp_path: Path, signer: MdsSigner) -> None:
    message = refused(tmp_path / "nowhere.jwt", signer.root_pem)
    assert "cannot read the metadata BLOB" in message
    assert "nowhere.jwt" in message


def test_a_trust_root_that_is_not_pem_gives_a_one_line_error(
    tmp_path: Path, signer: MdsSigner
) -> None:
    path = write(tmp_path, build_blob([], signer=signer, next_update=NEXT))
    assert "trust root is not a PEM certificate" in refused(path, b"not a certificate")


def test_an_entry_that_does_not_parse_is_skipped_and_counted(
    tmp_path: Path, signer: MdsSigner, roots: dict[str, bytes]
) -> None:
    broken = entry_json(MdsEntry(KEY_B, "Broken", roots[KEY_B]))
    del broken["timeOfLastStatusChange"]
    payload = {
        "legalHeader": "",
        "no": 3,
        "nextUpdate": NEXT.isoformat(),
        "entries": [entry_json(MdsEntry(KEY_A, "A", roots[KEY_A])), broken, "junk"],
    }
    path = write(tmp_path, sign_jws(header_for(signer), payload, signer=signer))
    index = load(path, signer)
    assert (len(index), index.skipped_entries) == (1, 2)
    assert index.get(KEY_B) is None


def test_the_builder_output_is_what_fido2_itself_accepts(roots: dict[str, bytes]) -> None:
    # An independent reader: fido2 verifies RS256 per JWS (its ES256 expects DER signatures).
    signer = make_mds_signer(alg="RS256")
    blob = build_blob(
        [MdsEntry(KEY_A, "A", roots[KEY_A], status="REVOKED")], signer=signer, next_update=NEXT
    )
    root_der = x509.load_pem_x509_certificate(signer.root_pem).public_bytes(
        serialization.Encoding.DER
    )
    parsed = parse_blob(blob, root_der)
    (entry,) = parsed.entries
    assert str(entry.aaguid) == KEY_A
    assert entry.metadata_statement is not None
    assert entry.metadata_statement.description == "A"
    assert entry.status_reports[0].status == "REVOKED"
