from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparekey.protocols.otpauth import OtpauthError, OtpauthUri, OtpType, b32decode, parse
from sparekey.protocols.rfc4226 import HashAlgorithm


def test_uri_follows_the_key_uri_format() -> None:
    uri = OtpauthUri(
        type=OtpType.TOTP,
        secret=b"Hello!\xde\xad\xbe\xef",
        account="john.doe@email.com",
        issuer="ACME Co",
        algorithm=HashAlgorithm.SHA256,
        digits=8,
        period=60,
    ).to_uri()
    assert uri == (
        "otpauth://totp/ACME%20Co:john.doe@email.com?secret=JBSWY3DPEHPK3PXP"
        "&issuer=ACME%20Co&algorithm=SHA256&digits=8&period=60"
    )


def test_hotp_uri_carries_the_counter_not_the_period() -> None:
    uri = OtpauthUri(
        type=OtpType.HOTP, secret=b"x" * 20, account="a", issuer="I", counter=5
    ).to_uri()
    assert "counter=5" in uri
    assert "period" not in uri


def test_reserved_characters_in_the_label_are_escaped_and_round_trip() -> None:
    original = OtpauthUri(
        type=OtpType.TOTP, secret=b"k" * 20, account="a:b/c?d&e", issuer="Ex:am&ple/Co"
    )
    uri = original.to_uri()
    assert uri.count(":") == 2  # the scheme's and the label separator, nothing else raw
    assert parse(uri) == original


def test_parse_reads_what_other_apps_write() -> None:
    parsed = parse("otpauth://totp/Example:alice@google.com?secret=JBSWY3DPEHPK3PXP&issuer=Example")
    assert parsed.issuer == "Example"
    assert parsed.account == "alice@google.com"
    assert parsed.secret == b"Hello!\xde\xad\xbe\xef"
    assert (parsed.digits, parsed.period, parsed.algorithm) == (6, 30, HashAlgorithm.SHA1)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://totp/x?secret=AAAA", "otpauth"),
        ("otpauth://motp/x?secret=AAAA", "type"),
        ("otpauth://totp/x", "secret"),
        ("otpauth://totp/x?secret=!!!!", "base32"),
        ("otpauth://totp/x?secret=AAAA&digits=12", "digits"),
        ("otpauth://totp/x?secret=AAAA&algorithm=MD5", "algorithm"),
        ("otpauth://hotp/x?secret=AAAA", "counter"),
        ("otpauth://totp/x?secret=AAAA&period=0", "period"),
    ],
)
def test_bad_uris_give_one_line_reasons(uri: str, reason: str) -> None:
    with pytest.raises(OtpauthError, match=reason):
        parse(uri)


def test_b32decode_accepts_what_people_type() -> None:
    assert b32decode("jbsw y3dp-ehpk 3pxp") == b"Hello!\xde\xad\xbe\xef"


_PARAMS = st.sampled_from(
    ["secret", "issuer", "algorithm", "digits", "period", "counter", "encoder", "image", ""]
)
_VALUES = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-5, max_value=10**25).map(str),
    st.sampled_from(["SHA1", "sha512", "Algorithm.sha256", "MD5", "JBSWY3DPEHPK3PXP", "²", "٣"]),
)


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(["totp", "hotp", "steam", "TOTP", "motp", ""]),
    label=st.text(max_size=30),
    params=st.lists(st.tuples(_PARAMS, _VALUES), max_size=6),
)
def test_any_uri_parses_or_gives_a_one_line_reason(
    kind: str, label: str, params: list[tuple[str, str]]
) -> None:
    """Every input is either a usable URI that round-trips, or an OtpauthError: never another
    exception (hypothesis found ``digits=²``, which str.isdigit accepts and int() refuses)."""
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in params)
    uri = f"otpauth://{kind}/{quote(label)}?{query}"
    parsed = _parse_or_reason(uri)
    if isinstance(parsed, OtpauthUri):
        assert parse(parsed.to_uri()) == parsed


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_gives_a_one_line_reason(text: str) -> None:
    _parse_or_reason(text)


def _parse_or_reason(text: str) -> OtpauthUri | str:
    """The parsed URI, or the error's message, which must be one non-empty line."""
    try:
        return parse(text)
    except OtpauthError as exc:
        reason = str(exc)
    assert reason
    assert "\n" not in reason
    return reason
