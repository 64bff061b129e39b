"""Other apps' real export files (``shared/peer-exports`` beside the project) and what they
hold, for importer tests of any format.

The files are not copied into the project: :func:`peer_bytes` reads them where they are and skips
the test, saying why, where that folder is absent. :data:`EXPECTED` is the table of entries from
the folder's README (the Aegis test vectors); :func:`assert_tokens` compares imported tokens with
it, entry for entry. :func:`mutated`, :func:`parse_or_format_error` and :func:`fuzz_mutations`
serve fuzz tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparekey.protocols.formats import FormatError, ImportResult
from sparekey.protocols.otpauth import b32encode
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.tokens import Token, TokenKind

PEER_EXPORTS = Path(__file__).resolve().parents[3].parent / "shared" / "peer-exports"


def peer_path(relative: str) -> Path:
    """The path of a peer export file, e.g. ``"aegis-importers/plain.txt"``; skips if absent."""
    if not PEER_EXPORTS.is_dir():
        pytest.skip(f"the folder of other apps' real exports, {PEER_EXPORTS}, is absent")
    path = PEER_EXPORTS / relative
    if not path.is_file():
        pytest.skip(f"the peer export {relative} is absent from {PEER_EXPORTS}")
    return path


def peer_bytes(relative: str) -> bytes:
    return peer_path(relative).read_bytes()


@dataclass(frozen=True, kw_only=True)
class Expected:
    """One row of the README's table; ``period`` counts for time-based kinds, ``counter`` for
    HOTP."""

    issuer: str
    account: str
    kind: TokenKind
    secret: str
    algorithm: HashAlgorithm
    digits: int
    period: int = 30
    counter: int = 0


_T, _H, _S = TokenKind.TOTP, TokenKind.HOTP, TokenKind.STEAM
_SHA1, _SHA256, _SHA512 = HashAlgorithm.SHA1, HashAlgorithm.SHA256, HashAlgorithm.SHA512

EXPECTED: dict[str, Expected] = {
    e.issuer: e
    for e in (
        Expected(issuer="Deno", account="Mason", kind=_T, secret="4SJHB4GSD43FZBAI7C2HLRJGPQ",
                 algorithm=_SHA1, digits=6, period=30),
        Expected(issuer="SPDX", account="James", kind=_T, secret="5OM4WOOGPLQEF6UGN3CPEOOLWU",
                 algorithm=_SHA256, digits=7, period=20),
        Expected(issuer="Airbnb", account="Elijah", kind=_T, secret="7ELGJSGXNCCTV3O6LKJWYFV2RA",
                 algorithm=_SHA512, digits=8, period=50),
        Expected(issuer="Issuu", account="James", kind=_H, secret="YOOMIXWS5GN6RTBPUFFWKTW5M4",
                 algorithm=_SHA1, digits=6, counter=1),
        Expected(issuer="Air Canada", account="Benjamin", kind=_H,
                 secret="KUVJJOM753IHTNDSZVCNKL7GII", algorithm=_SHA256, digits=7, counter=50),
        Expected(issuer="WWE", account="Mason", kind=_H, secret="5VAML3X35THCEBVRLV24CGBKOY",
                 algorithm=_SHA512, digits=8, counter=10300),
        Expected(issuer="Boeing", account="Sophia", kind=_S, secret="JRZCL47CMXVOQMNPZR2F7J4RGI",
                 algorithm=_SHA1, digits=5, period=30),
        Expected(issuer="Battle.net", account="US-2211-2050-3346", kind=_T,
                 secret="BMGRXPGFARQQF4GMT25JATL2VYLAHDBI", algorithm=_SHA1, digits=8, period=30),
    )
}  # fmt: skip

# The order of aegis-importers/plain.txt (and of Aegis' own vector list).
AEGIS_ORDER = ("Deno", "SPDX", "Airbnb", "Issuu", "Air Canada", "WWE", "Boeing")


def _fields(values: Mapping[str, object]) -> dict[str, object]:
    """What is compared: period only for time-based kinds, counter only for HOTP."""
    fields = dict(values)
    if fields["kind"] is TokenKind.HOTP:
        fields.pop("period")
    else:
        fields.pop("counter")
    return fields


def token_fields(token: Token) -> dict[str, object]:
    return _fields(
        {
            "issuer": token.issuer,
            "account": token.account,
            "kind": token.kind,
            "secret": b32encode(token.secret),
            "algorithm": token.algorithm,
            "digits": token.digits,
            "period": token.period,
            "counter": token.counter,
        }
    )


def expected_fields(name: str, **overrides: object) -> dict[str, object]:
    return _fields({**asdict(EXPECTED[name]), **overrides})


def assert_tokens(
    result: ImportResult | Sequence[Token],
    names: Sequence[str],
    *,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> None:
    """The tokens are the :data:`EXPECTED` entries ``names``, in that order; ``overrides`` changes
    fields of some (a file that names an entry differently, e.g. ``{"Boeing": {"issuer": "X"}}``).
    """
    tokens = result.tokens if isinstance(result, ImportResult) else result
    overrides = overrides or {}
    got = [token_fields(token) for token in tokens]
    want = [expected_fields(name, **overrides.get(name, {})) for name in names]
    assert got == want


def mutated(original: bytes, *, max_edits: int = 4) -> st.SearchStrategy[bytes]:
    """``original`` with a few bytes flipped, inserted or deleted, or cut short."""
    edit = st.tuples(
        st.sampled_from(("flip", "insert", "delete", "cut")),
        st.integers(min_value=0, max_value=max(len(original) - 1, 0)),
        st.binary(min_size=1, max_size=8),
    )

    def apply(edits: list[tuple[str, int, bytes]]) -> bytes:
        data = bytearray(original)
        for kind, position, chunk in edits:
            at = min(position, len(data))
            if kind == "flip" and at < len(data):
                data[at] ^= chunk[0] or 1
            elif kind == "insert":
                data[at:at] = chunk
            elif kind == "delete":
                del data[at : at + len(chunk)]
            elif kind == "cut":
                del data[at:]
        return bytes(data)

    return st.lists(edit, min_size=1, max_size=max_edits).map(apply)


def parse_or_format_error(
    parse: Callable[..., ImportResult], data: bytes, *, password: str | None = None
) -> ImportResult | FormatError:
    """What ``parse`` makes of ``data``: a result, or the :class:`FormatError` it raised (whose
    message must be one non-empty line); any other exception fails the test."""
    try:
        result = parse(data, password=password)
    except FormatError as exc:
        message = str(exc)
        assert message, "a FormatError without a message"
        assert len(message.splitlines()) == 1, f"a message of several lines: {message!r}"
        return exc
    assert isinstance(result, ImportResult)
    assert all(isinstance(token, Token) for token in result.tokens)
    return result


def fuzz_mutations(
    parse: Callable[..., ImportResult],
    original: bytes,
    *,
    password: str | None = None,
    max_examples: int = 100,
) -> None:
    """Run ``parse`` on ``max_examples`` damaged copies of ``original``: each must give a result or
    a one-line :class:`FormatError`."""

    @settings(max_examples=max_examples, deadline=None)
    @given(mutated(original))
    def check(data: bytes) -> None:
        parse_or_format_error(parse, data, password=password)

    check()
