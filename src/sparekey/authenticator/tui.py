"""The terminal UI of the desktop authenticator: ``skauth`` with no command, on a terminal.

Two screens. :class:`LockedScreen` asks for the vault password (Argon2id runs in a thread, so
the screen stays responsive). :class:`MainScreen` lists the entries under a search box that filters
as you type; each time-based row shows its current code and a bar of the seconds it has left,
recomputed every second from the injected clock. Enter copies the selected code (the first match
while typing); an HOTP row shows no code until asked, because asking moves its counter on and
saves the vault (:func:`core.next_code`) before the code is shown.

The app locks itself — drops the :class:`Vault` and empties the table — after ``idle_lock_seconds``
without a key press or mouse event, and at once on ``ctrl+l``. Vault and clipboard errors become
notifications. Codes are shown on screen and put on the clipboard, never logged or notified.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static
from textual.widgets.data_table import CellDoesNotExist

from sparekey.authenticator import core
from sparekey.authenticator.clipboard import ClipboardError, detect, schedule_clear
from sparekey.authenticator.store import VaultStore
from sparekey.authenticator.vault import Entry, Vault, VaultError
from sparekey.protocols.tokens import TokenKind

if TYPE_CHECKING:
    from sparekey.authenticator.cli import AppContext

__all__ = [
    "AuthenticatorApp",
    "LockedScreen",
    "MainScreen",
    "group_code",
    "run",
    "system_copy",
]

BAR_WIDTH = 10
LOW_SECONDS = 5  # the bar turns red when a code has this little time left


def run(context: AppContext, *, lock_after: float = 120.0, clear_after: float = 30.0) -> None:
    """Start the UI on the context's vault, already unlocked when a password file, the password
    variable, a recovery key file or the keyring opens it (never prompting on the terminal)."""
    from sparekey.authenticator.cli import PASSWORD_ENV

    store = context.store
    if not store.exists():
        raise VaultError(f"no vault at {store.path} (create one with 'init' or 'add')")
    explicit = (
        context.password_file is not None
        or context.recovery_key_file is not None
        or PASSWORD_ENV in os.environ
    )
    vault: Vault | None = None
    message = ""
    if explicit or context.use_keyring:  # otherwise credentials() would prompt with getpass
        try:
            vault = core.unlock(store, context.credentials())
        except VaultError as exc:
            message = _sentence(exc) if explicit else ""
    AuthenticatorApp(
        store=store,
        clock=context.clock,
        vault=vault,
        lock_message=message,
        idle_lock_seconds=lock_after,
        clear_after=clear_after,
    ).run()


def system_copy(*, clear_after: float) -> Callable[[str], None]:
    """Copy to the desktop clipboard and clear it ``clear_after`` seconds later (0: never)."""

    def copy(code: str) -> None:
        clipboard = detect()
        clipboard.copy(code)
        if clear_after > 0:
            schedule_clear(clipboard, code, after=clear_after)

    return copy


def group_code(code: str) -> str:
    """``123456`` as ``123 456`` (halves, the shorter first); short and Steam codes as they are."""
    if len(code) < 6 or not code.isdigit():
        return code
    half = len(code) // 2
    return f"{code[:half]} {code[half:]}"


class LockedScreen(Screen[None]):
    """The password prompt."""

    def __init__(self, *, vault_path: str, message: str = "") -> None:
        super().__init__()
        self._vault_path = vault_path
        self._message = message

    def compose(self) -> ComposeResult:
        with Vertical(id="lock-box"):
            yield Static("Sparekey authenticator is locked", id="lock-title")
            yield Static(Text(self._vault_path), id="lock-path")
            yield Input(placeholder="Vault password", password=True, id="password")
            yield Static(Text(self._message), id="lock-error")
        yield Footer()


class MainScreen(Screen[None]):
    """The search box and the table of entries."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("q", "app.quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search: type to filter, Enter copies the code", id="search")
        yield Static("", id="status")
        table: DataTable[Text] = DataTable(id="entries", cursor_type="row", zebra_stripes=True)
        table.add_column("Account", key="account")
        table.add_column("Code", key="code")
        table.add_column("Valid for", key="time")
        yield table
        yield Footer()

    def action_move(self, delta: int) -> None:
        table = self.query_one("#entries", DataTable)
        if table.row_count:
            table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + delta)))


