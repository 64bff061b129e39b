import base64
import json
import random
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparekey.protocols.formats import FormatError, ImportResult, Skipped
from sparekey.protocols.formats import google_migration as fmt
from sparekey.protocols.otpauth import b32encode
from sparekey.protocols.otpauth import parse as parse_otpauth
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.tokens import Token, TokenKind
from tests.protocols.formats.peer import fuzz_mutations, parse_or_format_error, peer_bytes

# --- a protobuf writer of our own, so the tests do not check the parser against itself ---


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 are ten bytes of two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _otp(
    secret: bytes = b"\x01" * 10,
    name: str = "",
    issuer: str = "",
    algorithm: int = 0,
    digits: int = 0,
    kind: int = 0,
    counter: int = 0,
) -> bytes:
    body = (
        _bytes_field(1, secret) + _bytes_field(2, name.encode()) + _bytes_field(3, issuer.encode())
    )
    for number, value in ((4, algorithm), (5, digits), (6, kind), (7, counter)):
        if value:
            body += _int_field(number, value)
    return _bytes_field(1, body)


def _uri(*otps: bytes, size: int = 1, index: int = 0, batch_id: int = -7) -> str:
    payload = b"".join(otps) + _int_field(2, 1) + _int_field(3, size) + _int_field(4, index)
    payload += _int_field(5, batch_id)
    return "otpauth-migration://offline?data=" + quote(base64.b64encode(payload).decode(), safe="")


# --- the real exports ---


def test_example_export_matches_extract_otp_secrets_decoding() -> None:
    data = peer_bytes("extract_otp_secrets/example_export.txt")
    expected = json.loads(peer_bytes("extract_otp_secrets/example_output.json"))
    assert fmt.sniff(data)
    result = fmt.parse(data)
    assert result.format == "google"
    assert result.skipped == ()
    assert len(result.tokens) == len(expected) == 6
    for token, entry in zip(result.tokens, expected, strict=True):
        assert b32encode(token.secret) == entry["secret"]
        assert token.kind.value == entry["type"]
        assert token.counter == (entry["counter"] or 0)
        assert (token.algorithm, token.digits, token.period) == (HashAlgorithm.SHA1, 6, 30)
        # Names: Google's name and issuer, split as the otpauth URI extract_otp_secrets wrote.
        from_url = parse_otpauth(entry["url"])
        assert (token.issuer, token.account) == (from_url.issuer or "", from_url.account)
        if ":" not in entry["name"]:
            assert (token.issuer, token.account) == (entry["issuer"], entry["name"])
    assert (result.tokens[5].issuer, result.tokens[5].account) == ("encoding", "¿äÄéÉ? (demo)")


def test_raw_plus_slash_and_equals_in_the_data_are_not_form_decoded() -> None:
    data = peer_bytes("extract_otp_secrets/test_plus_problem_export.txt")
    result = fmt.parse(data)
    assert [(t.issuer, t.account) for t in result.tokens] == [
        ("SerenityLabs", f"test{n}@serenitylabs.co.uk") for n in range(1, 5)
    ]
    raw = base64.b64decode(data.decode().strip().split("data=", 1)[1])
    for token in result.tokens:
        assert (token.kind, token.digits, token.algorithm) == (
            TokenKind.TOTP,
            6,
            HashAlgorithm.SHA1,
        )
        assert len(token.secret) == 20
        assert token.secret in raw
    # Someone who form-decoded it first (every '+' a space) gets the same accounts back.
    spaced = data.decode().replace("+", " ").encode()
    assert fmt.parse(spaced).tokens == result.tokens


# --- fields of the payload ---


def test_unspecified_enums_mean_sha1_six_digits_totp() -> None:
    part = fmt.decode_uri(_uri(_otp(name="alice", issuer="Acme")))
    (token,) = part.tokens
    assert token == Token(kind=TokenKind.TOTP, secret=b"\x01" * 10, issuer="Acme", account="alice")
    assert (part.version, part.batch_size, part.batch_index, part.batch_id) == (1, 1, 0, -7)


def test_every_algorithm_digit_count_and_type() -> None:
    part = fmt.decode_uri(
        _uri(
            _otp(name="a", algorithm=2, digits=2, kind=2),
            _otp(name="b", algorithm=3, digits=1, kind=1, counter=41),
            _otp(name="c", algorithm=1, digits=2, kind=1),
        )
    )
    got = [(t.account, t.kind, t.algorithm, t.digits, t.counter) for t in part.tokens]
    assert got == [
        ("a", TokenKind.TOTP, HashAlgorithm.SHA256, 8, 0),
        ("b", TokenKind.HOTP, HashAlgorithm.SHA512, 6, 41),
        ("c", TokenKind.HOTP, HashAlgorithm.SHA1, 8, 0),
    ]


