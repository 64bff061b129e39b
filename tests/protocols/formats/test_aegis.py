import base64
import hashlib
import hmac
import json
import re
import uuid
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from sparekey.protocols.formats import FormatError, PasswordRequiredError, WrongPasswordError, aegis
from sparekey.protocols.otpauth import b32decode
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.tokens import Token, TokenKind
from tests.helpers import hotp_code, totp_code
from tests.protocols.formats.peer import (
    AEGIS_ORDER,
    EXPECTED,
    assert_tokens,
    fuzz_mutations,
    parse_or_format_error,
    peer_bytes,
)

PASSWORD = "correct horse"
FAST_N = 16  # the tests' own vaults use a tiny scrypt cost; Aegis' real one is tested once
T = datetime(2024, 1, 1, tzinfo=UTC)

TOKENS = (
    Token(kind=TokenKind.TOTP, secret=b"totp-secret-1234", issuer="Acme", account="bob", note="n"),
    Token(
        kind=TokenKind.HOTP,
        secret=bytes(range(20)),
        issuer="Ex:ample",
        account="é ü",
        algorithm=HashAlgorithm.SHA512,
        digits=8,
        counter=41,
    ),
    Token(
        kind=TokenKind.TOTP,
        secret=b"\xff" * 32,
        account="no issuer",
        algorithm=HashAlgorithm.SHA256,
        digits=7,
        period=20,
    ),
    Token.steam(secret=b"steam-secret-xyz", issuer="Steam", account="gabe"),
)


def _document(**changes: object) -> dict[str, object]:
    """A plain vault as Aegis writes it, with one TOTP entry, and ``changes`` to that entry."""
    entry = {
        "type": "totp",
        "uuid": "3ae6f1ad-2e65-4ed2-a953-1ec0dff2386d",
        "name": "Mason",
        "issuer": "Deno",
        "note": "",
        "icon": None,
        "info": {"secret": "4SJHB4GSD43FZBAI7C2HLRJGPQ", "algo": "SHA1", "digits": 6, "period": 30},
    }
    info = changes.pop("info", {})
    assert isinstance(info, dict)
    entry = {**entry, **changes, "info": {**entry["info"], **info}}  # type: ignore[dict-item]
    return {
        "version": 1,
        "header": {"slots": None, "params": None},
        "db": {"version": 3, "entries": [entry], "groups": []},
    }


def _dump(document: object) -> bytes:
    return json.dumps(document).encode()


