import re

from sparekey.protocols.backup_codes import ALPHABET, ENTROPY_BITS, format_code, generate, normalize


def test_codes_have_at_least_sixty_bits_from_an_unambiguous_alphabet() -> None:
    assert ENTROPY_BITS >= 60
    assert not set("ILOU") & set(ALPHABET)
    assert len(set(ALPHABET)) == 32


def test_generated_codes_are_distinct_and_display_in_groups() -> None:
    codes = {generate() for _ in range(1000)}
    assert len(codes) == 1000
    shown = format_code(next(iter(codes)))
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}", shown)


def test_input_is_accepted_regardless_of_case_spaces_and_dashes() -> None:
    code = generate()
    shown = format_code(code)
    assert normalize(shown) == code
    assert normalize(shown.lower()) == code
    assert normalize(" ".join(shown.split("-"))) == code
    assert normalize(f"  {code[:8]} - {code[8:]}  ") == code


def test_confusable_letters_read_as_the_digits_they_look_like() -> None:
    assert normalize("OOOO-IIII-LLLL-0000") == "0000111111110000"


def test_other_input_is_not_a_backup_code() -> None:
    assert normalize("123456") is None
    assert normalize("UUUU-UUUU-UUUU-UUUU") is None
    assert normalize("7KQF-M2XD-9RWP-HTN") is None
    assert normalize("") is None
