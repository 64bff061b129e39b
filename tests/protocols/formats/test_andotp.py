import hashlib
import json
import struct
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from sparekey.protocols.formats import (
    FormatError,
    PasswordRequiredError,
    WrongPasswordError,
    andotp,
)
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.tokens import TokenKind
from tests.helpers import hotp_code, totp_code
from tests.protocols.formats.peer import (
    AEGIS_ORDER,
    EXPECTED,
    assert_tokens,
    fuzz_mutations,
    mutated,
    parse_or_format_error,
    peer_bytes,
    token_fields,
)

PASSWORD = "correct horse"
FAST_ITERATIONS = 1000  # andOTP uses 140,000 to 160,000; the real files are tested with those
T = datetime(2024, 1, 1, tzinfo=UTC)
ENTRY = {
    "secret": "JBSWY3DPEHPK3PXP====",
    "issuer": "Acme",
    "label": "bob",
    "digits": 6,
    "type": "TOTP",
    "algorithm": "SHA1",
    "thumbnail": "Default",
    "last_used": 1608146844162,
    "used_frequency": 0,
    "period": 30,
    "tags": [],
}
WRONG = "the password is wrong, or this is not an andOTP backup"


def _encrypt_new(
    plaintext: bytes, *, password: str = PASSWORD, iterations: int = FAST_ITERATIONS
) -> bytes:
    """The current layout as FORMATS.md (e) describes it, built with hashlib and AESGCM."""
    salt, iv = b"s" * 12, b"i" * 12
    key = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations, 32)
    return struct.pack(">I", iterations) + salt + iv + AESGCM(key).encrypt(iv, plaintext, None)


def _encrypt_old(plaintext: bytes, *, password: str = PASSWORD, iv: bytes = b"\xff" * 12) -> bytes:
    # The default IV, read as an iteration count, is far above the cap: no KDF is tried.
    key = hashlib.sha256(password.encode()).digest()
    return iv + AESGCM(key).encrypt(iv, plaintext, None)


def _dump(document: object) -> bytes:
    return json.dumps(document).encode()


def _fields(entry: dict[str, object]) -> dict[str, object]:
    (token,) = andotp.parse(_dump([entry])).tokens
    return token_fields(token)


# --- the real files ---


def test_plain_backup_is_read_entry_for_entry() -> None:
    result = andotp.parse(peer_bytes("aegis-importers/andotp_plain.json"))
    assert result.format == "andotp"
    assert result.skipped == ()
    assert_tokens(result, AEGIS_ORDER)


def test_encrypted_backup_is_read_entry_for_entry() -> None:
    data = peer_bytes("aegis-importers/andotp_encrypted.bin")
    assert_tokens(andotp.parse(data, password="test"), AEGIS_ORDER)


def test_old_encrypted_backup_splits_its_labels() -> None:
    # No issuer field; labels are "Deno - Deno:Mason" (the README expects "Issuer:account").
    data = peer_bytes("aegis-importers/andotp_encrypted_old.bin")
    assert_tokens(andotp.parse(data, password="test"), AEGIS_ORDER[:-1])


def test_andotp_decrypt_backup_with_issuers() -> None:
    data = peer_bytes("andotp-decrypt/accounts_issuer_123456.json.aes")
    result = andotp.parse(data, password="123456")
    assert [(t.issuer, t.account, t.kind, t.digits, t.period) for t in result.tokens] == [
        ("asmw.org", "account1", TokenKind.TOTP, 6, 30),
        ("asmw.org", "account2", TokenKind.TOTP, 6, 30),
        ("asmw.org", "account2", TokenKind.TOTP, 6, 30),
        ("ACME Inc.", "acme_account", TokenKind.TOTP, 6, 30),
        ("ACME Inc.", "coyote", TokenKind.TOTP, 6, 30),
        ("NoAccountIssuer", "", TokenKind.TOTP, 6, 30),
        ("", "no_issuer_account", TokenKind.TOTP, 6, 30),  # label ":no_issuer_account"
    ]
    assert [token_fields(t)["secret"] for t in result.tokens] == [
        "3G4IFPMFOAVRYJTTNQEBECRQU4GP6XQ4",
        "CFRT34OKJGJD5WXYE4RYR6XBU4MKEVYR",
        "MTCGQYWEURZMUSXBLZ6YYVUOME6ZOCH6",
        "AGXJE727UYEYQRRVZ73V3YJLZLGDOFVQ",
        "KTHQMHAWZHDI5VNEWYPS7ZGQSWIPJ6BN",
        "NMWEMYZDMORTCIFAZMYDIV3NIFZREC5B",
        "N52C2PQUCKJM36ZQXYXKQGQKINGEYW43",
    ]
    assert {t.algorithm for t in result.tokens} == {HashAlgorithm.SHA1}


