import json
from pathlib import Path

import pytest

from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.rfc6238 import time_step, totp

DATA = json.loads((Path(__file__).parent / "vectors" / "rfc6238.json").read_text())
CASES = [
    (vector, algorithm) for vector in DATA["vectors"] for algorithm in ("SHA1", "SHA256", "SHA512")
]


@pytest.mark.parametrize(
    ("vector", "algorithm"), CASES, ids=lambda x: str(x) if isinstance(x, str) else str(x["time"])
)
def test_appendix_b(vector: dict[str, object], algorithm: str) -> None:
    secret = DATA["secrets_ascii"][algorithm].encode("ascii")
    code = totp(
        key=secret, now=vector["time"], period=30, digits=8, algorithm=HashAlgorithm(algorithm)
    )
    assert code == vector[algorithm]


@pytest.mark.parametrize("vector", DATA["vectors"], ids=lambda v: str(v["time"]))
def test_time_step_matches_the_appendix_hex(vector: dict[str, object]) -> None:
    assert time_step(now=vector["time"], period=30) == int(vector["step"], 16)


def test_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="period"):
        time_step(now=0, period=0)
