import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparekey.protocols.formats import FormatError, Skipped
from sparekey.protocols.formats import freeotp_plus as fmt
from tests.helpers import hotp_code, totp_code
from tests.protocols.formats.peer import (
    EXPECTED,
    assert_tokens,
    fuzz_mutations,
    parse_or_format_error,
    peer_bytes,
)

FILE = "aegis-importers/freeotp_plus.json"
ORDER = ("WWE", "Air Canada", "Issuu", "Airbnb", "SPDX", "Deno")
NOW = 1_704_067_200


def _export(*tokens: dict[str, object]) -> bytes:
    return json.dumps({"tokenOrder": [], "tokens": list(tokens)}).encode()


def _token(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "algo": "SHA1",
        "counter": 0,
        "digits": 6,
        "issuerExt": "Acme",
        "issuerInt": "Acme",
        "label": "bob",
        "period": 30,
        "secret": [-1, 0, 1, 127, -128],
        "type": "TOTP",
    }
    return base | fields


def test_freeotp_plus_json_is_read_with_the_next_hotp_counter() -> None:
    data = peer_bytes(FILE)
    assert fmt.sniff(data)
    result = fmt.parse(data)
    assert result.format == "freeotp-plus"
    assert result.skipped == ()
    # The file stores the last counter used (Air Canada: 49); the token continues at 50.
    assert_tokens(result, ORDER)


def test_codes_match_oathtool() -> None:
    tokens = {t.issuer: t for t in fmt.parse(peer_bytes(FILE)).tokens}
    for name in ("Air Canada", "WWE"):
        e = EXPECTED[name]
        want = hotp_code(e.secret, e.counter, algorithm=e.algorithm, digits=e.digits)
        assert tokens[name].code(now=NOW) == want
    e = EXPECTED["Airbnb"]
    at = datetime.fromtimestamp(NOW, UTC)
    assert tokens["Airbnb"].code(now=NOW) == totp_code(
        e.secret, at, algorithm=e.algorithm, digits=e.digits, period=e.period
    )


def test_signed_and_unsigned_bytes_and_internal_issuer() -> None:
    (token,) = fmt.parse(_export(_token(issuerExt="", issuerInt="Internal"))).tokens
    assert token.secret == b"\xff\x00\x01\x7f\x80"
    assert token.issuer == "Internal"
    (same,) = fmt.parse(_export(_token(secret=[255, 0, 1, 127, 128]))).tokens
    assert same.secret == token.secret


def test_md5_and_unknown_types_are_skipped() -> None:
    result = fmt.parse(_export(_token(algo="MD5"), _token(type="STEAM", label="g"), _token()))
    assert len(result.tokens) == 1
    assert result.skipped == (
        Skipped(label="Acme: bob", reason="the MD5 algorithm is not supported"),
        Skipped(label="Acme: g", reason="the token type 'STEAM' is not supported"),
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[]", "this is not a FreeOTP+ export (no tokens list)"),
        (b'{"tokens": {}}', "this is not a FreeOTP+ export"),
        (b'{"tokens": []}', "no accounts found in this FreeOTP+ export"),
        (b'{"tokens": [1]}', "token 1 is not an object"),
        (_export(_token(), _token(secret="AAAA")), "token 2: the secret must be a list of bytes"),
        (_export(_token(secret=[300])), "token 1: the secret must be a list of bytes"),
        (_export(_token(secret=[True])), "token 1: the secret must be a list of bytes"),
        (_export(_token(secret=[])), "token 1: the secret is empty"),
        (_export(_token(digits=True)), "token 1: digits must be a whole number"),
        (_export(_token(digits="6")), "token 1: digits must be a whole number"),
        (_export(_token(digits=3)), "token 1: digits must be from 4 to 10"),
        (_export(_token(period=0)), "token 1: the period must be from"),
        (_export(_token(algo="SHA3")), "token 1: the algorithm must be SHA1, SHA256 or SHA512"),
        (_export(_token(type="HOTP", counter=2**64 - 1)), "token 1: the counter must fit"),
        (b'{"tokens": [' + b"1" * 5000 + b"]}", "this FreeOTP+ export is not valid JSON"),
        (b"[" * 100_000, "this FreeOTP+ export is"),
    ],
)
def test_bad_exports(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        fmt.parse(data)
    assert str(caught.value).startswith(message)


def test_a_truncated_export_fails_cleanly() -> None:
    data = peer_bytes(FILE)
    with pytest.raises(FormatError, match="not valid JSON"):
        fmt.parse(data[:-10])


def test_other_json_is_not_sniffed_as_freeotp_plus() -> None:
    assert not fmt.sniff(peer_bytes("aegis-importers/bitwarden.json"))
    assert not fmt.sniff(b'{"tokens": 1}')


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
_FIELD = st.sampled_from(
    ["algo", "counter", "digits", "issuerExt", "issuerInt", "label", "period", "secret", "type"]
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    parse_or_format_error(fmt.parse, data)
    fmt.sniff(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(_FIELD, _JSON, max_size=4), min_size=1, max_size=3), _JSON)
def test_fields_of_the_wrong_shape(changes: list[dict[str, object]], top: object) -> None:
    parse_or_format_error(fmt.parse, _export(*(_token(**change) for change in changes)))
    parse_or_format_error(fmt.parse, json.dumps({"tokens": top}).encode())


def test_mutated_real_file() -> None:
    fuzz_mutations(fmt.parse, peer_bytes(FILE))