def _hotp(secret: str, counter: int, *, algorithm: str, digits: int) -> str:
    """RFC 4226 written out here with hmac, independent of the code under test."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    mac = hmac.new(key, counter.to_bytes(8, "big"), algorithm.lower()).digest()
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


# --- the real files ---


@pytest.mark.parametrize("name", ["aegis_plain.json", "aegis_plain_grouped_v2.json"])
def test_plain_vaults_are_read_entry_for_entry(name: str) -> None:
    result = aegis.parse(peer_bytes(f"aegis-importers/{name}"))
    assert result.format == "aegis"
    assert result.skipped == ()
    assert_tokens(result, AEGIS_ORDER)


def test_encrypted_vault_is_read_entry_for_entry() -> None:
    data = peer_bytes("aegis-importers/aegis_encrypted.json")
    assert_tokens(aegis.parse(data, password="test"), AEGIS_ORDER)


def test_encrypted_vault_needs_the_right_password() -> None:
    data = peer_bytes("aegis-importers/aegis_encrypted.json")
    with pytest.raises(PasswordRequiredError, match=r"^this Aegis vault is encrypted"):
        aegis.parse(data)
    with pytest.raises(WrongPasswordError, match=r"^the password does not open this Aegis vault$"):
        aegis.parse(data, password="Test")


def test_sniff() -> None:
    for name in ("aegis_plain.json", "aegis_plain_grouped_v2.json", "aegis_encrypted.json"):
        assert aegis.sniff(peer_bytes(f"aegis-importers/{name}"))
    for name in (
        "2fas_authenticator_plain_v4.2fas",
        "andotp_plain.json",
        "andotp_encrypted.bin",
        "bitwarden.json",
        "plain.txt",
    ):
        assert not aegis.sniff(peer_bytes(f"aegis-importers/{name}"))
    assert not aegis.sniff(b"")
    assert aegis.sniff(aegis.encode(TOKENS, password=None))


def test_codes_agree_with_oathtool_and_an_independent_hotp() -> None:
    tokens = {
        t.issuer: t for t in aegis.parse(peer_bytes("aegis-importers/aegis_plain.json")).tokens
    }
    now = T.timestamp()
    for name in ("Deno", "SPDX", "Airbnb"):
        e = EXPECTED[name]
        assert tokens[name].code(now=now) == totp_code(
            e.secret, T, algorithm=e.algorithm.value, digits=e.digits, period=e.period
        )
    issuu = EXPECTED["Issuu"]
    assert tokens["Issuu"].code(now=now) == hotp_code(issuu.secret, issuu.counter)
    for name in ("Issuu", "Air Canada", "WWE"):  # SHA-256/512 HOTP: oathtool has no such mode
        e = EXPECTED[name]
        assert tokens[name].code(now=now) == _hotp(
            e.secret, e.counter, algorithm=e.algorithm.value, digits=e.digits
        )


def test_steam_code_matches_keepassxc_vector() -> None:
    secret = b32decode("63BEDWCQZKTQWPESARIERL5DTTQFCJTK")
    vault = aegis.encode([Token.steam(secret=secret)], password=None)
    (token,) = aegis.parse(vault).tokens
    assert token.kind is TokenKind.STEAM
    assert token.code(now=1511200518) == "FR8RV"
    assert token.code(now=1511200714) == "9P3VP"


# --- the encoder ---


def test_plain_round_trip() -> None:
    data = aegis.encode(TOKENS, password=None)
    document = json.loads(data)
    assert document["header"] == {"slots": None, "params": None}
    assert document["db"]["version"] == 3
    assert aegis.parse(data).tokens == TOKENS


def test_encrypted_round_trip() -> None:
    data = aegis.encode(TOKENS, password=PASSWORD, scrypt_n=FAST_N)
    assert aegis.parse(data, password=PASSWORD).tokens == TOKENS
    with pytest.raises(WrongPasswordError):
        aegis.parse(data, password=PASSWORD + " ")
    with pytest.raises(PasswordRequiredError):
        aegis.parse(data)


def test_encoded_vault_opens_with_the_documented_recipe() -> None:
    """Decrypted here from FORMATS.md (c) with hashlib.scrypt and AESGCM, not the module's code."""
    document = json.loads(aegis.encode(TOKENS, password=PASSWORD))
    assert document["version"] == 1
    (slot,) = document["header"]["slots"]
    assert (slot["type"], slot["n"], slot["r"], slot["p"]) == (1, 32768, 8, 1)
    assert uuid.UUID(slot["uuid"]).version == 4
    salt = bytes.fromhex(slot["salt"])
    assert len(salt) == 32
    slot_key = hashlib.scrypt(
        PASSWORD.encode(), salt=salt, n=32768, r=8, p=1, dklen=32, maxmem=64 << 20
    )
    nonce, tag = (bytes.fromhex(slot["key_params"][k]) for k in ("nonce", "tag"))
    assert (len(nonce), len(tag)) == (12, 16)
    master_key = AESGCM(slot_key).decrypt(nonce, bytes.fromhex(slot["key"]) + tag, None)
    assert len(master_key) == 32
    params = document["header"]["params"]
    db = json.loads(
        AESGCM(master_key).decrypt(
            bytes.fromhex(params["nonce"]),
            base64.b64decode(document["db"]) + bytes.fromhex(params["tag"]),
            None,
        )
    )
    assert db["version"] == 3
    entries = db["entries"]
    assert [e["type"] for e in entries] == ["totp", "hotp", "totp", "steam"]
    assert all(uuid.UUID(e["uuid"]).version == 4 for e in entries)
    assert len({e["uuid"] for e in entries}) == len(entries)
    assert entries[0] | {"uuid": None} == {
        "type": "totp",
        "uuid": None,
        "name": "bob",
        "issuer": "Acme",
        "note": "n",
        "favorite": False,
        "icon": None,
        "icon_mime": None,
        "icon_hash": None,
        "info": {"secret": "ORXXI4BNONSWG4TFOQWTCMRTGQ", "algo": "SHA1", "digits": 6, "period": 30},
        "groups": [],
    }
    assert entries[1]["info"] == {
        "secret": "AAAQEAYEAUDAOCAJBIFQYDIOB4IBCEQT",
        "algo": "SHA512",
        "digits": 8,
        "counter": 41,
    }
    assert entries[3]["info"] == {
        "secret": "ON2GKYLNFVZWKY3SMV2C26DZPI",
        "algo": "SHA1",
        "digits": 5,
        "period": 30,
    }


