import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparekey.protocols.formats import FormatError, ImportResult, Skipped
from sparekey.protocols.formats import otpauth_list as fmt
from sparekey.protocols.otpauth import b32encode
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

NOW = 1_704_067_200  # 2024-01-01T00:00:00Z
KEY = "JBSWY3DPEHPK3PXP"
ENTE_ORDER = ("Air Canada", "Airbnb", "Boeing", "Deno", "Issuu", "SPDX", "WWE")


def test_aegis_plain_txt_is_read_entry_for_entry() -> None:
    data = peer_bytes("aegis-importers/plain.txt")
    assert fmt.sniff(data)
    result = fmt.parse(data)
    assert result.format == "otpauth"
    assert result.skipped == ()
    assert_tokens(result, AEGIS_ORDER)


def test_ente_plain_export_is_an_otpauth_list_too() -> None:
    data = peer_bytes("aegis-importers/ente_auth.txt")
    assert fmt.sniff(data)
    assert_tokens(fmt.parse(data), ENTE_ORDER)


def test_other_formats_are_not_sniffed_as_otpauth_text() -> None:
    for name in (
        "aegis-importers/bitwarden.json",
        "aegis-importers/bitwarden.csv",
        "aegis-importers/freeotp_plus.json",
        "extract_otp_secrets/example_export.txt",
    ):
        assert not fmt.sniff(peer_bytes(name)), name
    assert not fmt.sniff(b"")
    assert not fmt.sniff(b"\xff\xfe\x00")


def test_comments_blank_lines_bom_and_crlf_are_ignored() -> None:
    lines = peer_bytes("aegis-importers/plain.txt").decode().splitlines()
    text = "\ufeff# exported by hand\r\n\r\n" + "\r\n\r\n".join(lines) + "\r\n# end\r\n"
    assert_tokens(fmt.parse(text.encode()), AEGIS_ORDER)


def test_comma_separated_uris_are_entries_as_in_entes_importer() -> None:
    lines = peer_bytes("aegis-importers/plain.txt").decode().splitlines()
    assert_tokens(fmt.parse(",".join(lines).encode()), AEGIS_ORDER)
    assert_tokens(fmt.parse((" , ".join(lines) + ",").encode()), AEGIS_ORDER)


def test_a_raw_comma_inside_a_uri_does_not_split_it() -> None:
    uri = f"otpauth://totp/Acme:Smith,John?secret={KEY}&issuer=Acme%2C%20Inc,Other"
    (token,) = fmt.parse(uri.encode()).tokens
    assert (token.issuer, token.account) == ("Acme, Inc,Other", "Smith,John")


def test_an_unencoded_hash_in_the_label_is_read_as_ente_does() -> None:
    (token,) = fmt.parse(f"otpauth://totp/Acme:team#2?secret={KEY}&issuer=Acme".encode()).tokens
    assert token.account == "team#2"


def test_entes_code_display_is_ignored_but_its_note_kept() -> None:
    display = quote('{"pinned":true,"tags":["a,b"],"note":"work laptop"}', safe="")
    uri = f"otpauth://totp/Acme:bob?secret={KEY}&issuer=Acme&codeDisplay={display}"
    (token,) = fmt.parse(uri.encode()).tokens
    assert (token.issuer, token.account, token.note) == ("Acme", "bob", "work laptop")
    (plain,) = fmt.parse(f"otpauth://totp/A:b?secret={KEY}&codeDisplay=%7Bbroken".encode()).tokens
    assert plain.note == ""