@pytest.mark.parametrize("layout", ["new", "old"])
def test_andotp_decrypt_single_account_backups(layout: str) -> None:
    data = peer_bytes(f"andotp-decrypt/accounts_{layout}_123456.json.aes")
    (token,) = andotp.parse(data, password="123456").tokens
    assert token_fields(token) == {
        "issuer": "",
        "account": "test",
        "kind": TokenKind.TOTP,
        "secret": "JBSWY3DPEHPK3PXP",
        "algorithm": HashAlgorithm.SHA1,
        "digits": 6,
        "period": 30,
    }
    assert token.code(now=T.timestamp()) == totp_code("JBSWY3DPEHPK3PXP", T)


def test_garbage_is_a_wrong_password() -> None:
    data = peer_bytes("andotp-decrypt/garbage.json.aes")
    with pytest.raises(WrongPasswordError) as caught:
        andotp.parse(data, password="123456")
    assert str(caught.value) == WRONG


@pytest.mark.parametrize(
    "name",
    [
        "aegis-importers/andotp_encrypted.bin",
        "aegis-importers/andotp_encrypted_old.bin",
        "andotp-decrypt/accounts_new_123456.json.aes",
        "andotp-decrypt/accounts_old_123456.json.aes",
    ],
)
def test_encrypted_backups_need_the_right_password(name: str) -> None:
    data = peer_bytes(name)
    with pytest.raises(PasswordRequiredError, match=r"^this looks like an encrypted andOTP backup"):
        andotp.parse(data)
    with pytest.raises(WrongPasswordError, match=WRONG):
        andotp.parse(data, password="wrong")


def test_sniff() -> None:
    plain = peer_bytes("aegis-importers/andotp_plain.json")
    assert andotp.sniff(plain)
    assert not andotp.sniff_encrypted(plain)
    for name in (
        "aegis-importers/andotp_encrypted.bin",
        "aegis-importers/andotp_encrypted_old.bin",
        "andotp-decrypt/accounts_issuer_123456.json.aes",
        "andotp-decrypt/accounts_old_123456.json.aes",
        "andotp-decrypt/garbage.json.aes",
    ):
        assert not andotp.sniff(peer_bytes(name))
        assert andotp.sniff_encrypted(peer_bytes(name))
    for name in ("aegis_plain.json", "2fas_authenticator_plain_v4.2fas", "bitwarden.json"):
        data = peer_bytes(f"aegis-importers/{name}")
        assert not andotp.sniff(data)
        assert not andotp.sniff_encrypted(data)
    assert not andotp.sniff(b"[]")
    assert not andotp.sniff(b"[1, 2]")
    assert not andotp.sniff_encrypted(b"\x00" * 43)


def test_codes_agree_with_oathtool() -> None:
    tokens = {
        t.issuer: t for t in andotp.parse(peer_bytes("aegis-importers/andotp_plain.json")).tokens
    }
    airbnb, wwe = EXPECTED["Airbnb"], EXPECTED["WWE"]
    assert tokens["Airbnb"].code(now=T.timestamp()) == totp_code(
        airbnb.secret, T, algorithm="SHA512", digits=8, period=50
    )
    assert tokens["WWE"].code(now=0) == hotp_code(wwe.secret, 10300, algorithm="SHA512", digits=8)


# --- the encrypted layouts ---