def test_each_vault_has_fresh_keys() -> None:
    one, two = (
        json.loads(aegis.encode(TOKENS[:1], password=PASSWORD, scrypt_n=FAST_N)) for _ in range(2)
    )
    assert one["db"] != two["db"]
    assert one["header"]["slots"][0]["salt"] != two["header"]["slots"][0]["salt"]


# --- entries that are skipped or refused ---


def test_kinds_that_cannot_be_computed_are_skipped() -> None:
    document = _document()
    entries = document["db"]["entries"]  # type: ignore[index]
    base = entries[0]
    entries += [
        base | {"type": "motp", "issuer": "M", "info": {"secret": "ABCD", "pin": "1234"}},
        base | {"type": "yandex", "issuer": "Y"},
        base | {"type": "weird", "issuer": "W"},
        base | {"issuer": "Old", "info": base["info"] | {"algo": "MD5"}},
    ]
    result = aegis.parse(_dump(document))
    assert [t.issuer for t in result.tokens] == ["Deno"]
    assert [(s.label, s.reason) for s in result.skipped] == [
        ("M: Mason", "mOTP tokens are not supported"),
        ("Y: Mason", "Yandex tokens are not supported"),
        ("W: Mason", "unknown token type 'weird'"),
        ("Old: Mason", "the 'MD5' algorithm is not supported"),
    ]


def test_a_vault_of_only_skipped_entries_is_a_result() -> None:
    result = aegis.parse(_dump(_document(type="motp")))
    assert result.tokens == ()
    assert len(result.skipped) == 1


