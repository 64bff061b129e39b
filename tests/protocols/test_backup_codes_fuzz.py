"""Property tests of what a person types as a backup code or a temporary access pass (the same
Crockford base32 reader, 16 and 20 characters): any text is either a code in canonical form or
None; the formatting variants of a code read as that code, and nothing else does."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sparekey.protocols.backup_codes import ALPHABET, CODE_LENGTH, format_code, normalize
from sparekey.services.recovery import PASS_LENGTH
from tests.protocols.typed_codes import codes, is_reading_of, one_changed, typed

LENGTHS = st.sampled_from([CODE_LENGTH, PASS_LENGTH])
CODE_AND_TYPED = LENGTHS.flatmap(codes).flatmap(lambda code: st.tuples(st.just(code), typed(code)))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), LENGTHS)
@example("\u0131" * 16, 16)  # dotless i: Unicode upper-cases it to I, which reads as 1
@example("ß" * 8, 16)  # upper-cases to SS: eight characters became sixteen
@example("ﬀ" * 8, 16)  # the ff ligature upper-cases to FF
@example("\u212a" * 16, 16)  # the Kelvin sign
@example("\uff11" * 16, 16)  # full-width digits
@example("", 16)
def test_any_text_is_a_canonical_code_or_none(text: str, length: int) -> None:
    canonical = normalize(text, length=length)
    if canonical is None:
        return
    assert len(canonical) == length
    assert set(canonical) <= set(ALPHABET)
    assert normalize(canonical, length=length) == canonical
    assert normalize(format_code(canonical), length=length) == canonical
    # Only a character-by-character reading of the code gets there: no other text does.
    assert is_reading_of(text, canonical), (text, canonical)


@settings(max_examples=100, deadline=None)
@given(CODE_AND_TYPED)
def test_every_way_of_typing_a_code_reads_as_that_code(pair: tuple[str, str]) -> None:
    code, text = pair
    assert normalize(text, length=len(code)) == code
    assert normalize(format_code(code), length=len(code)) == code


@settings(max_examples=60, deadline=None)
@given(CODE_AND_TYPED, st.data())
def test_a_code_with_one_character_changed_reads_as_another_code(
    pair: tuple[str, str], data: st.DataObject
) -> None:
    code, _ = pair
    wrong = data.draw(one_changed(code))
    assert normalize(data.draw(typed(wrong)), length=len(code)) == wrong != code
    # One character too many or too few is not a code of this length at all.
    assert normalize(code + wrong[0], length=len(code)) is None
    assert normalize(code[:-1], length=len(code)) is None


# Letters that look like, or Unicode-case-map to, letters and digits of the alphabet.
_FOREIGN = st.one_of(
    # dotless i, long s, sharp s, ff, Kelvin, full-width O and 1, Cyrillic O, Greek I, Arabic 1
    st.sampled_from("\u0131\u017fßﬀ\u212a\uff2f\uff11\u041e\u0399\u0661"),
    st.characters(min_codepoint=0x80).filter(lambda c: not c.isspace()),
)


@settings(max_examples=100, deadline=None)
@given(CODE_AND_TYPED, _FOREIGN, st.data())
@example(("1" * 16, "1" * 16), "\u0131", None)
@example(("S" * 16, "S" * 16), "\u017f", None)
def test_a_character_outside_ascii_is_never_read_as_part_of_a_code(
    pair: tuple[str, str], foreign: str, data: st.DataObject | None
) -> None:
    code, text = pair
    at = 0 if data is None else data.draw(st.integers(min_value=0, max_value=len(code) - 1))
    assert normalize(code[:at] + foreign + code[at + 1 :], length=len(code)) is None
    at = 0 if data is None else data.draw(st.integers(min_value=0, max_value=len(text)))
    assert normalize(text[:at] + foreign + text[at:], length=len(code)) is None
    # Unicode whitespace, on the other hand, is spacing like any other.
    assert normalize(text[:at] + "\u2003" + text[at:], length=len(code)) == code


def test_unicode_case_mapping_does_not_make_codes() -> None:
    assert normalize("\u0131" * 16) is None
    assert normalize("\u017f" * 16) is None
    assert normalize("ß" * 8) is None
    assert normalize("ﬀ" * 8) is None
    assert normalize("i" * 16) == "1" * 16, "the ASCII look-alikes still read as digits"
