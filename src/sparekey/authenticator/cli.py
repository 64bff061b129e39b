"""``sparekey-authenticator`` (alias ``skauth``): codes on this computer when the phone is missing.

Every command works on one vault file (``--vault``, ``$SPAREKEY_VAULT``, or the user's data
directory). The password comes from ``--password-file``, ``$SPAREKEY_VAULT_PASSWORD``, the OS
keyring (once ``keyring enable`` was run) or a prompt; ``--recovery-key-file`` opens the vault with
the recovery key instead. A command that writes creates the vault when there is none yet and prints
its recovery key once, on stderr. Output meant for scripts goes to stdout alone (``code NAME``
prints the code and nothing else); everything for people goes to stderr. Exit status 0 when it
worked, 1 with one line on stderr when it did not.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import platformdirs
import typer

from sparekey.authenticator import core, imports
from sparekey.authenticator.clipboard import ClipboardError, detect, schedule_clear
from sparekey.authenticator.qr import QrError, is_image, read_qr_texts
from sparekey.authenticator.store import VaultStore, describe_damage
from sparekey.authenticator.vault import (
    Entry,
    KdfParams,
    Vault,
    VaultCorruptError,
    VaultError,
    WrongCredentialError,
)
from sparekey.protocols.formats import FormatError
from sparekey.protocols.otpauth import OtpauthError, b32decode, b32encode, parse
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.tokens import Token, TokenError, TokenKind

__all__ = ["AppContext", "app", "main"]

PROG = "sparekey-authenticator"
PASSWORD_ENV = "SPAREKEY_VAULT_PASSWORD"  # noqa: S105 - the variable's name, not a password
NEW_PASSWORD_ENV = "SPAREKEY_VAULT_NEW_PASSWORD"  # noqa: S105


def default_vault_path() -> Path:
    return Path(platformdirs.user_data_dir("sparekey-authenticator")) / "vault.json"


@dataclass(kw_only=True)
class AppContext:
    """What every command gets: the clock (injected by tests) and the chosen vault and password."""

    clock: Callable[[], float] = time.time
    store: VaultStore = field(default_factory=lambda: VaultStore(default_vault_path()))
    password_file: Path | None = None
    recovery_key_file: Path | None = None
    use_keyring: bool = True
    kdf: KdfParams | None = None

    def password(self, *, confirm: bool = False, prompt: str = "Vault password") -> str | None:
        if self.password_file is not None:
            return _first_line(self.password_file, "password file")
        if PASSWORD_ENV in os.environ:
            return os.environ[PASSWORD_ENV]
        if not _interactive():
            return None
        first = getpass.getpass(f"{prompt}: ")
        if confirm and getpass.getpass(f"{prompt} (again): ") != first:
            raise VaultError("the two passwords differ")
        return first

    def credentials(self) -> core.Credentials:
        if self.recovery_key_file is not None:
            return core.Credentials(
                recovery_key=_first_line(self.recovery_key_file, "recovery key file")
            )
        explicit = self.password_file is not None or PASSWORD_ENV in os.environ
        if not explicit and self.use_keyring:
            return core.Credentials(use_keyring=True)
        return core.Credentials(password=self.password(), use_keyring=False)

    def open(self) -> Vault:
        """Unlock the existing vault."""
        if not self.store.exists():
            raise VaultError(f"no vault at {self.store.path} (create one with 'init' or 'add')")
        credentials = self.credentials()
        try:
            return core.unlock(self.store, credentials)
        except WrongCredentialError:
            if credentials.password is not None or credentials.recovery_key is not None:
                raise
        password = self.password()  # the keyring had nothing: ask
        if password is None:
            raise WrongCredentialError(
                f"the vault is locked: use --password-file, ${PASSWORD_ENV} or a terminal"
            )
        return core.unlock(self.store, core.Credentials(password=password, use_keyring=False))

    def open_or_create(self) -> Vault:
        """Unlock the vault, creating it first when there is none (writing commands)."""
        if self.store.exists():
            return self.open()
        password = self.password(confirm=True, prompt="New vault password")
        if password is None:
            raise VaultError(
                "no vault yet: give a password for the new one with --password-file or "
                f"${PASSWORD_ENV}"
            )
        vault, recovery_key = core.create_vault(self.store, password=password, kdf=self.kdf)
        _announce_recovery_key(self.store, recovery_key)
        return vault


app = typer.Typer(
    help="Codes from your authenticator accounts on this computer, in an encrypted vault.",
    add_completion=False,
    pretty_exceptions_enable=False,
    invoke_without_command=True,
)
keyring_app = typer.Typer(help="Unlock the vault with the operating system's keyring.")
app.add_typer(keyring_app, name="keyring")


@app.callback()
def _options(
    ctx: typer.Context,
    vault: Annotated[
        Path | None,
        typer.Option(
            "--vault", envvar="SPAREKEY_VAULT", help="The vault file.", show_default=False
        ),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(help=f"Read the vault password from this file (or set ${PASSWORD_ENV})."),
    ] = None,
    recovery_key_file: Annotated[
        Path | None, typer.Option(help="Open the vault with the recovery key in this file.")
    ] = None,
    no_keyring: Annotated[
        bool, typer.Option("--no-keyring", help="Do not look in the system keyring.")
    ] = False,
) -> None:
    context = ctx.obj if isinstance(ctx.obj, AppContext) else AppContext()
    if vault is not None:
        context.store = VaultStore(vault.expanduser())
    context.password_file = password_file
    context.recovery_key_file = recovery_key_file
    context.use_keyring = not no_keyring
    ctx.obj = context
    if ctx.invoked_subcommand is None:
        if not _interactive():
            raise VaultError("no command given (the terminal UI needs a terminal); see --help")
        _run_tui(context)


def _ctx(ctx: typer.Context) -> AppContext:
    assert isinstance(ctx.obj, AppContext)
    return ctx.obj


# --- create and unlock ------------------------------------------------------------------------


@app.command()
def init(
    ctx: typer.Context,
    kdf_memory: Annotated[int, typer.Option(help="Argon2id memory in KiB.")] = 65_536,
    kdf_time: Annotated[int, typer.Option(help="Argon2id passes.")] = 3,
    kdf_parallelism: Annotated[int, typer.Option(help="Argon2id lanes.")] = 4,
) -> None:
    """Create a new vault; its recovery key is printed once, on stderr."""
    context = _ctx(ctx)
    context.kdf = KdfParams(time_cost=kdf_time, memory_cost=kdf_memory, parallelism=kdf_parallelism)
    if context.store.exists():
        raise VaultError(f"a vault already exists at {context.store.path}")
    context.open_or_create()


@app.command()
def passwd(ctx: typer.Context) -> None:
    """Change the vault password (open it with the old one, or with --recovery-key-file)."""
    context = _ctx(ctx)
    vault = context.open()
    new = _new_password()
    core.update(context.store, vault, lambda fresh: fresh.set_password(new))
    typer.echo("The vault password was changed.", err=True)


@app.command("recovery-key")
def recovery_key(ctx: typer.Context) -> None:
    """Make a new recovery key (the old one stops working); printed once, on stderr."""
    context = _ctx(ctx)
    vault = context.open()
    made: list[str] = []
    core.update(context.store, vault, lambda fresh: made.append(fresh.new_recovery_key()))
    _announce_recovery_key(context.store, made[0])


@keyring_app.command("enable")
def keyring_enable(ctx: typer.Context) -> None:
    """Keep a key in the system keyring so the vault opens without the password."""
    context = _ctx(ctx)
    core.enable_keyring(context.store, context.open())
    typer.echo("The vault now opens with the system keyring on this computer.", err=True)


@keyring_app.command("disable")
def keyring_disable(ctx: typer.Context) -> None:
    """Remove the keyring slot and its key."""
    context = _ctx(ctx)
    core.disable_keyring(context.store, context.open())
    typer.echo("The keyring slot was removed.", err=True)


@app.command("restore-version")
def restore_version(
    ctx: typer.Context,
    n: Annotated[int, typer.Argument(help="1 is the version before the last change.")] = 1,
) -> None:
    """Go back to a kept earlier version of the vault file."""
    context = _ctx(ctx)
    context.store.restore_previous(n)
    typer.echo(f"Restored kept version {n}; the replaced file is kept as version 1.", err=True)


# --- entries ----------------------------------------------------------------------------------


@app.command()
def add(
    ctx: typer.Context,
    uri: Annotated[
        str | None, typer.Argument(help="An otpauth:// URI.", show_default=False)
    ] = None,
    qr: Annotated[Path | None, typer.Option(help="An image file with the QR code.")] = None,
    secret: Annotated[str | None, typer.Option(help="The base32 secret, typed.")] = None,
    issuer: Annotated[str | None, typer.Option()] = None,
    account: Annotated[str | None, typer.Option()] = None,
    kind: Annotated[str, typer.Option("--type", help="totp, hotp or steam.")] = "totp",
    algorithm: Annotated[str, typer.Option(help="SHA1, SHA256 or SHA512.")] = "SHA1",
    digits: Annotated[int, typer.Option(help="4 to 10 (Steam: 5).")] = 6,
    period: Annotated[int, typer.Option(help="Seconds per TOTP code.")] = 30,
    counter: Annotated[int, typer.Option(help="The next HOTP counter.")] = 0,
    note: Annotated[str, typer.Option()] = "",
    allow_duplicate: Annotated[
        bool, typer.Option(help="Add even if the vault holds the same secret.")
    ] = False,
) -> None:
    """Add an account from an otpauth URI, a QR image, or typed fields."""
    context = _ctx(ctx)
    given = [x for x in (uri, qr, secret) if x is not None]
    if len(given) != 1:
        raise VaultError("give exactly one of: an otpauth URI, --qr IMAGE, --secret BASE32")
    tokens: list[Token]
    if uri is not None:
        tokens = [Token.from_otpauth(parse(uri), note=note)]
    elif qr is not None:
        tokens = _tokens_from_qr(qr, note=note)
    else:
        assert secret is not None
        tokens = [
            _typed_token(
                secret=secret,
                kind=kind,
                algorithm=algorithm,
                digits=digits,
                period=period,
                counter=counter,
                issuer=issuer or "",
                account=account or "",
                note=note,
            )
        ]
    if uri is not None or qr is not None:
        tokens = [
            replace(
                t,
                issuer=issuer if issuer is not None else t.issuer,
                account=account if account is not None else t.account,
            )
            for t in tokens
        ]
    vault = context.open_or_create()
    outcome = core.add_tokens(
        context.store, vault, tokens, now=context.clock(), allow_duplicates=allow_duplicate
    )
    for entry in outcome.added:
        typer.echo(f"Added {entry.label} ({entry.token.kind.value}).", err=True)
    if outcome.duplicates and not outcome.added:
        _token, existing = outcome.duplicates[0]
        raise VaultError(
            f"the vault already holds this secret as {existing.label} (--allow-duplicate adds it)"
        )


@app.command("list")
def list_entries(
    ctx: typer.Context,
    query: Annotated[str | None, typer.Argument(help="Only entries matching these words.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
    reveal: Annotated[bool, typer.Option(help="Include each secret and otpauth URI.")] = False,
) -> None:
    """List the accounts (never their secrets, unless --reveal)."""
    context = _ctx(ctx)
    vault = context.open()
    entries = core.matching(vault, query) if query else list(vault.entries)
    _print_entries(entries, as_json=as_json, reveal=reveal)


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Words to look for in issuer, account and note.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Find accounts by words in their issuer, account or note."""
    context = _ctx(ctx)
    entries = core.matching(context.open(), query)
    if not entries:
        raise VaultError(f"no entry matches {query!r}")
    _print_entries(entries, as_json=as_json, reveal=False)