def test_no_entries_is_an_error() -> None:
    with pytest.raises(FormatError, match=r"^no accounts found in this Aegis vault$"):
        aegis.parse(aegis.encode([], password=None))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_document(info={"digits": 11}), "entry 1: digits must be from 4 to 10"),
        (_document(info={"digits": "6"}), "entry 1: digits must be a whole number"),
        (_document(info={"digits": True}), "entry 1: digits must be a whole number"),
        (_document(info={"period": 0}), "entry 1: the period must be from 1 to 86400 seconds"),
        (_document(info={"secret": "not base32!"}), "entry 1: the secret is not valid base32"),
        (_document(info={"secret": ""}), "entry 1: the secret is empty"),
        (_document(type="hotp", info={"counter": -1}), "entry 1: the counter must fit in 8"),
        (_document(name=5), "entry 1: name must be text"),
        (
            {"version": 1, "db": {"version": 1, "entries": [{"type": "totp"}]}},
            "entry 1 has no info",
        ),
        (_document() | {"version": 2}, "Aegis vault version 2 is not supported (only 1)"),
        (_document() | {"db": 5}, "not an Aegis vault: db is neither an object nor encrypted"),
        ({"version": 1, "db": {"version": 4, "entries": []}}, "Aegis database version 4 is not"),
        ({"version": 1, "db": {"version": 1}}, "the Aegis database has no list of entries"),
        ({"version": 1, "db": {"version": 1, "entries": [1]}}, "entry 1 is not a JSON object"),
        ([], "this Aegis vault is not a JSON object"),
    ],
)
def test_damaged_plain_vaults(document: object, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        aegis.parse(_dump(document))
    assert str(caught.value).startswith(message)


def test_no_json() -> None:
    with pytest.raises(FormatError, match=r"^this Aegis vault is not valid JSON"):
        aegis.parse(b"{")
    with pytest.raises(FormatError, match="not UTF-8"):
        aegis.parse(b"\xff\xfe{")


# --- encrypted vaults: damage, slots and KDF limits ---


def _encrypted(**slot_changes: object) -> dict[str, object]:
    document: dict[str, object] = json.loads(
        aegis.encode(TOKENS, password=PASSWORD, scrypt_n=FAST_N)
    )
    header = document["header"]
    assert isinstance(header, dict)
    header["slots"][0].update(slot_changes)
    return document


def _flip_hex(text: str) -> str:
    return ("1" if text[0] == "0" else "0") + text[1:]


@pytest.mark.parametrize("field", ["key", "nonce", "tag", "salt"])
def test_a_damaged_slot_is_a_wrong_password(field: str) -> None:
    document = _encrypted()
    slot = document["header"]["slots"][0]  # type: ignore[index]
    target = slot["key_params"] if field in {"nonce", "tag"} else slot
    target[field] = _flip_hex(target[field])
    with pytest.raises(WrongPasswordError):
        aegis.parse(_dump(document), password=PASSWORD)


@pytest.mark.parametrize("field", ["db", "nonce", "tag"])
def test_a_damaged_database_under_the_right_password_is_damage(field: str) -> None:
    document = _encrypted()
    if field == "db":
        raw = bytearray(base64.b64decode(document["db"]))  # type: ignore[arg-type]
        raw[0] ^= 1
        document["db"] = base64.b64encode(raw).decode()
    else:
        params = document["header"]["params"]  # type: ignore[index]
        params[field] = _flip_hex(params[field])
    with pytest.raises(FormatError, match=r"^the Aegis vault is damaged: the password is right"):
        aegis.parse(_dump(document), password=PASSWORD)


def test_the_real_vault_tampered_is_refused() -> None:
    document = json.loads(peer_bytes("aegis-importers/aegis_encrypted.json"))
    document["header"]["params"]["tag"] = _flip_hex(document["header"]["params"]["tag"])
    with pytest.raises(FormatError, match="damaged"):
        aegis.parse(_dump(document), password="test")


def test_the_first_password_slot_that_opens_is_used() -> None:
    document = _encrypted()
    slots = document["header"]["slots"]  # type: ignore[index]
    raw_slot = {"type": 0, "uuid": str(uuid.uuid4()), "key": "00" * 32}
    other = json.loads(aegis.encode([], password="other", scrypt_n=FAST_N))["header"]["slots"][0]
    slots[:0] = [raw_slot, other]
    assert aegis.parse(_dump(document), password=PASSWORD).tokens == TOKENS


def test_a_vault_without_a_password_slot() -> None:
    document = _encrypted(type=2)
    with pytest.raises(FormatError, match=r"^this Aegis vault has no password slot"):
        aegis.parse(_dump(document), password=PASSWORD)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n": 2**30}, "scrypt N must be a power of two from 2 to 2**20, not 1073741824"),
        ({"n": 2**21}, "scrypt N must be a power of two"),
        ({"n": 3 * 2**10}, "scrypt N must be a power of two"),
        ({"n": 1}, "scrypt N must be a power of two"),
        ({"n": 0}, "scrypt N must be a power of two"),
        ({"n": -(2**14)}, "scrypt N must be a power of two"),
        ({"r": 0}, "scrypt r and p must be at least 1"),
        ({"p": -1}, "scrypt r and p must be at least 1"),
        ({"n": 2**20, "r": 8}, "the scrypt parameters (N=1048576, r=8, p=1) ask for far more"),
        ({"n": 2**15, "r": 2**40}, "the scrypt parameters"),
        ({"n": 2**15, "p": 2**30}, "the scrypt parameters"),
        ({"n": 2**15, "r": 8, "p": 64}, "the scrypt parameters"),
        ({"n": 2.5}, "key slot 1: n must be a whole number"),
        ({"r": None}, "key slot 1: r must be a whole number"),
        ({"salt": "zz"}, "key slot 1: salt must be hexadecimal"),
        ({"key": "00" * 31}, "key slot 1: key must be hexadecimal of 32 bytes"),
        ({"key_params": {"nonce": "00" * 12}}, "key slot 1: tag must be hexadecimal of 16"),
        ({"key_params": None}, "key slot 1 has no key_params"),
    ],
)
def test_absurd_slots_are_refused_before_the_kdf(
    change: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = _encrypted(**change)

    def no_kdf(*args: object, **kwargs: object) -> object:
        raise AssertionError("scrypt ran with parameters that should have been refused")

    monkeypatch.setattr(aegis, "Scrypt", no_kdf)
    for password in (PASSWORD, None):
        with pytest.raises(FormatError) as caught:
            aegis.parse(_dump(document), password=password)
        assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"db": "not base64!"}, "the encrypted database is not valid base64"),
        ({"header": {"slots": None, "params": None}}, "the encrypted Aegis vault has no key slots"),
        ({"header": None}, "the Aegis vault has no header"),
    ],
)
def test_damaged_encrypted_fields(change: dict[str, object], message: str) -> None:
    document = _encrypted() | change
    with pytest.raises(FormatError) as caught:
        aegis.parse(_dump(document), password=PASSWORD)
    assert str(caught.value).startswith(message)


