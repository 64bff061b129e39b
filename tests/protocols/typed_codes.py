"""How people type backup codes and temporary access passes, as hypothesis strategies: either
case, the look-alike letters for 0 and 1, and any spacing or dashes between characters.

A way of typing is drawn apart from the code it is applied to (:func:`typing`, :func:`apply`),
so a test can type codes the server made at random without hypothesis seeing different data on
a replay."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from sparekey.protocols.backup_codes import ALPHABET

# What a person may type for each character of a code: either case, and the look-alike letters.
_LOOK_ALIKES = {"0": "0oO", "1": "1iIlL"}
_SEPARATORS = ["", "", "", " ", "-", "  ", "\t", "\n", "\u00a0", "\u3000", " - "]

Typing = tuple[str, Sequence[tuple[int, str]]]  # leading separator; (reading, separator) a char


def readings(char: str) -> str:
    """The characters that read as ``char`` of the alphabet."""
    return _LOOK_ALIKES.get(char, char + char.lower())


def codes(length: int) -> st.SearchStrategy[str]:
    """A canonical code of ``length`` characters."""
    return st.text(alphabet=ALPHABET, min_size=length, max_size=length)


def typing(length: int) -> st.SearchStrategy[Typing]:
    """A way of typing a code of ``length`` characters; :func:`apply` types a code with it."""
    separators = st.sampled_from(_SEPARATORS)
    each = st.tuples(st.integers(min_value=0, max_value=4), separators)
    return st.tuples(separators, st.lists(each, min_size=length, max_size=length))


def apply(way: Typing, code: str) -> str:
    lead, chars = way
    parts = [lead]
    for char, (reading, separator) in zip(code, chars, strict=True):
        options = readings(char)
        parts += [options[reading % len(options)], separator]
    return "".join(parts)


def typed(code: str) -> st.SearchStrategy[str]:
    """One way a person might type the canonical ``code``."""
    return typing(len(code)).map(lambda way: apply(way, code))


def is_reading_of(text: str, code: str) -> bool:
    """Whether ``text``, without whitespace and dashes, is ``code`` read character by character."""
    kept = "".join(text.split()).replace("-", "")
    return len(kept) == len(code) and all(
        char in readings(wanted) for char, wanted in zip(kept, code, strict=True)
    )


Change = tuple[int, int]  # (position, how far along the alphabet the character moves: 1..31)


def change(length: int) -> st.SearchStrategy[Change]:
    return st.tuples(
        st.integers(min_value=0, max_value=length - 1),
        st.integers(min_value=1, max_value=len(ALPHABET) - 1),
    )


def changed(code: str, how: Change) -> str:
    """``code`` with one character replaced by another of the alphabet: a different code."""
    at, step = how
    other = ALPHABET[(ALPHABET.index(code[at]) + step) % len(ALPHABET)]
    return code[:at] + other + code[at + 1 :]


def one_changed(code: str) -> st.SearchStrategy[str]:
    return change(len(code)).map(lambda how: changed(code, how))
