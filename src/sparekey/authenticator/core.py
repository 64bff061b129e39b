"""What the command line and the terminal UI both do with a vault.

Both edges call these functions: unlock with whichever credential the user gave, find an entry
by name, show a code (saving an HOTP counter before the code is shown), add tokens while
detecting duplicates, and change slots. Writes always happen under the store's lock, on a fresh
read of the file, so the UI and a command running side by side never undo each other's changes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import keyring
import keyring.errors

from sparekey.authenticator.store import VaultStore
from sparekey.authenticator.vault import (
    KEYRING_SERVICE,
    Entry,
    KdfParams,
    Vault,
    VaultError,
    WrongCredentialError,
    read_header,
)
from sparekey.protocols.tokens import Token, TokenKind

__all__ = [
    "Code",
    "Credentials",
    "ImportOutcome",
    "add_tokens",
    "create_vault",
    "disable_keyring",
    "enable_keyring",
    "find_entry",
    "matching",
    "next_code",
    "unlock",
    "update",
]


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """What the user offered to open the vault with; the first one given is used."""

    password: str | None = None
    recovery_key: str | None = None
    use_keyring: bool = True


@dataclass(frozen=True, kw_only=True)
class Code:
    entry: Entry
    code: str
    seconds_left: float  # 0 for HOTP
    counter: int | None = None  # the HOTP counter the code was made from


@dataclass(frozen=True, kw_only=True)
class ImportOutcome:
    added: tuple[Entry, ...]
    duplicates: tuple[tuple[Token, Entry | Token], ...]


def create_vault(
    store: VaultStore, *, password: str, kdf: KdfParams | None = None
) -> tuple[Vault, str]:
    """A new vault on disk; returns it and the recovery key to show once."""
    with store.locked():
        if store.exists():
            raise VaultError(f"a vault already exists at {store.path}")
        vault, recovery_key = Vault.create(password=password, kdf=kdf)
        store.write(vault)
    return vault, recovery_key


def unlock(store: VaultStore, credentials: Credentials) -> Vault:
    document = store.read()
    if credentials.password is not None:
        return Vault.unlock(document, password=credentials.password)
    if credentials.recovery_key is not None:
        return Vault.unlock(document, recovery_key=credentials.recovery_key)
    if credentials.use_keyring:
        key = _keyring_key(document)
        if key is not None:
            return Vault.unlock(document, keyring_key=key)
    raise WrongCredentialError("the vault is locked: give its password")


def enable_keyring(store: VaultStore, vault: Vault) -> None:
    def change(fresh: Vault) -> None:
        key = fresh.add_keyring_slot()
        try:
            keyring.set_password(KEYRING_SERVICE, fresh.vault_id, base64.b64encode(key).decode())
        except keyring.errors.KeyringError as exc:
            raise VaultError(f"the system keyring refused the key: {exc}") from exc

    update(store, vault, change)


def disable_keyring(store: VaultStore, vault: Vault) -> None:
    update(store, vault, lambda fresh: fresh.remove_slot("keyring"))
    # Already gone is fine: the slot is removed from the file, which is what matters.
    with contextlib.suppress(keyring.errors.KeyringError):
        keyring.delete_password(KEYRING_SERVICE, vault.vault_id)


def update(store: VaultStore, vault: Vault, change: Callable[[Vault], object]) -> Vault:
    """Apply ``change`` to a fresh read of the file under the lock, write it, and bring
    ``vault`` (the caller's copy) up to date. Returns the written vault."""
    with store.locked():
        fresh = Vault.decrypt(store.read(), master_key=vault.master_key)
        change(fresh)
        store.write(fresh)
    vault.entries, vault.slots, vault.revision = fresh.entries, fresh.slots, fresh.revision
    vault.removed, vault.sync = fresh.removed, fresh.sync
    return fresh


def matching(vault: Vault, query: str) -> list[Entry]:
    """Entries whose issuer, account or note contains every word of ``query`` (any case)."""
    words = query.casefold().split()
    found = []
    for entry in vault.entries:
        token = entry.token
        haystack = f"{token.issuer} {token.account} {token.issuer}:{token.account} {token.note}"
        if all(word in haystack.casefold() for word in words):
            found.append(entry)
    return found


def find_entry(vault: Vault, name: str) -> Entry:
    """The one entry ``name`` means: an id (or its first 8+ characters), ``issuer:account``,
    an exact issuer or account, or else the only entry matching the words."""
    wanted = name.strip().casefold()
    if not wanted:
        raise VaultError("give the name of an entry")
    by_id = [e for e in vault.entries if e.id == name or (len(name) >= 8 and e.id.startswith(name))]
    if len(by_id) == 1:
        return by_id[0]
    exact = [
        e
        for e in vault.entries
        if wanted
        in {
            f"{e.token.issuer}:{e.token.account}".casefold(),
            e.token.label.casefold(),
        }
    ]
    if len(exact) == 1:
        return exact[0]
    for field in ("issuer", "account"):
        same = [e for e in vault.entries if getattr(e.token, field).casefold() == wanted]
        if len(same) == 1:
            return same[0]
    candidates = matching(vault, name)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise VaultError(f"no entry matches {name!r}")
    shown = ", ".join(e.label for e in candidates[:5])
    more = f" and {len(candidates) - 5} more" if len(candidates) > 5 else ""
    raise VaultError(
        f"{name!r} matches {len(candidates)} entries ({shown}{more}); be more specific"
    )


def next_code(store: VaultStore, vault: Vault, entry: Entry, *, now: float) -> Code:
    """The code to show for ``entry``. For HOTP the counter moves on and the vault is saved
    before the code is returned, so a code once shown is never shown again."""
    if entry.token.kind is not TokenKind.HOTP:
        return Code(
            entry=entry,
            code=entry.token.code(now=now),
            seconds_left=entry.token.seconds_left(now=now),
        )
    used: list[Entry] = []

    def advance(fresh: Vault) -> None:
        current = fresh.entry(entry.id)
        if current is None:
            raise VaultError("that entry is no longer in the vault")
        used.append(current)
        fresh.replace_token(entry.id, current.token.advanced(), now=now)

    update(store, vault, advance)
    shown = used[0]
    return Code(
        entry=shown, code=shown.token.code(now=now), seconds_left=0.0, counter=shown.token.counter
    )


def add_tokens(
    store: VaultStore,
    vault: Vault,
    tokens: Iterable[Token],
    *,
    now: float,
    allow_duplicates: bool = False,
) -> ImportOutcome:
    """Add tokens in one write; a token whose secret the vault (or an earlier token of the same
    batch) already holds is reported as a duplicate and not added, unless allowed."""
    batch = list(tokens)
    added: list[Entry] = []
    duplicates: list[tuple[Token, Entry | Token]] = []

    def change(fresh: Vault) -> None:
        added.clear()
        duplicates.clear()
        for token in batch:
            earlier = fresh.duplicate_of(token)
            if earlier is not None and not allow_duplicates:
                duplicates.append((token, earlier))
                continue
            added.append(fresh.add(token, now=now))

    if batch:
        update(store, vault, change)
    return ImportOutcome(added=tuple(added), duplicates=tuple(duplicates))


def _keyring_key(document: bytes) -> bytes | None:
    header = read_header(document)
    if "keyring" not in header.slot_types:
        return None
    try:
        stored = keyring.get_password(KEYRING_SERVICE, header.vault_id)
    except keyring.errors.KeyringError:
        return None
    if stored is None:
        return None
    try:
        return base64.b64decode(stored, validate=True)
    except (binascii.Error, ValueError):
        return None
