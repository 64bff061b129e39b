"""The raw ``otpauth-migration`` payload decoder (Base64 and protocol buffer) fuzzed directly:
arbitrary bytes in every Base64 spelling, and damaged copies of valid payloads written by
:func:`google_migration.encode`. Each decodes to a part or fails with a one-line
:class:`FormatError`, and the batch bookkeeping that follows (:func:`combine`,
:func:`missing_parts`) ends with a result or one line whatever batch the part claims."""

from __future__ import annotations

import base64
from dataclasses import replace
from urllib.parse import quote, unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sparekey.protocols.formats import FormatError, ImportResult
from sparekey.protocols.formats import google_migration as fmt
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.tokens import Token, TokenKind
from tests.protocols.formats.peer import mutated

_PREFIX = "otpauth-migration://offline?data="

# The Base64 spellings a QR scanner or a person may hand over: standard with or without padding,
# URL-safe, percent-encoded or raw.
_SPELLINGS = {
    "standard": lambda raw: quote(base64.b64encode(raw).decode(), safe=""),
    "raw": lambda raw: base64.b64encode(raw).decode(),
    "unpadded": lambda raw: base64.b64encode(raw).decode().rstrip("="),
    "urlsafe": lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("="),
}


def _uri(raw: bytes, spelling: str) -> str:
    return _PREFIX + _SPELLINGS[spelling](raw)


def _payload(uri: str) -> bytes:
    return base64.b64decode(unquote(uri.split("data=", 1)[1]))


def _one_line(error: FormatError) -> None:
    message = str(error)
    assert message
    assert len(message.splitlines()) == 1, message
    assert len(message) < 300, message


def _decode(uri: str) -> fmt.MigrationPart | None:
    """The part, or None after checking the :class:`FormatError`; any other error fails."""
    try:
        part = fmt.decode_uri(uri)
    except FormatError as exc:
        _one_line(exc)
        return None
    assert all(isinstance(token, Token) for token in part.tokens)
    return part


def _bookkeeping(part: fmt.MigrationPart) -> None:
    """Batch bookkeeping on the part alone: a result or one line (and it ends: a part claiming
    2**31 parts once made it count them)."""
    try:
        missing = fmt.missing_parts([part])
        result = fmt.combine([part])
    except FormatError as exc:
        _one_line(exc)
    else:
        assert missing == ()
        assert isinstance(result, ImportResult)
        assert result.tokens == part.tokens


_TOKENS = st.lists(
    st.builds(
        Token,
        kind=st.sampled_from([TokenKind.TOTP, TokenKind.HOTP]),
        secret=st.binary(min_size=1, max_size=40),
        issuer=st.text(max_size=12),
        account=st.text(max_size=12),
        algorithm=st.sampled_from(list(HashAlgorithm)),
        digits=st.sampled_from([6, 8]),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(sorted(_SPELLINGS)))
@example(b"\x18\xff\xff\xff\xff\x07", "standard")  # batch_size 2**31 - 1, and no accounts
@example(b"\x1a\x00", "standard")  # field 3 with the wrong wire type
@example(b"\x0a\x80\x80\x80\x80\x10", "standard")  # a length far past the end
@example(b"\x0a\x02\x12\x01\xff", "raw")  # a name that is not UTF-8
def test_arbitrary_payload_bytes_decode_or_fail_in_one_line(raw: bytes, spelling: str) -> None:
    part = _decode(_uri(raw, spelling))
    if part is not None:
        _bookkeeping(part)


@settings(max_examples=150, deadline=None)
@given(
    _TOKENS.flatmap(
        lambda tokens: mutated(_payload(fmt.encode(tokens, batch_id=7)[0]), max_edits=3)
    ),
    st.sampled_from(sorted(_SPELLINGS)),
)
def test_damaged_valid_payloads_decode_or_fail_in_one_line(raw: bytes, spelling: str) -> None:
    part = _decode(_uri(raw, spelling))
    if part is not None:
        _bookkeeping(part)


@settings(max_examples=50, deadline=None)
@given(_TOKENS, st.sampled_from(sorted(_SPELLINGS)))
def test_valid_payloads_read_back_in_every_spelling(tokens: list[Token], spelling: str) -> None:
    (uri,) = fmt.encode(tokens, batch_id=7)
    part = _decode(_uri(_payload(uri), spelling))
    assert part is not None
    assert len(part.tokens) == len(tokens)
    assert [t.secret for t in part.tokens] == [t.secret for t in tokens]


@pytest.mark.parametrize("size", [1001, 2**31 - 1])
def test_a_part_claiming_a_huge_batch_is_refused_at_once(size: int) -> None:
    token = Token(kind=TokenKind.TOTP, secret=b"k" * 10, account="a")
    part = replace(fmt.decode_uri(fmt.encode([token], batch_id=1)[0]), batch_size=size)
    for bookkeeping in (fmt.combine, fmt.missing_parts):
        with pytest.raises(FormatError, match=f"^this Google Authenticator export claims {size}"):
            bookkeeping([part])


def test_the_largest_plausible_batch_still_counts_its_missing_parts() -> None:
    token = Token(kind=TokenKind.TOTP, secret=b"k" * 10, account="a")
    part = replace(fmt.decode_uri(fmt.encode([token], batch_id=1)[0]), batch_size=1000)
    assert len(fmt.missing_parts([part])) == 999
    with pytest.raises(FormatError) as caught:
        fmt.combine([part])
    assert str(caught.value) == (
        "parts 2, 3, 4, 5 and 995 more of 1000 of this Google Authenticator export are missing"
    )
