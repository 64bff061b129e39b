import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from sparekey.protocols.formats import (
    FormatError,
    PasswordRequiredError,
    WrongPasswordError,
    twofas,
)
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.tokens import TokenKind
from tests.helpers import hotp_code, totp_code
from tests.protocols.formats.peer import (
    EXPECTED,
    assert_tokens,
    fuzz_mutations,
    parse_or_format_error,
    peer_bytes,
)

PASSWORD = "correct horse"
T = datetime(2024, 1, 1, tzinfo=UTC)
_TOTP_DEFAULTS = {"kind": TokenKind.TOTP, "algorithm": HashAlgorithm.SHA1, "digits": 6}
_AS_TOTP = {"kind": TokenKind.TOTP}

# What each real file holds (the README: not every file has all eight; old schemas force TOTP).
_Held = tuple[tuple[str, ...], Mapping[str, Mapping[str, object]]]
SCHEMA_1: _Held = (
    ("Deno", "SPDX", "Airbnb", "Issuu", "Air Canada", "WWE"),
    {
        "SPDX": _TOTP_DEFAULTS | {"period": 30},
        "Airbnb": _TOTP_DEFAULTS | {"period": 30},
        "Issuu": _TOTP_DEFAULTS,
        "Air Canada": _TOTP_DEFAULTS,
        "WWE": _TOTP_DEFAULTS,
    },
)
SCHEMA_2: _Held = (("Deno", "Airbnb", "Issuu", "WWE"), {"Issuu": _AS_TOTP, "WWE": _AS_TOTP})
SCHEMA_3: _Held = (("Deno", "SPDX", "Airbnb", "Issuu", "Air Canada", "WWE"), {})
SCHEMA_4: _Held = (("Deno", "Issuu", "Air Canada", "WWE", "Boeing"), {})

FILES: dict[str, _Held] = {
    "2fas_authenticator.json": SCHEMA_1,
    "2fas_authenticator_plain.2fas": SCHEMA_2,
    "2fas_authenticator_encrypted.2fas": SCHEMA_2,
    "2fas_authenticator_plain_v3.2fas": SCHEMA_3,
    "2fas_authenticator_encrypted_v3.2fas": SCHEMA_3,
    "2fas_authenticator_plain_v4.2fas": SCHEMA_4,
    "2fas_authenticator_encrypted_v4.2fas": SCHEMA_4,
}
ENCRYPTED = [name for name in FILES if "encrypted" in name]


def _service(**otp: object) -> dict[str, object]:
    return {
        "name": "Deno",
        "secret": "4SJHB4GSD43FZBAI7C2HLRJGPQ",
        "updatedAt": 1702934567518,
        "otp": {
            "label": "Mason",
            "account": "Mason",
            "issuer": "Deno",
            "digits": 6,
            "period": 30,
            "algorithm": "SHA1",
            "tokenType": "TOTP",
        }
        | otp,
        "order": {"position": 0},
    }


def _backup(services: Sequence[object], *, schema: int = 4) -> dict[str, object]:
    return {
        "services": list(services),
        "groups": [],
        "updatedAt": 1702934732299,
        "schemaVersion": schema,
        "appVersionCode": 5000009,
        "appVersionName": "5.1.0",
        "appOrigin": "android",
    }


def _seal(plaintext: bytes, *, key: bytes, salt: bytes, iv: bytes) -> str:
    sealed = AESGCM(key).encrypt(iv, plaintext, None)
    return ":".join(base64.b64encode(part).decode() for part in (sealed, salt, iv))


def _encrypted(
    services: Sequence[object], *, password: str = PASSWORD, reference: bool = True
) -> dict[str, object]:
    """An encrypted backup as FORMATS.md (d) describes it, built here with hashlib and AESGCM."""
    salt = bytes(range(256))
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10_000, 32)
    document = _backup([])
    document["servicesEncrypted"] = _seal(
        json.dumps(list(services)).encode(), key=key, salt=salt, iv=b"\x01" * 12
    )
    if reference:
        document["reference"] = _seal(b"tRViSsLKzd86Hprh" * 16, key=key, salt=salt, iv=b"\2" * 12)
    return document


def _dump(document: object) -> bytes:
    return json.dumps(document).encode()


# --- the real files ---


@pytest.mark.parametrize("name", FILES)
def test_real_backups_are_read_entry_for_entry(name: str) -> None:
    names, overrides = FILES[name]
    result = twofas.parse(peer_bytes(f"aegis-importers/{name}"), password="test")
    assert result.format == "2fas"
    assert result.skipped == ()
    assert_tokens(result, names, overrides=overrides)