@pytest.mark.parametrize(
    ("name", "issuer", "want"),
    [
        ("SerenityLabs:test1@x.uk", "SerenityLabs", ("SerenityLabs", "test1@x.uk")),
        ("serenitylabs: test1@x.uk", "SerenityLabs", ("SerenityLabs", "test1@x.uk")),
        ("Other:test1@x.uk", "SerenityLabs", ("SerenityLabs", "Other:test1@x.uk")),
        ("GitHub:octocat", "", ("GitHub", "octocat")),
        ("octocat", "", ("", "octocat")),
        ("  octocat ", " GitHub ", ("GitHub", "octocat")),
    ],
)
def test_issuer_prefixes_in_the_name(name: str, issuer: str, want: tuple[str, str]) -> None:
    (token,) = fmt.decode_uri(_uri(_otp(name=name, issuer=issuer))).tokens
    assert (token.issuer, token.account) == want


def test_md5_and_unknown_enums_are_skipped() -> None:
    part = fmt.decode_uri(
        _uri(
            _otp(name="md5", issuer="Old", algorithm=4),
            _otp(name="x", algorithm=9),
            _otp(name="y", digits=3),
            _otp(name="z", kind=7),
            _otp(name="ok"),
        )
    )
    assert [t.account for t in part.tokens] == ["ok"]
    assert part.skipped == (
        Skipped(label="Old: md5", reason="the MD5 algorithm is not supported"),
        Skipped(label="x", reason="unknown algorithm 9"),
        Skipped(label="y", reason="unknown digit count 3"),
        Skipped(label="z", reason="unknown token type 7"),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("otpauth-migration://offline?data=%%%", "line 1: the data parameter is not valid Base64"),
        ("otpauth-migration://offline?data=AAAA!", "line 1: the data parameter is not valid"),
        ("otpauth-migration://offline?data=/////w", "line 1: the data parameter is not a Google"),
        ("otpauth-migration://offline?other=1", "line 1: the otpauth-migration:// URI has no data"),
        ("otpauth://totp/a?secret=AAAA", "line 1: not an otpauth-migration:// URI"),
        ("# only a comment\n", "no otpauth-migration:// URI found"),
        (_uri(_otp(secret=b"")), "line 1: account 1: the secret is empty"),
        (_uri(_otp(name="h", kind=1, counter=-1)), "line 1: account 1 (h): the counter must fit"),
        (_uri(), "no accounts found in this Google Authenticator export"),
    ],
)
def test_bad_exports_fail_with_one_line_reasons(text: str, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        fmt.parse(text.encode())
    assert str(caught.value).startswith(message)


def test_a_truncated_export_fails_cleanly() -> None:
    line = peer_bytes("extract_otp_secrets/test_plus_problem_export.txt").strip()
    with pytest.raises(FormatError, match=r"^line 1: the data parameter is not a Google"):
        fmt.parse(line[:-40])


# --- batches over several QR codes or files ---


def _tokens(count: int) -> list[Token]:
    kinds = [TokenKind.TOTP, TokenKind.HOTP]
    algorithms = list(HashAlgorithm)
    return [
        Token(
            kind=kinds[n % 2],
            secret=bytes([n]) * (10 + n % 11),
            issuer=f"Issuer {n}" if n % 3 else "",
            account=f"user{n}@example.com",
            algorithm=algorithms[n % 3],
            digits=(6, 8)[n % 2],
            counter=n * 1000 if n % 2 else 0,
        )
        for n in range(count)
    ]


def test_encode_writes_one_batch_of_parts_with_ten_accounts_each() -> None:
    tokens = _tokens(25)
    uris = fmt.encode(tokens)
    parts = [fmt.decode_uri(uri) for uri in uris]
    assert [len(p.tokens) for p in parts] == [10, 10, 5]
    assert [(p.version, p.batch_size, p.batch_index) for p in parts] == [
        (1, 3, n) for n in range(3)
    ]
    assert len({p.batch_id for p in parts}) == 1
    assert -(2**31) <= parts[0].batch_id < 2**31
    assert fmt.combine(parts).tokens == tuple(tokens)
    assert fmt.missing_parts(parts) == ()


def test_parts_combine_in_any_order_and_a_part_read_twice_counts_once() -> None:
    tokens = _tokens(7)
    uris = fmt.encode(tokens, batch_size_limit=3, batch_id=-1320898453)
    shuffled = [uris[2], uris[0], uris[2], uris[1]]
    random.Random(1).shuffle(shuffled)
    assert fmt.parse_payloads(shuffled).tokens == tuple(tokens)
    # Several files, one of them holding two parts.
    assert fmt.parse_payloads([uris[1], f"# first\n{uris[0]}\n\n{uris[2]}\n"]).tokens == tuple(
        tokens
    )


def test_a_missing_part_is_named_counting_from_one() -> None:
    uris = fmt.encode(_tokens(7), batch_size_limit=3)
    with pytest.raises(FormatError) as caught:
        fmt.parse_payloads([uris[0], uris[2]])
    assert str(caught.value) == "part 2 of 3 of this Google Authenticator export is missing"
    with pytest.raises(FormatError) as caught:
        fmt.parse("\n".join(uris[:1]).encode())
    assert str(caught.value) == "parts 2 and 3 of 3 of this Google Authenticator export are missing"
    parts = [fmt.decode_uri(uris[1])]
    assert fmt.missing_parts(parts) == ((1, 3), (3, 3))


def test_two_batches_together_are_both_read() -> None:
    first, second = _tokens(4), _tokens(6)[4:]
    uris = fmt.encode(first, batch_size_limit=2, batch_id=1) + fmt.encode(second, batch_id=2)
    assert fmt.parse_payloads(uris).tokens == tuple(first + second)


def test_a_part_outside_its_batch_is_refused() -> None:
    with pytest.raises(FormatError, match="part 3 of 2 of this Google Authenticator export"):
        fmt.parse(_uri(_otp(name="a"), size=2, index=2).encode())


def test_errors_name_the_input_when_there_are_several() -> None:
    uri = fmt.encode(_tokens(1))[0]
    with pytest.raises(FormatError, match=r"^input 2, line 3: the data parameter"):
        fmt.parse_payloads([uri, "#\n\notpauth-migration://offline?data=%%"])


def test_encode_refuses_what_google_cannot_hold_naming_it() -> None:
    key = b"k" * 10
    tokens = [
        Token(kind=TokenKind.TOTP, secret=key, issuer="Fine", account="a"),
        Token.steam(secret=key, account="gamer"),
        Token(kind=TokenKind.TOTP, secret=key, issuer="SPDX", account="James", digits=7, period=20),
    ]
    with pytest.raises(FormatError) as caught:
        fmt.encode(tokens)
    assert str(caught.value) == (
        "Google Authenticator cannot hold Steam: gamer (Steam); "
        "SPDX: James (7 digits, a 20-second period)"
    )
    with pytest.raises(FormatError):
        fmt.encode([])
    with pytest.raises(FormatError):
        fmt.encode(tokens[:1], batch_size_limit=0)


def test_encoded_uris_are_what_google_writes() -> None:
    (uri,) = fmt.encode(_tokens(2), batch_id=-1)
    assert uri.startswith("otpauth-migration://offline?data=")
    data = uri.split("data=", 1)[1]
    assert "+" not in data
    assert "/" not in data
    assert "=" not in data
    assert fmt.sniff(uri.encode())


_TOKENS = st.builds(
    Token,
    kind=st.sampled_from([TokenKind.TOTP, TokenKind.HOTP]),
    secret=st.binary(min_size=1, max_size=64),
    issuer=st.text(max_size=20).map(str.strip),
    account=st.text(max_size=20).map(str.strip),
    algorithm=st.sampled_from(list(HashAlgorithm)),
    digits=st.sampled_from([6, 8]),
    counter=st.integers(min_value=0, max_value=2**63 - 1),
).map(lambda t: t if t.kind is TokenKind.HOTP else Token(**{**t.__dict__, "counter": 0}))


@settings(max_examples=200, deadline=None)
@given(st.lists(_TOKENS, min_size=1, max_size=25), st.integers(min_value=1, max_value=12))
def test_encode_then_import_gives_the_tokens_back(tokens: list[Token], limit: int) -> None:
    # An account with a colon may read back split or shortened (see the issuer prefix test).
    tokens = [t for t in tokens if ":" not in t.account] or _tokens(1)
    uris = fmt.encode(tokens, batch_size_limit=limit)
    assert fmt.parse_payloads(reversed(uris)).tokens == tuple(tokens)


# --- fuzzing ---


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    parse_or_format_error(fmt.parse, data)
    fmt.sniff(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["", "=", "==", "%3D"]))
