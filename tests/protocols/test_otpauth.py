import pytest

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