@pytest.mark.parametrize("name", ENCRYPTED)
def test_encrypted_backups_need_the_right_password(name: str) -> None:
    data = peer_bytes(f"aegis-importers/{name}")
    with pytest.raises(PasswordRequiredError, match=r"^this 2FAS backup is encrypted"):
        twofas.parse(data)
    with pytest.raises(WrongPasswordError, match=r"^the password does not open this 2FAS backup$"):
        twofas.parse(data, password="tEst")


def test_sniff() -> None:
    for name in FILES:
        assert twofas.sniff(peer_bytes(f"aegis-importers/{name}"))
    for name in ("aegis_plain.json", "aegis_encrypted.json", "andotp_plain.json", "duo.json"):
        assert not twofas.sniff(peer_bytes(f"aegis-importers/{name}"))
    assert not twofas.sniff(b"")
    assert not twofas.sniff(b'{"schemaVersion": 4}')


def test_codes_agree_with_oathtool() -> None:
    data = peer_bytes("aegis-importers/2fas_authenticator_plain_v3.2fas")
    tokens = {t.issuer: t for t in twofas.parse(data).tokens}
    spdx, air_canada = EXPECTED["SPDX"], EXPECTED["Air Canada"]
    assert tokens["SPDX"].code(now=T.timestamp()) == totp_code(
        spdx.secret, T, algorithm="SHA256", digits=7, period=20
    )
    assert tokens["Air Canada"].code(now=0) == hotp_code(
        air_canada.secret, 50, algorithm="SHA256", digits=7
    )


# --- encrypted backups ---


def test_encrypted_round_trip_through_the_documented_recipe() -> None:
    document = _encrypted([_service(), _service(tokenType="HOTP", counter=7)])
    result = twofas.parse(_dump(document), password=PASSWORD)
    assert [(t.kind, t.counter) for t in result.tokens] == [
        (TokenKind.TOTP, 0),
        (TokenKind.HOTP, 7),
    ]


def test_without_a_reference_a_failing_services_part_is_a_wrong_password() -> None:
    document = _encrypted([_service()], reference=False)
    assert len(twofas.parse(_dump(document), password=PASSWORD).tokens) == 1
    with pytest.raises(WrongPasswordError):
        twofas.parse(_dump(document), password="wrong")


def test_damaged_services_under_a_right_reference_are_damage_not_a_wrong_password() -> None:
    document = json.loads(peer_bytes("aegis-importers/2fas_authenticator_encrypted_v4.2fas"))
    ciphertext, salt, iv = document["servicesEncrypted"].split(":")
    raw = bytearray(base64.b64decode(ciphertext))
    raw[5] ^= 0x40
    document["servicesEncrypted"] = ":".join((base64.b64encode(raw).decode(), salt, iv))
    with pytest.raises(FormatError, match=r"^this 2FAS backup is damaged") as caught:
        twofas.parse(_dump(document), password="test")
    assert not isinstance(caught.value, WrongPasswordError)


def test_a_damaged_reference_is_a_wrong_password() -> None:
    document = json.loads(peer_bytes("aegis-importers/2fas_authenticator_encrypted_v4.2fas"))
    ciphertext, salt, _iv = document["reference"].split(":")
    document["reference"] = ":".join((ciphertext, salt, base64.b64encode(bytes(12)).decode()))
    with pytest.raises(WrongPasswordError):
        twofas.parse(_dump(document), password="test")