def test_encoder_refuses_absurd_scrypt_parameters() -> None:
    with pytest.raises(FormatError, match="scrypt N"):
        aegis.encode(TOKENS, password=PASSWORD, scrypt_n=2**30)


def test_openssl_refusing_scrypt_parameters_is_a_format_error() -> None:
    # Within our limits, yet OpenSSL wants N < 2**(16 r): a FormatError, not a MemoryError.
    document = _encrypted(n=2**16, r=1)
    with pytest.raises(FormatError, match=r"^scrypt cannot run with N=65536, r=1, p=1$"):
        aegis.parse(_dump(document), password=PASSWORD)


# --- fuzzing ---

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
_VALID = _encrypted()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    parse_or_format_error(aegis.parse, data, password=PASSWORD)
    aegis.sniff(data)


@settings(max_examples=150, deadline=None)
@given(_JSON)
def test_json_of_the_wrong_shape(document: object) -> None:
    data = _dump(document)
    parse_or_format_error(aegis.parse, data, password=PASSWORD)
    aegis.sniff(data)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["type", "name", "issuer", "note", "info", "secret", "algo", "digits"]),
    _JSON,
)
def test_mutated_entry_fields(field: str, value: object) -> None:
    document = _document()
    entry = document["db"]["entries"][0]  # type: ignore[index]
    (entry["info"] if field in {"secret", "algo", "digits"} else entry)[field] = value
    parse_or_format_error(aegis.parse, _dump(document))


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["n", "r", "p", "salt", "key", "key_params", "type", "db", "header"]),
    _JSON | st.integers(min_value=-(2**70), max_value=2**70),
)
def test_mutated_fields_of_an_encrypted_vault(field: str, value: object) -> None:
    document = json.loads(json.dumps(_VALID))
    slot = document["header"]["slots"][0]
    if field in {"n", "r", "p"} and isinstance(value, int) and abs(value) <= 2**40:
        value = max(min(value, 32), -32)  # a huge cost is refused; a middling one would be slow
    (document if field in {"db", "header"} else slot)[field] = value
    parse_or_format_error(aegis.parse, _dump(document), password=PASSWORD)


def test_mutated_plain_file() -> None:
    fuzz_mutations(aegis.parse, peer_bytes("aegis-importers/aegis_plain_grouped_v2.json"))


def test_mutated_encrypted_vault() -> None:
    fuzz_mutations(aegis.parse, _dump(_VALID), password=PASSWORD, max_examples=150)


def test_mutated_real_encrypted_vault() -> None:
    # Aegis' real scrypt cost is a tenth of a second a try, hence few examples.
    data = peer_bytes("aegis-importers/aegis_encrypted.json")
    fuzz_mutations(aegis.parse, data, password="test", max_examples=12)


def test_no_secret_in_messages() -> None:
    document = _document(info={"digits": 99})
    with pytest.raises(FormatError) as caught:
        aegis.parse(_dump(document))
    assert not re.search("4SJHB4GSD43FZBAI7C2HLRJGPQ", str(caught.value), re.IGNORECASE)
