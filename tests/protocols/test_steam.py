import pytest

from sparekey.protocols.formats.otpauth_list import parse_totp_field
from sparekey.protocols.otpauth import b32decode
from sparekey.protocols.steam import steam_code
from sparekey.protocols.tokens import Token, TokenKind

# KeePassXC's Steam Guard test vector (tests/TestTotp.cpp).
SECRET = "63BEDWCQZKTQWPESARIERL5DTTQFCJTK"
VECTORS = [(1511200518, "FR8RV"), (1511200714, "9P3VP")]


@pytest.mark.parametrize(("now", "code"), VECTORS)
def test_keepassxc_vector(now: int, code: str) -> None:
    assert steam_code(key=b32decode(SECRET), now=now) == code


@pytest.mark.parametrize(("now", "code"), VECTORS)
def test_steam_tokens_from_every_spelling_give_the_vector(now: int, code: str) -> None:
    spellings = [
        Token.steam(secret=b32decode(SECRET)),
        parse_totp_field(f"steam://{SECRET}"),
        parse_totp_field(f"otpauth://steam/Steam:me?secret={SECRET}"),
        parse_totp_field(f"otpauth://totp/Steam:me?secret={SECRET}&encoder=steam&digits=5"),
    ]
    for token in spellings:
        assert isinstance(token, Token)
        assert token.kind is TokenKind.STEAM
        assert token.code(now=now) == code


def test_the_code_changes_every_thirty_seconds() -> None:
    key = b32decode(SECRET)
    start = 1511200518 - 1511200518 % 30
    assert steam_code(key=key, now=start) == steam_code(key=key, now=start + 29.9)
    assert steam_code(key=key, now=start) != steam_code(key=key, now=start + 30)