def test_kinds_we_cannot_compute_are_skipped_not_fatal() -> None:
    text = "\n".join(
        (
            f"otpauth://yandex/Yandex:ivan?secret={KEY}&pin=1234",
            f"otpauth://motp/Corp:anna?secret={KEY}&pin=1234",
            "motp://Corp:anna?secret=0123456789abcdef&pin=1234",
            f"otpauth://totp/Old:md5?secret={KEY}&algorithm=MD5",
            f"otpauth://ykoath/Other:x?secret={KEY}",
            f"otpauth://totp/Deno:Mason?secret={KEY}&issuer=Deno",
        )
    )
    result = fmt.parse(text.encode())
    assert [t.issuer for t in result.tokens] == ["Deno"]
    assert result.skipped == (
        Skipped(label="Yandex: ivan", reason="Yandex tokens are not supported"),
        Skipped(label="Corp: anna", reason="mOTP tokens are not supported"),
        Skipped(label="(unnamed)", reason="mOTP tokens are not supported"),
        Skipped(label="Old: md5", reason="the MD5 algorithm is not supported"),
        Skipped(label="Other: x", reason="the token type 'ykoath' is not supported"),
    )


def test_only_skipped_entries_is_a_result_not_an_error() -> None:
    result = fmt.parse(f"otpauth://yandex/Y:i?secret={KEY}".encode())
    assert result.tokens == ()
    assert len(result.skipped) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f"otpauth://totp/a?secret={KEY}\n\notpauth://totp/b?secret=1!1",
            "line 3: the secret is not valid base32",
        ),
        ("hello world", "line 1: not an otpauth:// URI"),
        (f"otpauth://totp/a?secret={KEY}&digits=12", "line 1: digits must be a whole number"),
        ("otpauth://hotp/a?secret=" + KEY, "line 1: an hotp URI needs a counter parameter"),
        ("otpauth://totp/a?issuer=x", "line 1: the secret parameter is missing"),
        (f"otpauth://totp/a?secret={KEY}&period=0", "line 1: period must be"),
        (f"otpauth://totp/a?secret={KEY}&digits=\u00b2", "line 1: "),
        ("otpauth://[::1/a?secret=" + KEY, "line 1: "),
        ("", "no accounts found in this file"),
        ("# nothing here\n\n", "no accounts found"),
    ],
)
def test_bad_files_fail_with_one_line_reasons(text: str, message: str) -> None:
    with pytest.raises(FormatError, match="^" + message.replace("+", r"\+")) as caught:
        fmt.parse(text.encode())
    assert len(str(caught.value).splitlines()) == 1


def test_text_that_is_not_utf8_fails_cleanly() -> None:
    with pytest.raises(FormatError, match="not UTF-8"):
        fmt.parse(b"otpauth://totp/\xff?secret=" + KEY.encode())


def test_a_truncated_file_fails_on_its_last_line() -> None:
    data = peer_bytes("aegis-importers/plain.txt")
    cut = data[: data.index(b"issuer=Issuu") - 30]
    with pytest.raises(FormatError, match=r"^line 4: "):
        fmt.parse(cut)


@pytest.mark.parametrize(
    ("field", "kind", "digits"),
    [
        ("steam://JRZCL47CMXVOQMNPZR2F7J4RGI", TokenKind.STEAM, 5),
        ("STEAM://jrzcl47cmxvoqmnpzr2f7j4rgi", TokenKind.STEAM, 5),
        ("JRZC L47C MXVO QMNP ZR2F 7J4R GI", TokenKind.TOTP, 6),
        ("otpauth://totp/B:S?secret=JRZCL47CMXVOQMNPZR2F7J4RGI&digits=8", TokenKind.TOTP, 8),
        ("otpauth://steam/B:S?secret=JRZCL47CMXVOQMNPZR2F7J4RGI", TokenKind.STEAM, 5),
    ],
)
def test_totp_fields_of_password_managers(field: str, kind: TokenKind, digits: int) -> None:
    token = fmt.parse_totp_field(field)
    assert isinstance(token, Token)
    assert (token.kind, token.digits, token.algorithm, token.period) == (
        kind,
        digits,
        HashAlgorithm.SHA1,
        30,
    )
    assert b32encode(token.secret) == EXPECTED["Boeing"].secret


def test_totp_fields_that_are_unusable() -> None:
    assert isinstance(fmt.parse_totp_field(f"otpauth://yandex/a?secret={KEY}"), Skipped)
    for bad in ("steam://", "steam://not base32!", "not a key!", "", "otpauth://totp/a"):
        with pytest.raises(FormatError):
            fmt.parse_totp_field(bad)