@pytest.mark.parametrize(
    ("encrypted", "message"),
    [
        ("abc", "servicesEncrypted must be three base64 parts separated by colons"),
        ("a:b:c:d", "servicesEncrypted must be three base64 parts"),
        ("!!!!:AAAA:AAAA", "servicesEncrypted is not valid base64"),
        ("AAAA:AAAA:AAAA", "servicesEncrypted has an IV, salt or ciphertext of the wrong length"),
        (5, "servicesEncrypted must be text"),
    ],
)
def test_damaged_encrypted_fields(
    encrypted: object, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_kdf(*args: object, **kwargs: object) -> object:
        raise AssertionError("the KDF ran for a backup that should have been refused")

    monkeypatch.setattr(twofas, "PBKDF2HMAC", no_kdf)
    document = _encrypted([_service()]) | {"servicesEncrypted": encrypted}
    with pytest.raises(FormatError) as caught:
        twofas.parse(_dump(document), password=PASSWORD)
    assert str(caught.value).startswith(message)


def test_a_blank_services_encrypted_means_plain() -> None:
    document = _backup([_service()]) | {"servicesEncrypted": "", "reference": ""}
    assert len(twofas.parse(_dump(document)).tokens) == 1


# --- schema versions and entries ---


def test_a_newer_schema_is_refused_clearly() -> None:
    with pytest.raises(FormatError) as caught:
        twofas.parse(_dump(_backup([_service()], schema=5)))
    assert str(caught.value) == (
        "2FAS schema version 5 is newer than this version of Sparekey reads (1 to 4)"
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_backup([]) | {"schemaVersion": 0}, "2FAS schema version 0 does not exist"),
        (_backup([]) | {"schemaVersion": "4"}, "not a 2FAS backup: it has no schemaVersion"),
        (_backup([]) | {"schemaVersion": True}, "not a 2FAS backup: it has no schemaVersion"),
        (_backup([]) | {"services": {}}, "this 2FAS backup has no list of services"),
        (_backup([]), "no accounts found in this 2FAS backup"),
        (_backup([5]), "entry 1 is not a JSON object"),
        (_backup([_service(digits=11)]), "entry 1: digits must be from 4 to 10"),
        (_backup([_service(digits=6.0)]), "entry 1: digits must be a whole number"),
        (_backup([_service(period=0)]), "entry 1: the period must be from 1 to 86400 seconds"),
        (_backup([_service(issuer=["x"])]), "entry 1: issuer must be text"),
        (_backup([_service() | {"secret": "1"}]), "entry 1: the secret is not valid base32"),
        (_backup([_service() | {"otp": 5}]), "entry 1: otp is not a JSON object"),
        ([_service()], "this 2FAS backup is not a JSON object"),
    ],
)
def test_damaged_backups(document: object, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        twofas.parse(_dump(document))
    assert str(caught.value).startswith(message)


def test_token_types_and_algorithms() -> None:
    services = [
        _service(tokenType="STEAM", digits=5, issuer="Boeing", account="Sophia"),
        _service(tokenType="HOTP", counter=3, algorithm="SHA256", digits=8),
        _service(tokenType="YANDEX"),
        _service(algorithm="SHA224"),
    ]
    result = twofas.parse(_dump(_backup(services)))
    steam, hotp = result.tokens
    assert (steam.kind, steam.digits, steam.issuer, steam.account) == (
        TokenKind.STEAM,
        5,
        "Boeing",
        "Sophia",
    )
    assert (hotp.kind, hotp.counter, hotp.algorithm, hotp.digits) == (
        TokenKind.HOTP,
        3,
        HashAlgorithm.SHA256,
        8,
    )
    assert [(s.label, s.reason) for s in result.skipped] == [
        ("Deno: Mason", "'YANDEX' tokens are not supported"),
        ("Deno: Mason", "the 'SHA224' algorithm is not supported"),
    ]


def test_schema_1_defaults_and_names_from_label_or_service() -> None:
    services = [
        {"name": "Acme", "secret": "JBSWY3DPEHPK3PXP", "otp": {"label": "Acme:bob"}},
        {"name": "Bare", "secret": "JBSWY3DPEHPK3PXP"},
    ]
    acme, bare = twofas.parse(_dump(_backup(services, schema=1))).tokens
    assert (acme.issuer, acme.account, acme.kind, acme.digits, acme.period) == (
        "Acme",
        "bob",
        TokenKind.TOTP,
        6,
        30,
    )
    assert (bare.issuer, bare.account) == ("Bare", "")


# --- fuzzing ---

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
_VALID = _encrypted([_service(), _service(tokenType="STEAM")])


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    parse_or_format_error(twofas.parse, data, password=PASSWORD)
    twofas.sniff(data)


@settings(max_examples=150, deadline=None)
@given(_JSON)
def test_json_of_the_wrong_shape(document: object) -> None:
    parse_or_format_error(twofas.parse, _dump(document), password=PASSWORD)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(
        [
            *("name", "secret", "otp", "issuer", "account", "label", "digits", "period"),
            *("algorithm", "counter", "tokenType"),
        ]
    ),
    _JSON,
)
def test_mutated_service_fields(field: str, value: object) -> None:
    service = _service()
    target = service if field in {"name", "secret", "otp"} else service["otp"]
    assert isinstance(target, dict)
    target[field] = value
    parse_or_format_error(twofas.parse, _dump(_backup([service])))


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["servicesEncrypted", "reference", "schemaVersion", "services"]),
    _JSON | st.binary(max_size=40).map(lambda raw: base64.b64encode(raw).decode()),
)
def test_mutated_fields_of_an_encrypted_backup(field: str, value: object) -> None:
    document = _VALID | {field: value}
    parse_or_format_error(twofas.parse, _dump(document), password=PASSWORD)


def test_mutated_plain_file() -> None:
    fuzz_mutations(twofas.parse, peer_bytes("aegis-importers/2fas_authenticator_plain_v4.2fas"))


def test_mutated_encrypted_file() -> None:
    data = peer_bytes("aegis-importers/2fas_authenticator_encrypted_v4.2fas")
    fuzz_mutations(twofas.parse, data, password="test", max_examples=100)
