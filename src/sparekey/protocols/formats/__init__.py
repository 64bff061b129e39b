"""Other authenticator apps' export files, read into :class:`~sparekey.protocols.tokens.Token`.

One module per format, each with ``NAME`` (what ``--format`` takes), ``sniff(data) -> bool``
(whether the bytes look like this format, cheaply, without a password) and
``parse(data, *, password) -> ImportResult``. Everything here is pure: bytes and a password in,
tokens out, no files, no clock.

Errors (all :class:`FormatError`, a :class:`ValueError` whose message is one line for a person)::

    FormatError            the file is not this format, or is damaged
    ├── PasswordRequiredError   the file is encrypted and no password was given
    └── WrongPasswordError      the password does not open it (or the encrypted part is damaged)
"""

from __future__ import annotations

from dataclasses import dataclass

from sparekey.protocols.tokens import Token

__all__ = ["FormatError", "ImportResult", "PasswordRequiredError", "Skipped", "WrongPasswordError"]


class FormatError(ValueError):
    """A file that cannot be read as the format asked for; the message says why in one line."""


class PasswordRequiredError(FormatError):
    """The file is encrypted and needs its export password."""


class WrongPasswordError(FormatError):
    """The password does not decrypt the file."""


@dataclass(frozen=True, kw_only=True)
class Skipped:
    """An entry the file holds that cannot become a token (an unsupported kind such as mOTP)."""

    label: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ImportResult:
    format: str
    tokens: tuple[Token, ...]
    skipped: tuple[Skipped, ...] = ()