def _hotp_by_hand(secret: bytes, counter: int, digits: int, digestmod: str) -> str:
    """RFC 4226 section 5.3, written out again here as an independent check."""
    digest = hmac.new(secret, counter.to_bytes(8, "big"), digestmod).digest()
    offset = digest[-1] & 0x0F
    value = int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def _steam_by_hand(secret: bytes, now: int) -> str:
    digest = hmac.new(secret, (now // 30).to_bytes(8, "big"), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFFFFFF
    chars = ""
    for _ in range(5):
        value, index = divmod(value, 26)
        chars += "23456789BCDFGHJKMNPQRTVWXY"[index]
    return chars


def test_codes_of_imported_tokens_match_oathtool() -> None:
    tokens = {t.issuer: t for t in fmt.parse(peer_bytes("aegis-importers/plain.txt")).tokens}
    at = datetime.fromtimestamp(NOW, UTC)
    for name in ("Deno", "SPDX", "Airbnb"):
        e = EXPECTED[name]
        want = totp_code(e.secret, at, algorithm=e.algorithm, digits=e.digits, period=e.period)
        assert tokens[name].code(now=NOW) == want, name
    for name in ("Issuu", "Air Canada", "WWE"):
        e = EXPECTED[name]
        want = hotp_code(e.secret, e.counter, algorithm=e.algorithm, digits=e.digits)
        assert tokens[name].code(now=NOW) == want, name
    wwe = tokens["WWE"]
    assert wwe.code(now=0) == _hotp_by_hand(wwe.secret, 10300, 8, "sha512")
    air = tokens["Air Canada"]
    assert air.code(now=0) == _hotp_by_hand(air.secret, 50, 7, "sha256")
    boeing = tokens["Boeing"]
    assert boeing.code(now=NOW) == _steam_by_hand(boeing.secret, NOW)


# --- fuzzing: any input is a result or a FormatError, never another exception ---


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    parse_or_format_error(fmt.parse, data)
    fmt.sniff(data)


_PARAM = st.sampled_from(
    ["secret", "issuer", "algorithm", "digits", "period", "counter", "codeDisplay", "encoder", "x"]
)
_VALUE = st.one_of(
    st.sampled_from([KEY, "SHA1", "sha256", "MD5", "Algorithm.sha512", "steam", "6", "8", "30"]),
    st.integers(min_value=-5, max_value=10**20).map(str),
    st.text(max_size=12),
)


@st.composite
def _uris(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["otpauth", "OTPAUTH", "motp", "steam", "otpauth-migration"]))
    kind = draw(st.sampled_from(["totp", "hotp", "steam", "yandex", "motp", "", "x y"]))
    label = draw(st.text(max_size=16))
    params = draw(st.lists(st.tuples(_PARAM, _VALUE), max_size=6))
    query = "&".join(f"{k}={draw(st.sampled_from([v, quote(v)]))}" for k, v in params)
    return f"{scheme}://{kind}/{draw(st.sampled_from([label, quote(label)]))}?{query}"


@settings(max_examples=200, deadline=None)
@given(st.lists(_uris(), min_size=1, max_size=3), st.sampled_from(["\n", ",", " , ", "\r\n#\n"]))
def test_otpauth_uris_with_random_parameters(uris: list[str], separator: str) -> None:
    outcome = parse_or_format_error(fmt.parse, separator.join(uris).encode())
    if isinstance(outcome, ImportResult):
        assert all(t.secret for t in outcome.tokens)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_totp_field_with_arbitrary_text(text: str) -> None:
    error: FormatError | None = None
    try:
        fmt.parse_totp_field(text)
    except FormatError as exc:
        error = exc
    assert error is None or len(str(error).splitlines()) == 1


@pytest.mark.parametrize("name", ["aegis-importers/plain.txt", "aegis-importers/ente_auth.txt"])
def test_mutated_real_files(name: str) -> None:
    fuzz_mutations(fmt.parse, peer_bytes(name))