@app.command()
def code(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Issuer, account, issuer:account or id.")],
    quiet: Annotated[bool, typer.Option(help="No 'seconds left' line on stderr.")] = False,
) -> None:
    """Print the current code alone on stdout (and how long it stays valid, on stderr)."""
    context = _ctx(ctx)
    vault = context.open()
    shown = core.next_code(context.store, vault, core.find_entry(vault, name), now=context.clock())
    typer.echo(shown.code)
    if not quiet:
        typer.echo(_validity(shown), err=True)


@app.command()
def copy(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Issuer, account, issuer:account or id.")],
    clear_after: Annotated[
        float, typer.Option(help="Seconds before the clipboard is cleared (0: never).")
    ] = 30.0,
) -> None:
    """Put the current code on the clipboard; it is cleared after 30 seconds."""
    context = _ctx(ctx)
    clipboard = detect()
    vault = context.open()
    shown = core.next_code(context.store, vault, core.find_entry(vault, name), now=context.clock())
    clipboard.copy(shown.code)
    if clear_after > 0:
        schedule_clear(clipboard, shown.code, after=clear_after)
    cleared = f", cleared in {clear_after:g} s" if clear_after > 0 else ""
    typer.echo(f"Copied the code for {shown.entry.label} ({_validity(shown)}{cleared}).", err=True)


