import base64
import json

import nacl.bindings as sodium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.pwhash import argon2id

from sparekey.protocols.formats import FormatError, PasswordRequiredError, WrongPasswordError, ente
from tests.protocols.formats.peer import (
    assert_tokens,
    fuzz_mutations,
    parse_or_format_error,
    peer_bytes,
)

ENTE_ORDER = ("Air Canada", "Airbnb", "Boeing", "Deno", "Issuu", "SPDX", "WWE")
PASSWORD = "correct horse"
LIGHT = {"opsLimit": 2, "memLimit": 8 << 20}  # Ente uses 256 MiB; light keeps the tests fast
TINY = {"opsLimit": 1, "memLimit": argon2id.MEMLIMIT_MIN}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _encrypt(
    plain: bytes,
    *,
    password: str = PASSWORD,
    params: dict[str, int] = LIGHT,
    tag: int = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL,
) -> dict[str, object]:
    """An encrypted export as Ente writes it (libsodium's secretstream push API)."""
    salt = bytes(range(16))
    key = argon2id.kdf(
        32, password.encode(), salt, opslimit=params["opsLimit"], memlimit=params["memLimit"]
    )
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    ciphertext = sodium.crypto_secretstream_xchacha20poly1305_push(state, plain, None, tag)
    return {
        "version": 1,
        "kdfParams": {**params, "salt": _b64(salt)},
        "encryptedData": _b64(ciphertext),
        "encryptionNonce": _b64(header),
    }


def _dump(document: dict[str, object]) -> bytes:
    return json.dumps(document, indent=2).encode()


# --- Ente's own CLI test vector (cli/pkg/authenticator/decrypt_test.go) ---


def test_cli_vector_key_derivation() -> None:
    kdf = ente.KdfParams(
        mem_limit=64 << 20, ops_limit=2, salt=base64.b64decode("vd0dcYMGNLKn/gpT6uTFTw==")
    )
    key = ente.derive_key(password="test_password", kdf=kdf)
    assert key == base64.b64decode("vp8d8Nee0BbIML4ab8Cp34uYnyrN77cRwTl920flyT0=")


def test_cli_vector_decryption() -> None:
    key = base64.b64decode("vp8d8Nee0BbIML4ab8Cp34uYnyrN77cRwTl920flyT0=")
    header = base64.b64decode("v7wsI+BFZsRMIjDm3rTxPhmi/CaUdkdJ")
    ciphertext = base64.b64decode("kBXQ2PuX6y/aje5r22H0AehRPh6sQ0ULoeAO")
    assert ente.decrypt_stream(key=key, header=header, ciphertext=ciphertext) == b"plain_text"
    with pytest.raises(WrongPasswordError):
        ente.decrypt_stream(key=bytes(32), header=header, ciphertext=ciphertext)


# --- plain and encrypted exports ---


def test_plain_ente_export_is_read_entry_for_entry() -> None:
    data = peer_bytes("aegis-importers/ente_auth.txt")
    assert ente.sniff(data)
    assert not ente.sniff_encrypted(data)
    result = ente.parse(data)
    assert result.format == "ente"
    assert_tokens(result, ENTE_ORDER)
    assert ente.PARSERS["ente"](data).tokens == result.tokens


def test_plain_otpauth_text_without_code_display_is_left_to_the_otpauth_format() -> None:
    assert not ente.sniff(peer_bytes("aegis-importers/plain.txt"))


def test_encrypted_export_around_the_real_plain_export() -> None:
    data = _dump(_encrypt(peer_bytes("aegis-importers/ente_auth.txt")))
    assert ente.sniff_encrypted(data)
    assert ente.sniff(data)
    result = ente.parse_encrypted(data, password=PASSWORD)
    assert result.format == "ente-encrypted"
    assert_tokens(result, ENTE_ORDER)
    assert ente.parse(data, password=PASSWORD).tokens == result.tokens
    assert ente.PARSERS["ente-encrypted"](data, password=PASSWORD).tokens == result.tokens


def test_a_message_tag_instead_of_final_is_accepted_as_the_cli_does() -> None:
    plain = peer_bytes("aegis-importers/ente_auth.txt")
    data = _dump(
        _encrypt(plain, tag=sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE, params=TINY)
    )
    assert_tokens(ente.parse_encrypted(data, password=PASSWORD), ENTE_ORDER)


def test_other_tags_are_refused() -> None:
    data = _dump(
        _encrypt(b"x", tag=sodium.crypto_secretstream_xchacha20poly1305_TAG_PUSH, params=TINY)
    )
    with pytest.raises(FormatError, match="more than one encrypted message"):
        ente.parse_encrypted(data, password=PASSWORD)


def test_no_password_and_wrong_password() -> None:
    data = _dump(_encrypt(b"otpauth://totp/a?secret=JBSWY3DP", params=TINY))
    with pytest.raises(PasswordRequiredError, match="encrypted: give its password"):
        ente.parse_encrypted(data)
    with pytest.raises(PasswordRequiredError):
        ente.parse(data)
    with pytest.raises(WrongPasswordError, match="the password does not open this Ente export"):
        ente.parse_encrypted(data, password="wrong")
    with pytest.raises(WrongPasswordError):
        ente.parse_encrypted(data, password="")