def test_arbitrary_payloads(payload: bytes, padding: str) -> None:
    data = base64.b64encode(payload).decode().rstrip("=")
    uri = f"otpauth-migration://offline?data={quote(data, safe='')}{padding}"
    outcome = parse_or_format_error(fmt.parse, uri.encode())
    assert isinstance(outcome, ImportResult | FormatError)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(
            _otp,
            secret=st.binary(max_size=12),
            name=st.text(max_size=10),
            issuer=st.text(max_size=10),
            algorithm=st.integers(min_value=0, max_value=6),
            digits=st.integers(min_value=0, max_value=3),
            kind=st.integers(min_value=0, max_value=3),
            counter=st.integers(min_value=-(2**63), max_value=2**63 - 1),
        ),
        max_size=4,
    ),
    st.integers(min_value=-3, max_value=4),
    st.integers(min_value=-3, max_value=4),
)
def test_structured_payloads_with_odd_fields(otps: list[bytes], size: int, index: int) -> None:
    parse_or_format_error(fmt.parse, _uri(*otps, size=size, index=index).encode())


@pytest.mark.parametrize(
    "name",
    ["extract_otp_secrets/example_export.txt", "extract_otp_secrets/test_plus_problem_export.txt"],
)
def test_mutated_real_files(name: str) -> None:
    fuzz_mutations(fmt.parse, peer_bytes(name))