@app.command()
def edit(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Issuer, account, issuer:account or id.")],
    issuer: Annotated[str | None, typer.Option()] = None,
    account: Annotated[str | None, typer.Option()] = None,
    note: Annotated[str | None, typer.Option()] = None,
    algorithm: Annotated[str | None, typer.Option()] = None,
    digits: Annotated[int | None, typer.Option()] = None,
    period: Annotated[int | None, typer.Option()] = None,
    counter: Annotated[int | None, typer.Option(help="Set the next HOTP counter.")] = None,
) -> None:
    """Change an account's name, note or parameters."""
    context = _ctx(ctx)
    vault = context.open()
    entry = core.find_entry(vault, name)
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "issuer": issuer,
            "account": account,
            "note": note,
            "digits": digits,
            "period": period,
            "counter": counter,
        }.items()
        if v is not None
    }
    if algorithm is not None:
        changes["algorithm"] = _algorithm(algorithm)
    if not changes:
        raise VaultError("nothing to change: give --issuer, --account, --note, ...")
    if counter is not None and entry.token.kind is not TokenKind.HOTP:
        raise VaultError("only an HOTP account has a counter")
    token = replace(entry.token, **changes)
    core.update(
        context.store,
        vault,
        lambda fresh: fresh.replace_token(entry.id, token, now=context.clock()),
    )
    typer.echo(f"Changed {token.label}.", err=True)