class AuthenticatorApp(App[None]):
    """The authenticator; everything it touches is injected so tests can run it headless."""

    TITLE = "Sparekey authenticator"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    LockedScreen { align: center middle; }
    #lock-box { width: 64; height: auto; border: round $primary; padding: 1 2; }
    #lock-title { text-style: bold; margin-bottom: 1; }
    #lock-path { color: $text-muted; margin-bottom: 1; }
    #lock-error { color: $error; height: auto; margin-top: 1; }
    #status { height: 1; padding: 0 1; color: $text-muted; }
    #entries { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear_search", "Clear search"),
        Binding("ctrl+l", "lock", "Lock", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        *,
        store: VaultStore,
        clock: Callable[[], float],
        unlock: Callable[[str], Vault] | None = None,
        vault: Vault | None = None,
        copy: Callable[[str], None] | None = None,
        idle_lock_seconds: float = 120,
        clear_after: float = 30,
        lock_message: str = "",
    ) -> None:
        super().__init__()
        self._store = store
        self._clock = clock
        self._unlock = unlock if unlock is not None else self._unlock_with_password
        self._vault = vault
        self._copy = copy if copy is not None else system_copy(clear_after=clear_after)
        self._idle_lock_seconds = idle_lock_seconds
        self._clear_after = clear_after
        self._lock_message = lock_message
        self._last_activity = clock()
        self._shown: list[str] = []  # entry ids in table order
        self._filled_query: str | None = None  # the search the table shows
        self._hotp_codes: dict[str, str] = {}  # the code last shown for an HOTP entry
        self._file_stamp: tuple[int, int] | None = None

    # state -------------------------------------------------------------------------------------

    @property
    def vault(self) -> Vault | None:
        """The unlocked vault, or None while locked."""
        return self._vault

    def selected_entry(self) -> Entry | None:
        """The entry under the table's cursor (the first match while typing a search)."""
        if self._vault is None or not isinstance(self.screen, MainScreen):
            return None
        row = self.screen.query_one("#entries", DataTable).cursor_row
        if not 0 <= row < len(self._shown):
            return None
        return self._vault.entry(self._shown[row])

    # lifecycle ---------------------------------------------------------------------------------

    async def on_mount(self) -> None:
        self.set_interval(1.0, self.tick)
        if self._vault is None:
            await self.push_screen(self._locked_screen(self._lock_message))
        else:
            self._file_stamp = self._stamp()
            await self.push_screen(MainScreen())
            self._fill_table()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.InputEvent):
            self._last_activity = self._clock()
        await super().on_event(event)

    def tick(self) -> None:
        """Once a second: lock when idle, pick up changes made by others, refresh the codes."""
        if self._vault is None:
            return
        if self._clock() - self._last_activity >= self._idle_lock_seconds:
            self.lock(reason=f"Locked after {self._idle_lock_seconds:g} s without input.")
            return
        if self._stamp() != self._file_stamp:
            self._reload()
        self._refresh_codes()

    # locking -----------------------------------------------------------------------------------

    def action_lock(self) -> None:
        self.lock(reason="Locked.")

    def lock(self, *, reason: str = "") -> None:
        """Forget the vault and every code, and show the password prompt."""
        if self._vault is None:
            return
        self._vault = None
        self._shown = []
        self._filled_query = None
        self._hotp_codes.clear()
        self._file_stamp = None
        if isinstance(self.screen, MainScreen):
            self.screen.query_one("#entries", DataTable).clear()
        self.clear_notifications()  # they name accounts
        self.refresh_bindings()
        self.switch_screen(self._locked_screen(""))
        if reason:
            self.notify(reason)

    def _unlock_with_password(self, password: str) -> Vault:
        credentials = core.Credentials(password=password, use_keyring=False)
        return core.unlock(self._store, credentials)

    def _locked_screen(self, message: str) -> LockedScreen:
        return LockedScreen(vault_path=str(self._store.path), message=message)

    @on(Input.Submitted, "#password")
    def _password_submitted(self, event: Input.Submitted) -> None:
        if not event.value:
            self._lock_error("Type the vault password.")
            return
        self._lock_error("Unlocking…")
        event.input.disabled = True
        self.run_worker(self._unlock_in_thread(event.input, event.value), exclusive=True)

    async def _unlock_in_thread(self, field: Input, password: str) -> None:
        try:
            vault = await asyncio.to_thread(self._unlock, password)
        except VaultError as exc:
            field.value = ""
            field.disabled = False
            field.focus()
            self._lock_error(_sentence(exc))
            return
        self._vault = vault
        self._last_activity = self._clock()
        self._file_stamp = self._stamp()
        await self.switch_screen(MainScreen())
        self.refresh_bindings()
        self._fill_table()

    def _lock_error(self, message: str) -> None:
        if isinstance(self.screen, LockedScreen):
            self.screen.query_one("#lock-error", Static).update(Text(message))

    # the table ---------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # while locked these are hidden from the footer and not run
        return not (action in {"lock", "clear_search"} and self._vault is None)

    def action_clear_search(self) -> None:
        if isinstance(self.screen, MainScreen):
            search = self.screen.query_one("#search", Input)
            search.value = ""
            search.focus()
            self._fill_table()  # now, not when Input.Changed arrives after the next key

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        if event.input.value != self._filled_query:  # not a late echo of a filled search
            self._fill_table()

    def _fill_table(self, *, keep: str | None = None) -> None:
        if self._vault is None or not isinstance(self.screen, MainScreen):
            return
        query = self.screen.query_one("#search", Input).value
        self._filled_query = query
        entries = core.matching(self._vault, query) if query.strip() else self._vault.entries
        table = self.screen.query_one("#entries", DataTable)
        table.clear()
        self._shown = [entry.id for entry in entries]
        now = self._clock()
        for entry in entries:
            code, time = self._cells(entry, now)
            table.add_row(Text(entry.label), code, time, key=entry.id)
        if keep in self._shown:
            table.move_cursor(row=self._shown.index(keep))
        total = len(self._vault.entries)
        if not total:
            status = "The vault is empty: add accounts with 'skauth add' or 'skauth import'."
        elif not entries:
            status = f"No entry matches {query.strip()!r}."
        else:
            status = f"{len(entries)} of {total} entries"
        self.screen.query_one("#status", Static).update(Text(status))

    def _refresh_codes(self) -> None:
        if self._vault is None or not isinstance(self.screen, MainScreen):
            return
        try:
            table = self.screen.query_one("#entries", DataTable)
        except NoMatches:  # the clock ticked between unlocking and the screen's first layout
            return
        now = self._clock()
        for entry_id in self._shown:
            entry = self._vault.entry(entry_id)
            if entry is None:
                continue
            code, time = self._cells(entry, now)
            try:
                table.update_cell(entry_id, "code", code)
                table.update_cell(entry_id, "time", time)
            except CellDoesNotExist:  # a new main screen's table, laid out but not filled yet
                return

    def _cells(self, entry: Entry, now: float) -> tuple[Text, Text]:
        token = entry.token
        if token.kind is TokenKind.HOTP:
            shown = self._hotp_codes.get(entry.id)
            if shown is None:
                return Text("press Enter for a code", style="dim"), Text("")
            return Text(group_code(shown), style="bold"), Text("Enter: next code", style="dim")
        left = token.seconds_left(now=now)
        filled = round(BAR_WIDTH * left / token.period)
        bar = "█" * filled + "░" * (BAR_WIDTH - filled)
        style = "red" if left <= LOW_SECONDS else "green"
        time = Text(bar, style=style) + Text(f" {_duration(left)}")
        return Text(group_code(token.code(now=now)), style="bold"), time

    # copying -----------------------------------------------------------------------------------

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        self.copy_selected()

    @on(DataTable.RowSelected, "#entries")
    def _row_selected(self) -> None:
        self.copy_selected()

    def copy_selected(self) -> None:
        """Copy the selected entry's code; an HOTP entry's counter is saved first."""
        entry = self.selected_entry()
        if self._vault is None:
            return
        if entry is None:
            self.notify("No entry is selected.", severity="warning")
            return
        try:
            shown = core.next_code(self._store, self._vault, entry, now=self._clock())
        except VaultError as exc:
            self.notify(_sentence(exc), title="Vault error", severity="error")
            return
        if shown.counter is not None:
            self._hotp_codes[entry.id] = shown.code
            self._file_stamp = self._stamp()  # our own write
            self._fill_table(keep=entry.id)
        try:
            self._copy(shown.code)
        except ClipboardError as exc:
            message = f"{_sentence(exc)}; the code is on screen."
            self.notify(message, title="Not copied", severity="error")
            return
        cleared = f" (cleared in {self._clear_after:g} s)" if self._clear_after > 0 else ""
        self.notify(f"Copied code for {entry.label}{cleared}")

    # changes made by others --------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._store.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_ino

    def _reload(self) -> None:
        """Re-read the vault file another process changed (a command run beside the UI)."""
        assert self._vault is not None
        self._file_stamp = self._stamp()
        selected = self.selected_entry()
        try:
            fresh = Vault.decrypt(self._store.read(), master_key=self._vault.master_key)
        except VaultError as exc:
            self.notify(_sentence(exc), title="Vault not reloaded", severity="error")
            return
        self._vault = fresh
        self._fill_table(keep=selected.id if selected else None)


def _duration(seconds: float) -> str:
    whole = math.ceil(seconds)
    if whole < 100:
        return f"{whole:>2} s"
    if whole < 6000:
        return f"{math.ceil(whole / 60)} min"
    return f"{math.ceil(whole / 3600)} h"


def _sentence(error: Exception) -> str:
    """Our error messages are lower-case clauses; on screen they start a sentence."""
    text = str(error)
    return text[:1].upper() + text[1:]
