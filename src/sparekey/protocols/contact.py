"""Contact addresses for fallback codes, and the SMS text that carries a code.

- Phone numbers are normalised to E.164 (ITU-T E.164: ``+`` country code, national number, at most
  15 digits) with Google's libphonenumber rules (``phonenumbers``); numbers that are not valid for
  their country, and numbers with an extension (no SMS reaches one), are refused.
- Email addresses are checked for syntax only (``email-validator``, no DNS look-up): the local
  part is kept as given (RFC 5321 §2.4: only the receiving host may interpret its case) and the
  domain is lowercased.
- :func:`webotp_sms` writes an *origin-bound one-time code message* (WICG "Origin-bound one-time
  codes delivered via SMS", §3 Message format, the format WebOTP and iOS autofill read): human text,
  then as the **last line** ``@<top-level host> #<code>``, exactly one space between the two. The
  host stands for the origin ``("https", host, null, null)``: no scheme and no port can be named
  (Chromium's parser accepts only ``[a-zA-Z0-9.-]`` there), and ``localhost`` is the one host a
  browser binds to ``http``. The draft also allows a third field, ``@<embedded host>``, for a code
  entered in a cross-origin iframe (``@top.example #123456 @iframe.example``); only the plain,
  top-level form is written here.

Every refusal is a :class:`ContactError` whose message is one line and never repeats the input
(phone numbers and addresses are personal data that would otherwise end up in logs).
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

__all__ = [
    "ContactError",
    "mask_email",
    "mask_phone",
    "normalize_email",
    "normalize_phone",
    "webotp_sms",
]

MASK = "\u2022"  # •
_MAX_INPUT = 254  # RFC 5321's longest path; far longer than any phone number as typed
_CODE = re.compile(r"[0-9]{6,8}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


class ContactError(ValueError):
    """A phone number, address or message that cannot be used; one line, without the input."""


# -- phone numbers ------------------------------------------------------------------------------

_PARSE_ERRORS = {
    NumberParseException.INVALID_COUNTRY_CODE: (
        "the phone number needs its country code (for example +44) or a known default region"
    ),
    NumberParseException.NOT_A_NUMBER: "this is not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "the phone number is too short",
    NumberParseException.TOO_SHORT_NSN: "the phone number is too short",
    NumberParseException.TOO_LONG: "the phone number is too long",
}

_POSSIBLE_ERRORS = {
    ValidationResult.INVALID_COUNTRY_CODE: "the phone number's country code does not exist",
    ValidationResult.TOO_SHORT: "the phone number is too short",
    ValidationResult.TOO_LONG: "the phone number is too long",
    ValidationResult.INVALID_LENGTH: "the phone number has the wrong length for its country",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "the phone number lacks its area code",
}


def _parse_phone(text: str, region: str | None) -> phonenumbers.PhoneNumber:
    if len(text) > _MAX_INPUT:
        raise ContactError("the phone number is too long")
    try:
        return phonenumbers.parse(text, region)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE and text.startswith("+"):
            raise ContactError("the phone number's country code does not exist") from None
        reason = _PARSE_ERRORS.get(exc.error_type, "this is not a phone number")
        raise ContactError(reason) from None


def normalize_phone(text: str, *, default_region: str | None) -> str:
    """``text`` as E.164 (``+447911123456``). ``default_region`` (ISO 3166 alpha-2, such as
    ``"GB"``) is the country assumed for numbers written without ``+`` and a country code."""
    region = default_region.upper() if default_region else None
    number = _parse_phone(text.strip(), region)
    if number.extension:
        raise ContactError("a phone number with an extension cannot receive text messages")
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != ValidationResult.IS_POSSIBLE:
        raise ContactError(_POSSIBLE_ERRORS.get(possible, "this is not a possible phone number"))
    if not phonenumbers.is_valid_number(number):
        raise ContactError("this is not a valid phone number for its country")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """A normalised number for lists and notifications: the country code and the last four digits
    stay (``+44 •••• ••34 56``), every other digit is masked."""
    if not e164.startswith("+"):
        raise ContactError("not a normalised (E.164) phone number")
    number = _parse_phone(e164, None)
    shown = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    prefix = f"+{number.country_code}"
    rest = shown[len(prefix) :]
    digits = sum(c.isdigit() for c in rest)
    masked, seen = [], 0
    for char in rest:
        if char.isdigit():
            seen += 1
            masked.append(char if seen > digits - 4 else MASK)
        else:
            masked.append(char)
    return prefix + "".join(masked)


# -- email addresses ----------------------------------------------------------------------------


def normalize_email(text: str) -> str:
    """``text`` as ``local@domain``, the local part as given and the domain lowercased (Unicode
    domains in their NFC form); syntax and RFC 5321 lengths only (``strict``), no DNS look-up."""
    text = text.strip()
    if len(text) > _MAX_INPUT:
        raise ContactError("the email address is too long")
    try:
        checked = validate_email(text, check_deliverability=False, strict=True)
    except EmailNotValidError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise ContactError(f"not a valid email address: {_without(reason, text)}") from None
    return f"{checked.local_part}@{checked.domain.lower()}"


def _without(reason: str, text: str) -> str:
    """email-validator's reason (which names characters, not the address), minus the address or
    either of its parts should it quote them."""
    for part in (text, *text.rpartition("@")[::2]):
        if len(part) >= 5:
            reason = reason.replace(part, "…")
    return reason.rstrip(".") or "wrong syntax"


def mask_email(address: str) -> str:
    """A normalised address for display: the first character of the local part, a fixed mask
    (so the length does not show), and the domain: ``a•••@example.com``."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ContactError("not a normalised email address")
    return f"{local[0]}{MASK * 3}@{domain}"


# -- the SMS text -------------------------------------------------------------------------------


def _host(origin_host: str) -> str:
    host = origin_host.strip().lower().rstrip(".")
    if "://" in host or "/" in host or ":" in host:
        raise ContactError("origin_host must be a bare host name, without scheme, port or path")
    if not host.isascii():
        raise ContactError("origin_host must be ASCII; write an international name as xn--")
    if not _HOST.fullmatch(host):
        raise ContactError("origin_host is not a valid host name")
    return host


def webotp_sms(*, code: str, origin_host: str, app_name: str, minutes: int) -> str:
    """The text message carrying ``code``: one human line, a blank line, then the origin-bound
    line ``@<origin_host> #<code>`` that browsers read to offer the code on that site only."""
    if not _CODE.fullmatch(code):
        raise ContactError("the code must be 6 to 8 digits")
    host = _host(origin_host)
    name = app_name.strip()
    if not name or len(name) > 64:
        raise ContactError("app_name must be 1 to 64 characters")
    if any(unicodedata.category(c).startswith(("C", "Z")) and c != " " for c in name):
        raise ContactError("app_name must be one line without control characters")
    if minutes < 1:
        raise ContactError("minutes must be at least 1")
    unit = "minute" if minutes == 1 else "minutes"
    return f"Your {name} code is {code}. It expires in {minutes} {unit}.\n\n@{host} #{code}"
