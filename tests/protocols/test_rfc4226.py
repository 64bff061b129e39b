import json
from pathlib import Path

import pytest

from sparekey.protocols.rfc4226 import HashAlgorithm, hotp, match_counter

DATA = json.loads((Path(__file__).parent / "vectors" / "rfc4226.json").read_text())
SECRET = DATA["secret_ascii"].encode("ascii")


@pytest.mark.parametrize("vector", DATA["vectors"], ids=lambda v: f"counter-{v['counter']}")
def test_appendix_d_six_digits(vector: dict[str, object]) -> None:
    assert hotp(key=SECRET, counter=vector["counter"], digits=6) == vector["hotp"]


@pytest.mark.parametrize("vector", DATA["vectors"], ids=lambda v: f"counter-{v['counter']}")
def test_appendix_d_truncated_value_is_the_ten_digit_code(vector: dict[str, object]) -> None:
    assert hotp(key=SECRET, counter=vector["counter"], digits=10) == f"{vector['truncated']:010d}"


def test_match_counter_finds_the_counter_and_nothing_else() -> None:
    assert (
        match_counter(
            key=SECRET, code="162583", counters=range(10), digits=6, algorithm=HashAlgorithm.SHA1
        )
        == 7
    )
    assert (
        match_counter(
            key=SECRET, code="162583", counters=range(8, 20), digits=6, algorithm=HashAlgorithm.SHA1
        )
        is None
    )
    assert (
        match_counter(
            key=SECRET,
            code="\uff11\uff16\uff12\uff15\uff18\uff13",
            counters=range(10),
            digits=6,
            algorithm=HashAlgorithm.SHA1,
        )
        is None
    )


@pytest.mark.parametrize(("digits", "counter"), [(3, 0), (11, 0), (6, -1), (6, 1 << 64)])
def test_out_of_range_parameters_are_refused(digits: int, counter: int) -> None:
    with pytest.raises(ValueError, match=r"digits|counter"):
        hotp(key=SECRET, counter=counter, digits=digits)
