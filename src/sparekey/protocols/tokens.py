"""One authenticator-app token: what every export format describes and every code is made from.

A token is TOTP (RFC 6238), HOTP (RFC 4226) or a Steam Guard token, with the parameters of the Key
URI format: HMAC hash (SHA1, SHA256, SHA512), 4 to 10 digits (Steam: 5 characters), a period for
the time-based kinds and a counter for HOTP. The importers produce these, the desktop vault keeps
them, and :meth:`Token.code` computes the code at an instant the caller gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from sparekey.protocols import steam
from sparekey.protocols.otpauth import OtpauthUri, OtpType
from sparekey.protocols.rfc4226 import MAX_DIGITS, MIN_DIGITS, HashAlgorithm, hotp
from sparekey.protocols.rfc6238 import time_step, totp

__all__ = ["MAX_PERIOD", "Token", "TokenError", "TokenKind"]

MAX_PERIOD = 86_400
MAX_COUNTER = (1 << 64) - 1


class TokenKind(StrEnum):
    TOTP = "totp"
    HOTP = "hotp"
    STEAM = "steam"


class TokenError(ValueError):
    """Token parameters that no authenticator could use; the message says which, in one line."""


@dataclass(frozen=True, kw_only=True)
class Token:
    kind: TokenKind
    secret: bytes = field(repr=False)
    issuer: str = ""
    account: str = ""
    algorithm: HashAlgorithm = HashAlgorithm.SHA1
    digits: int = 6
    period: int = 30
    counter: int = 0
    note: str = ""

    def __post_init__(self) -> None:
        if not self.secret:
            raise TokenError("the secret is empty")
        if self.kind is TokenKind.STEAM:
            if self.digits != steam.DIGITS or self.algorithm is not HashAlgorithm.SHA1:
                raise TokenError("a Steam token has 5 characters and uses SHA1")
        elif not MIN_DIGITS <= self.digits <= MAX_DIGITS:
            raise TokenError(f"digits must be from {MIN_DIGITS} to {MAX_DIGITS}")
        if not 1 <= self.period <= MAX_PERIOD:
            raise TokenError(f"the period must be from 1 to {MAX_PERIOD} seconds")
        if not 0 <= self.counter <= MAX_COUNTER:
            raise TokenError("the counter must fit in 8 unsigned bytes")

    @classmethod
    def steam(
        cls, *, secret: bytes, issuer: str = "Steam", account: str = "", note: str = ""
    ) -> Token:
        return cls(
            kind=TokenKind.STEAM,
            secret=secret,
            issuer=issuer,
            account=account,
            digits=steam.DIGITS,
            note=note,
        )

    @classmethod
    def from_otpauth(cls, uri: OtpauthUri, *, note: str = "") -> Token:
        return cls(
            kind=TokenKind(uri.type.value),
            secret=uri.secret,
            issuer=uri.issuer or "",
            account=uri.account,
            algorithm=uri.algorithm,
            digits=uri.digits,
            period=uri.period,
            counter=uri.counter if uri.type is OtpType.HOTP else 0,
            note=note,
        )

    def to_otpauth(self) -> OtpauthUri:
        return OtpauthUri(
            type=OtpType(self.kind.value),
            secret=self.secret,
            account=self.account,
            issuer=self.issuer or None,
            algorithm=self.algorithm,
            digits=self.digits,
            period=self.period,
            counter=self.counter,
        )

    @property
    def label(self) -> str:
        """``issuer: account`` as people read it, or whichever part there is."""
        if self.issuer and self.account:
            return f"{self.issuer}: {self.account}"
        return self.issuer or self.account or "(unnamed)"

    @property
    def time_based(self) -> bool:
        return self.kind is not TokenKind.HOTP

    def code(self, *, now: float) -> str:
        """The code at Unix time ``now``; for HOTP, the code for the stored counter."""
        if self.kind is TokenKind.STEAM:
            return steam.steam_code(key=self.secret, now=now, period=self.period)
        if self.kind is TokenKind.HOTP:
            return hotp(
                key=self.secret, counter=self.counter, digits=self.digits, algorithm=self.algorithm
            )
        return totp(
            key=self.secret,
            now=now,
            period=self.period,
            digits=self.digits,
            algorithm=self.algorithm,
        )

    def seconds_left(self, *, now: float) -> float:
        """How long the code at ``now`` stays current (0 for HOTP, whose codes wait for use)."""
        if not self.time_based:
            return 0.0
        return (time_step(now=now, period=self.period) + 1) * self.period - now

    def advanced(self) -> Token:
        """The same HOTP token with its counter moved past the code just shown."""
        if self.kind is not TokenKind.HOTP:
            raise TokenError("only HOTP tokens have a counter")
        return replace(self, counter=self.counter + 1)

    def same_secret(self, other: Token) -> bool:
        """Whether ``other`` is the same token (the same secret and kind), however it is named."""
        return self.kind is other.kind and self.secret == other.secret