@app.command()
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Issuer, account, issuer:account or id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Remove an account from the vault (earlier vault versions still hold it for a while)."""
    context = _ctx(ctx)
    vault = context.open()
    entry = core.find_entry(vault, name)
    if not yes:
        if not _interactive():
            raise VaultError("removing needs --yes when there is no terminal to ask on")
        if not typer.confirm(f"Remove {entry.label}?", err=True):
            raise VaultError("nothing removed")
    core.update(context.store, vault, lambda fresh: fresh.remove(entry.id, now=context.clock()))
    typer.echo(f"Removed {entry.label}.", err=True)


@app.command("import")
def import_files(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Export files or QR images.")],
    format: Annotated[
        str, typer.Option("--format", help=f"auto, or one of: {', '.join(imports.FORMAT_NAMES)}.")
    ] = "auto",
    import_password_file: Annotated[
        Path | None, typer.Option(help="The export's password, if it is encrypted.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Show what would be added; change nothing.")
    ] = False,
    allow_duplicates: Annotated[bool, typer.Option(help="Add secrets the vault holds.")] = False,
) -> None:
    """Import another app's export (Aegis, 2FAS, andOTP, Google Authenticator, Bitwarden, ...)."""
    context = _ctx(ctx)
    password = (
        _first_line(import_password_file, "import password file")
        if import_password_file is not None
        else None
    )
    asker = _ask_import_password if _interactive() and password is None else None
    result = imports.read_files(files, format=format, password=password, ask_password=asker)
    for skipped in result.skipped:
        typer.echo(f"Skipped {skipped.label}: {skipped.reason}", err=True)
    if dry_run:
        for token in result.tokens:
            typer.echo(f"Would add {token.label} ({token.kind.value})", err=True)
        return
    vault = context.open_or_create()
    outcome = core.add_tokens(
        context.store,
        vault,
        result.tokens,
        now=context.clock(),
        allow_duplicates=allow_duplicates,
    )
    for token, existing in outcome.duplicates:
        typer.echo(f"Duplicate, not added: {token.label} (already as {existing.label})", err=True)
    typer.echo(
        f"Imported {len(outcome.added)} of {len(result.tokens)} accounts (format: "
        f"{result.format}; {len(outcome.duplicates)} duplicates, {len(result.skipped)} skipped).",
        err=True,
    )