def test_both_layouts_built_from_the_description() -> None:
    plain = _dump([ENTRY])
    for data in (_encrypt_new(plain), _encrypt_old(plain)):
        (token,) = andotp.parse(data, password=PASSWORD).tokens
        assert (token.issuer, token.account) == ("Acme", "bob")


@pytest.mark.parametrize("iterations", [0, andotp.MAX_ITERATIONS + 1, 2**32 - 1])
def test_iteration_counts_out_of_range_never_reach_the_kdf(
    iterations: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_kdf(*args: object, **kwargs: object) -> object:
        raise AssertionError("PBKDF2 ran with an iteration count that should have been refused")

    monkeypatch.setattr(andotp, "PBKDF2HMAC", no_kdf)
    data = struct.pack(">I", iterations) + _encrypt_new(_dump([ENTRY]))[4:]
    with pytest.raises(WrongPasswordError, match=WRONG):
        andotp.parse(data, password=PASSWORD)


@pytest.mark.parametrize("position", [4, 16, 28, -1])
def test_tampered_salt_iv_ciphertext_or_tag_is_a_wrong_password(position: int) -> None:
    data = bytearray(_encrypt_new(_dump([ENTRY])))
    data[position] ^= 1
    with pytest.raises(WrongPasswordError):
        andotp.parse(bytes(data), password=PASSWORD)


def test_decrypted_text_that_is_not_a_list_of_accounts() -> None:
    with pytest.raises(FormatError, match=r"^the decrypted andOTP backup is not valid JSON"):
        andotp.parse(_encrypt_new(b"not json"), password=PASSWORD)
    with pytest.raises(FormatError, match=r"^this andOTP backup is not a JSON list of accounts"):
        andotp.parse(_encrypt_old(b'{"a": 1}'), password=PASSWORD)


def test_too_short_to_be_encrypted() -> None:
    with pytest.raises(FormatError, match=r"too short"):
        andotp.parse(b"\xff" * 27, password=PASSWORD)


@pytest.mark.parametrize("start", [b"[", b"{", b" "])
def test_an_encrypted_backup_that_starts_like_json(start: bytes) -> None:
    # An old-layout IV is random: 1 in 128 starts with "[" or "{", and it is still encrypted.
    data = _encrypt_old(_dump([ENTRY]), iv=start + b"\xfe" * 11)
    assert andotp.sniff_encrypted(data)
    assert not andotp.sniff(data)
    with pytest.raises(PasswordRequiredError):
        andotp.parse(data)
    assert len(andotp.parse(data, password=PASSWORD).tokens) == 1


def test_text_that_is_not_json_is_a_damaged_plain_backup() -> None:
    with pytest.raises(FormatError, match=r"^this andOTP backup is not valid JSON") as caught:
        andotp.parse(b'[{"secret": "JBSWY3DPEHPK3PXP", ' + b"x" * 40, password=PASSWORD)
    assert not isinstance(caught.value, PasswordRequiredError | WrongPasswordError)
    assert not andotp.sniff_encrypted(b"otpauth://totp/a?secret=JBSWY3DPEHPK3PXP&issuer=b")


# --- entries ---


@pytest.mark.parametrize(
    ("issuer", "label", "expected"),
    [
        (None, "Deno - Deno:Mason", ("Deno", "Mason")),
        (None, "Deno - Mason", ("Deno", "Mason")),
        (None, "Deno:Mason", ("Deno", "Mason")),
        (None, "Mason", ("", "Mason")),
        ("", ":no_issuer_account", ("", "no_issuer_account")),
        ("Acme", "a:b - c", ("Acme", "a:b - c")),  # an issuer field: the label is the account
    ],
)
def test_labels(issuer: str | None, label: str, expected: tuple[str, str]) -> None:
    entry = {k: v for k, v in ENTRY.items() if k != "issuer"} | {"label": label}
    if issuer is not None:
        entry["issuer"] = issuer
    fields = _fields(entry)
    assert (fields["issuer"], fields["account"]) == expected


def test_types() -> None:
    entries = [
        ENTRY | {"type": "STEAM", "digits": 5, "issuer": "Steam"},
        ENTRY | {"type": "HOTP", "counter": 9, "algorithm": "SHA256"},
        ENTRY | {"type": "MOTP", "issuer": "M"},
        ENTRY | {"type": "OTHER", "issuer": "O"},
        ENTRY | {"algorithm": "MD5", "issuer": "H"},
    ]
    result = andotp.parse(_dump(entries))
    steam, hotp = result.tokens
    assert (steam.kind, steam.digits, steam.algorithm) == (TokenKind.STEAM, 5, HashAlgorithm.SHA1)
    assert (hotp.kind, hotp.counter, hotp.algorithm) == (
        TokenKind.HOTP,
        9,
        HashAlgorithm.SHA256,
    )
    assert [(s.label, s.reason) for s in result.skipped] == [
        ("M: bob", "mOTP tokens are not supported"),
        ("O: bob", "unknown token type 'OTHER'"),
        ("H: bob", "the 'MD5' algorithm is not supported"),
    ]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"secret": "X"}, "this andOTP backup is not a JSON list of accounts"),
        ([], "no accounts found in this andOTP backup"),
        ([5], "entry 1 is not a JSON object"),
        ([ENTRY, ENTRY | {"digits": 11}], "entry 2: digits must be from 4 to 10"),
        ([ENTRY | {"digits": "6"}], "entry 1: digits must be a whole number"),
        ([ENTRY | {"period": -30}], "entry 1: the period must be from 1 to 86400 seconds"),
        ([ENTRY | {"secret": "0189"}], "entry 1: the secret is not valid base32"),
        ([ENTRY | {"secret": None}], "entry 1: the secret is empty"),
        ([ENTRY | {"label": 5}], "entry 1: label must be text"),
    ],
)
def test_damaged_plain_backups(document: object, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        andotp.parse(_dump(document))
    assert str(caught.value).startswith(message)


# --- fuzzing ---

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
_FAST_HEADER = struct.pack(">I", FAST_ITERATIONS)
_NEW = _encrypt_new(_dump([ENTRY, ENTRY | {"type": "HOTP", "counter": 1}]))
_OLD = _encrypt_old(_dump([ENTRY]))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    # Without a password no KDF runs; with one, an iteration count picked at random could
    # legitimately take seconds, so the password cases keep a small one in front.
    parse_or_format_error(andotp.parse, data)
    parse_or_format_error(andotp.parse, _FAST_HEADER + data, password=PASSWORD)
    andotp.sniff(data)
    andotp.sniff_encrypted(data)


@settings(max_examples=150, deadline=None)
@given(_JSON)
def test_json_of_the_wrong_shape(document: object) -> None:
    parse_or_format_error(andotp.parse, _dump(document), password=PASSWORD)
    parse_or_format_error(andotp.parse, _encrypt_old(_dump(document)), password=PASSWORD)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(
        ["secret", "issuer", "label", "digits", "type", "algorithm", "period", "counter"]
    ),
    _JSON,
)
def test_mutated_entry_fields(field: str, value: object) -> None:
    parse_or_format_error(andotp.parse, _dump([ENTRY | {field: value}]))


@settings(max_examples=150, deadline=None)
@given(mutated(_NEW[4:]))
def test_mutated_encrypted_backup(body: bytes) -> None:
    parse_or_format_error(andotp.parse, _FAST_HEADER + body, password=PASSWORD)


@settings(max_examples=150, deadline=None)
@given(mutated(_OLD[4:]))
def test_mutated_old_encrypted_backup(body: bytes) -> None:
    parse_or_format_error(andotp.parse, _OLD[:4] + body, password=PASSWORD)


def test_mutated_plain_file() -> None:
    fuzz_mutations(andotp.parse, peer_bytes("aegis-importers/andotp_plain.json"))


def test_mutated_real_encrypted_file() -> None:
    # The real iteration count (145,776) is kept: a mutated one could cost seconds a try.
    real = peer_bytes("aegis-importers/andotp_encrypted.bin")

    @settings(max_examples=15, deadline=None)
    @given(mutated(real[4:]))
    def check(body: bytes) -> None:
        parse_or_format_error(andotp.parse, real[:4] + body, password="test")

    check()
