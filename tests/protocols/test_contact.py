"""Contact addresses (E.164 numbers, email addresses), their masks, and the origin-bound SMS text
that WebOTP and iOS autofill read (WICG "Origin-bound one-time codes delivered via SMS", §3)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparekey.protocols.contact import (
    ContactError,
    mask_email,
    mask_phone,
    normalize_email,
    normalize_phone,
    webotp_sms,
)


def attempt(call: Callable[[], str]) -> str | ContactError:
    """The value, or the ContactError raised (any other exception fails the test)."""
    try:
        return call()
    except ContactError as exc:
        return exc


def assert_one_line(error: ContactError) -> None:
    assert str(error)
    assert "\n" not in str(error)


# -- phone numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "region", "e164"),
    [
        ("+44 7911 123456", None, "+447911123456"),  # UK mobile
        ("07911 123456", "GB", "+447911123456"),
        ("020 7946 0018", "gb", "+442079460018"),  # London, region in any case
        ("+44 (0)20 7946 0018", None, "+442079460018"),  # the UK's "(0)" habit
        ("(201) 555-0123", "US", "+12015550123"),  # US, national format
        ("+1 201-555-0123", "GB", "+12015550123"),  # a + number ignores the default region
        ("1-201-555-0123", "US", "+12015550123"),
        ("030 1234567", "DE", "+49301234567"),  # Berlin
        ("+49 1512 3456789", None, "+4915123456789"),  # German mobile
        ("0049 1512 3456789", "DE", "+4915123456789"),  # international prefix 00
        ("+91 98765 43210", None, "+919876543210"),  # Indian mobile
        ("098765 43210", "IN", "+919876543210"),
        ("  +91-98765-43210\t", None, "+919876543210"),
    ],
)
def test_real_shapes_normalise_to_e164(text: str, region: str | None, e164: str) -> None:
    assert normalize_phone(text, default_region=region) == e164


@pytest.mark.parametrize(
    ("text", "region", "reason"),
    [
        ("", "GB", "not a phone number"),
        ("call me maybe", "US", "not a phone number"),
        ("07911 123456", None, "country code"),  # national number, no region to read it in
        ("+999 1234 5678", None, "country code does not exist"),
        ("+44 12", None, "too short"),
        ("+44 7911 1234567890123", None, "too long"),
        ("+44 7700 900123", None, "not a valid phone number"),  # Ofcom's range for drama
        ("+1 201 555 0123 ext. 45", None, "extension"),
        ("555-0123", "US", "area code"),
        ("+" + "1" * 300, None, "too long"),
    ],
)
def test_junk_is_refused_in_one_line_without_the_input(
    text: str, region: str | None, reason: str
) -> None:
    with pytest.raises(ContactError, match=reason) as caught:
        normalize_phone(text, default_region=region)
    message = str(caught.value)
    assert "\n" not in message
    assert not text.strip() or text.strip() not in message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.sampled_from([None, "GB", "US", "DE", "IN", "ZZ", "gb", ""]))
def test_any_text_is_a_number_or_a_contact_error(text: str, region: str | None) -> None:
    e164 = attempt(lambda: normalize_phone(text, default_region=region))
    if isinstance(e164, ContactError):
        assert_one_line(e164)
        return
    assert re.fullmatch(r"\+[1-9][0-9]{6,14}", e164)
    assert normalize_phone(e164, default_region=None) == e164  # idempotent


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"\+?[0-9 ()\-]{4,20}", fullmatch=True), st.sampled_from(["GB", "US", "IN"]))
def test_digit_strings_are_numbers_or_contact_errors(text: str, region: str) -> None:
    e164 = attempt(lambda: normalize_phone(text, default_region=region))
    if isinstance(e164, ContactError):
        return
    assert mask_phone(e164).endswith(e164[-2:])


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        ("+447911123456", "+44 •••• ••3456"),
        ("+12015550123", "+1 •••-•••-0123"),
        ("+4915123456789", "+49 •••• ••••789"),
        ("+919876543210", "+91 ••••• •3210"),
    ],
)
def test_masks_keep_the_country_code_and_last_four_digits(e164: str, masked: str) -> None:
    shown = mask_phone(e164)
    assert shown.replace("•", "").count("") - 1 <= len(masked)
    assert shown[: len(masked.split()[0])] == masked.split()[0]
    assert [c for c in shown if c.isdigit()][-4:] == list(e164[-4:])
    assert sum(c.isdigit() for c in shown) == len(masked.split()[0]) - 1 + 4


def test_masking_refuses_what_is_not_e164() -> None:
    for junk in ("07911 123456", "hello", ""):
        with pytest.raises(ContactError):
            mask_phone(junk)


# -- email addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("alice@example.com", "alice@example.com"),
        ("Alice.Smith@EXAMPLE.COM", "Alice.Smith@example.com"),  # the local part keeps its case
        ("  bob+2fa@Mail.Example.org\n", "bob+2fa@mail.example.org"),
        ("jörg@Bücher.example", "jörg@bücher.example"),
        ("o'brien@example.ie", "o'brien@example.ie"),
    ],
)
def test_addresses_keep_the_local_part_and_lowercase_the_domain(text: str, normal: str) -> None:
    assert normalize_email(text) == normal


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alice",
        "alice@",
        "@example.com",
        "alice@@example.com",
        "alice@localhost",
        "alice@example",
        '"alice smith"@example.com',
        "alice smith@example.com",
        "alice@exa mple.com",
        "a" * 65 + "@example.com",
        "alice@" + "a" * 300 + ".com",
    ],
)
def test_bad_addresses_are_refused_in_one_line(text: str) -> None:
    with pytest.raises(ContactError, match="email address") as caught:
        normalize_email(text)
    message = str(caught.value)
    assert "\n" not in message
    assert not text or text not in message


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.emails()))
def test_any_text_is_an_address_or_a_contact_error(text: str) -> None:
    address = attempt(lambda: normalize_email(text))
    if isinstance(address, ContactError):
        assert_one_line(address)
        return
    local, _, domain = address.rpartition("@")
    assert local
    assert domain == domain.lower()
    assert normalize_email(address) == address
    assert mask_email(address).endswith("@" + domain)


def test_email_mask_shows_one_character_and_hides_the_length() -> None:
    assert mask_email("alice@example.com") == "a•••@example.com"
    assert mask_email("al@example.com") == "a•••@example.com"
    with pytest.raises(ContactError):
        mask_email("no-at-sign")


# -- the origin-bound SMS -----------------------------------------------------------------------


def parse_origin_bound(message: str) -> tuple[str, str, str | None] | None:
    """The draft's §3.2 parsing algorithm, written from its steps: (top-level host, code,
    embedded host) or None for failure."""
    line = message.replace("\r\n", "\n").replace("\r", "\n").split("\n")[-1]
    match = re.match(r"@([^\t\n\f\r ]+) #([^\t\n\f\r ]+)(?: @([^\t\n\f\r ]+))?", line)
    if not match:
        return None
    return match[1], match[2], match[3]


def test_the_draft_example_shape() -> None:
    text = webotp_sms(code="123456", origin_host="example.com", app_name="Example", minutes=10)
    assert text == "Your Example code is 123456. It expires in 10 minutes.\n\n@example.com #123456"
    assert parse_origin_bound(text) == ("example.com", "123456", None)


def test_one_minute_and_eight_digits_and_host_case() -> None:
    text = webotp_sms(code="01234567", origin_host="Login.Example.COM.", app_name="Acme", minutes=1)
    assert text.splitlines()[0] == "Your Acme code is 01234567. It expires in 1 minute."
    assert text.splitlines()[-1] == "@login.example.com #01234567"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"origin_host": "https://example.com"}, "without scheme"),
        ({"origin_host": "example.com:8443"}, "without scheme, port"),
        ({"origin_host": "example.com/login"}, "path"),
        ({"origin_host": "exa mple.com"}, "not a valid host"),
        ({"origin_host": "example.com #999999"}, "not a valid host"),
        ({"origin_host": ""}, "not a valid host"),
        ({"origin_host": "bücher.example"}, "xn--"),
        ({"code": "12345"}, "6 to 8 digits"),
        ({"code": "123456789"}, "6 to 8 digits"),
        ({"code": "12 3456"}, "6 to 8 digits"),
        ({"code": "١٢٣٤٥٦"}, "6 to 8 digits"),  # Arabic-Indic digits are not ASCII digits
        ({"app_name": ""}, "app_name"),
        ({"app_name": "Evil\n\n@evil.example #123456"}, "app_name"),
        ({"app_name": "x" * 65}, "app_name"),
        ({"minutes": 0}, "minutes"),
    ],
)
def test_what_would_break_the_last_line_is_refused(kwargs: dict[str, object], reason: str) -> None:
    given_ = {"code": "123456", "origin_host": "example.com", "app_name": "Example", "minutes": 10}
    given_.update(kwargs)
    with pytest.raises(ContactError, match=reason):
        webotp_sms(**given_)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=30),
    st.from_regex(r"[0-9]{6,8}", fullmatch=True),
    st.text(min_size=1, max_size=70),
)
def test_any_host_and_name_give_a_parsable_message_or_a_contact_error(
    host: str, code: str, name: str
) -> None:
    text = attempt(lambda: webotp_sms(code=code, origin_host=host, app_name=name, minutes=10))
    if isinstance(text, ContactError):
        assert_one_line(text)
        return
    parsed = parse_origin_bound(text)
    assert parsed == (host.strip().lower().rstrip("."), code, None)
    assert text.count("\n") == 2