@app.command()
def tui(
    ctx: typer.Context,
    lock_after: Annotated[
        float, typer.Option(help="Lock after this many seconds without input.", min=5)
    ] = 120.0,
    clear_after: Annotated[
        float, typer.Option(help="Seconds before a copied code is cleared (0: never).", min=0)
    ] = 30.0,
) -> None:
    """Open the terminal UI: live codes, search as you type, Enter copies."""
    _run_tui(_ctx(ctx), lock_after=lock_after, clear_after=clear_after)


# --- helpers ----------------------------------------------------------------------------------


def _run_tui(context: AppContext, *, lock_after: float = 120.0, clear_after: float = 30.0) -> None:
    from sparekey.authenticator.tui import run

    run(context, lock_after=lock_after, clear_after=clear_after)


def _interactive() -> bool:
    return sys.stdin.isatty()


def _first_line(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VaultError(f"cannot read the {what} {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise VaultError(f"the {what} {path} is not UTF-8 text") from exc
    line = text.splitlines()[0] if text else ""
    if not line:
        raise VaultError(f"the {what} {path} is empty")
    return line


def _new_password() -> str:
    if NEW_PASSWORD_ENV in os.environ:
        return os.environ[NEW_PASSWORD_ENV]
    if not _interactive():
        raise VaultError(f"give the new password in ${NEW_PASSWORD_ENV} or on a terminal")
    first = getpass.getpass("New vault password: ")
    if getpass.getpass("New vault password (again): ") != first:
        raise VaultError("the two passwords differ")
    return first


def _ask_import_password() -> str:
    return getpass.getpass("The export's password: ")


def _announce_recovery_key(store: VaultStore, recovery_key: str) -> None:
    typer.echo(f"Created a new vault at {store.path}.", err=True)
    typer.echo(
        "Its recovery key opens it if you forget the password. It is shown only this once;"
        " write it down and keep it apart from this computer:",
        err=True,
    )
    typer.echo(recovery_key, err=True)


def _tokens_from_qr(path: Path, *, note: str) -> list[Token]:
    data = _read_file(path)
    if not is_image(data):
        raise VaultError(f"{path} is not a PNG, JPEG, GIF, BMP or WebP image")
    tokens: list[Token] = []
    for text in read_qr_texts(data):
        if text.lower().startswith("otpauth-migration:"):
            tokens.extend(imports.read_texts([text], format="google").tokens)
        else:
            tokens.append(Token.from_otpauth(parse(text), note=note))
    return tokens


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise VaultError(f"cannot read {path}: {exc.strerror}") from exc


def _algorithm(text: str) -> HashAlgorithm:
    try:
        return HashAlgorithm(text.upper().replace("-", ""))
    except ValueError as exc:
        raise VaultError("the algorithm must be SHA1, SHA256 or SHA512") from exc


def _typed_token(
    *,
    secret: str,
    kind: str,
    algorithm: str,
    digits: int,
    period: int,
    counter: int,
    issuer: str,
    account: str,
    note: str,
) -> Token:
    try:
        token_kind = TokenKind(kind.lower())
    except ValueError as exc:
        raise VaultError("the type must be totp, hotp or steam") from exc
    key = b32decode(secret)
    if token_kind is TokenKind.STEAM:
        return Token.steam(secret=key, issuer=issuer or "Steam", account=account, note=note)
    return Token(
        kind=token_kind,
        secret=key,
        issuer=issuer,
        account=account,
        algorithm=_algorithm(algorithm),
        digits=digits,
        period=period,
        counter=counter,
        note=note,
    )


def _validity(shown: core.Code) -> str:
    if shown.counter is not None:
        return f"HOTP counter {shown.counter}; the next code uses {shown.counter + 1}"
    return f"valid for {int(shown.seconds_left + 0.999)} s"


def _entry_json(entry: Entry, *, reveal: bool) -> dict[str, Any]:
    token = entry.token
    out: dict[str, Any] = {
        "id": entry.id,
        "issuer": token.issuer,
        "account": token.account,
        "type": token.kind.value,
        "algorithm": token.algorithm.value,
        "digits": token.digits,
    }
    if token.kind is TokenKind.HOTP:
        out["counter"] = token.counter
    else:
        out["period"] = token.period
    out["note"] = token.note
    if reveal:
        out["secret"] = b32encode(token.secret)
        out["otpauth_uri"] = token.to_otpauth().to_uri()
    return out


def _print_entries(entries: list[Entry], *, as_json: bool, reveal: bool) -> None:
    if as_json:
        typer.echo(json.dumps([_entry_json(e, reveal=reveal) for e in entries], indent=2))
        return
    if not entries:
        typer.echo("The vault holds no matching accounts.", err=True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("Issuer", "Account", "Type", "Details", "Id"):
        table.add_column(column)
    if reveal:
        table.add_column("Secret")
    for entry in entries:
        token = entry.token
        details = f"{token.algorithm.value}, {token.digits} digits, " + (
            f"counter {token.counter}" if token.kind is TokenKind.HOTP else f"{token.period} s"
        )
        row = [token.issuer, token.account, token.kind.value, details, entry.id[:8]]
        if reveal:
            row.append(b32encode(token.secret))
        table.add_row(*row)
    Console(soft_wrap=True).print(table)


_USER_ERRORS: tuple[type[Exception], ...] = (
    VaultError,
    FormatError,
    OtpauthError,
    TokenError,
    QrError,
    ClipboardError,
)


def _fail(message: str) -> NoReturn:
    typer.echo(f"{PROG}: error: {message}", err=True)
    raise SystemExit(1)


def main(argv: list[str] | None = None, *, obj: AppContext | None = None) -> None:
    """Run the command line; every user error is one line on stderr and exit status 1."""
    context = obj or AppContext()
    try:
        status = app(args=argv, prog_name=PROG, standalone_mode=False, obj=context)
    except VaultCorruptError as exc:
        _fail(describe_damage(context.store, exc))
    except _USER_ERRORS as exc:
        _fail(str(exc))
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument, ...
        _fail(exc.format_message().splitlines()[0])
    except (typer.Abort, KeyboardInterrupt, EOFError):
        _fail("stopped")
    except OSError as exc:
        _fail(str(exc))
    if isinstance(status, int) and status != 0:
        raise SystemExit(status)


from sparekey.authenticator import cli_backup  # noqa: E402 - registered after the app exists

app.add_typer(cli_backup.backup_app, name="backup")

from sparekey.authenticator import cli_export  # noqa: E402 - registered after the app exists

app.command("export")(cli_export.export)