@pytest.mark.parametrize("field", ["encryptedData", "encryptionNonce"])
def test_tampered_ciphertext_or_header_is_a_wrong_password(field: str) -> None:
    document = _encrypt(b"otpauth://totp/a?secret=JBSWY3DP", params=TINY)
    raw = bytearray(base64.b64decode(str(document[field])))
    raw[5] ^= 1
    document[field] = _b64(bytes(raw))
    with pytest.raises(WrongPasswordError):
        ente.parse_encrypted(_dump(document), password=PASSWORD)


def test_a_truncated_ciphertext_is_a_wrong_password() -> None:
    document = _encrypt(b"otpauth://totp/a?secret=JBSWY3DP", params=TINY)
    for length in (0, 10, 30):
        document["encryptedData"] = _b64(base64.b64decode(str(document["encryptedData"]))[:length])
        with pytest.raises(WrongPasswordError):
            ente.parse_encrypted(_dump(document), password=PASSWORD)


def test_a_truncated_file_is_not_json() -> None:
    data = _dump(_encrypt(b"otpauth://totp/a?secret=JBSWY3DP", params=TINY))
    with pytest.raises(FormatError, match="this Ente export is not valid JSON"):
        ente.parse_encrypted(data[:-20], password=PASSWORD)


def test_a_decrypted_text_of_no_accounts() -> None:
    data = _dump(_encrypt(b"# nothing\n", params=TINY))
    with pytest.raises(FormatError, match="no accounts found in this Ente export"):
        ente.parse_encrypted(data, password=PASSWORD)
    data = _dump(_encrypt(b"\xff\xfe", params=TINY))
    with pytest.raises(FormatError, match="not UTF-8"):
        ente.parse_encrypted(data, password=PASSWORD)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"memLimit": (1 << 30) + 1}, "the memLimit of this Ente export is out of range"),
        ({"memLimit": 1 << 40}, "the memLimit"),
        ({"memLimit": 1024}, "the memLimit"),
        ({"opsLimit": 21}, "the opsLimit of this Ente export is out of range"),
        ({"opsLimit": 0}, "the opsLimit"),
        ({"opsLimit": 2.5}, "the opsLimit of this Ente export is not a whole number"),
        ({"opsLimit": True}, "the opsLimit of this Ente export is not a whole number"),
        ({"salt": _b64(bytes(15))}, "the salt of this Ente export is not 16 bytes"),
        ({"salt": "!!"}, "the salt of this Ente export is not valid Base64"),
        ({"salt": None}, "this Ente export has no salt text"),
    ],
)
def test_absurd_kdf_parameters_are_refused_before_the_kdf(
    change: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = _encrypt(b"x", params=TINY)
    document["kdfParams"] = {**document["kdfParams"], **change}  # type: ignore[dict-item]

    def no_kdf(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the KDF ran with parameters that should have been refused")

    monkeypatch.setattr(argon2id, "kdf", no_kdf)
    with pytest.raises(FormatError) as caught:
        ente.parse_encrypted(_dump(document), password=PASSWORD)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "this Ente export has a version this program does not know"),
        ({"version": True}, "this Ente export has a version"),
        ({"kdfParams": None}, "this Ente export has no kdfParams"),
        ({"encryptionNonce": _b64(bytes(12))}, "the encryptionNonce of this Ente export is not 24"),
        ({"encryptedData": 5}, "this Ente export has no encryptedData text"),
    ],
)
def test_damaged_fields(change: dict[str, object], message: str) -> None:
    document = _encrypt(b"x", params=TINY) | change
    with pytest.raises(FormatError) as caught:
        ente.parse_encrypted(_dump(document), password=PASSWORD)
    assert str(caught.value).startswith(message)


def test_json_that_is_not_an_ente_export() -> None:
    for data in (b"[]", b"{}", b'{"version": 1}'):
        with pytest.raises(FormatError, match="not an encrypted Ente export"):
            ente.parse_encrypted(data, password=PASSWORD)
    assert not ente.sniff_encrypted(peer_bytes("aegis-importers/bitwarden.json"))


# --- fuzzing (tiny KDF parameters keep each example to a millisecond) ---

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
_VALID = _encrypt(b"otpauth://totp/Acme:bob?secret=JBSWY3DPEHPK3PXP", params=TINY)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    parse_or_format_error(ente.parse, data, password=PASSWORD)
    parse_or_format_error(ente.parse_encrypted, data, password=PASSWORD)
    ente.sniff(data)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(
        ["version", "encryptedData", "encryptionNonce", "kdfParams", "salt", "memLimit", "opsLimit"]
    ),
    st.one_of(
        _JSON,
        st.binary(max_size=40).map(_b64),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.integers(min_value=0, max_value=20),
    ),
)
def test_mutated_fields_of_a_valid_export(field: str, value: object) -> None:
    document = json.loads(json.dumps(_VALID))
    target = document["kdfParams"] if field in {"salt", "memLimit", "opsLimit"} else document
    if target.get(field) == value:
        return
    if field in {"memLimit", "opsLimit"} and isinstance(value, int) and not isinstance(value, bool):
        value = min(value, TINY[field] * 4)  # never a slow KDF: the limits are tested above
    target[field] = value
    outcome = parse_or_format_error(ente.parse_encrypted, _dump(document), password=PASSWORD)
    if field not in {"memLimit", "opsLimit"}:  # a clamped cost may be the original one again
        assert isinstance(outcome, FormatError)


def test_mutated_encrypted_file() -> None:
    fuzz_mutations(ente.parse_encrypted, _dump(_VALID), password=PASSWORD, max_examples=150)


def test_mutated_plain_file() -> None:
    fuzz_mutations(ente.parse, peer_bytes("aegis-importers/ente_auth.txt"))
