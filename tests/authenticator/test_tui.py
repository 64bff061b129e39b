"""The terminal UI, driven headless through Textual's Pilot with a clock the tests move."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from sparekey.authenticator import core
from sparekey.authenticator.clipboard import ClipboardError
from sparekey.authenticator.store import VaultStore
from sparekey.authenticator.tui import AuthenticatorApp, LockedScreen, MainScreen, group_code
from sparekey.authenticator.vault import KdfParams, Vault
from sparekey.protocols.tokens import Token, TokenKind

PASSWORD = "pw"
RFC_SECRET = b"12345678901234567890"  # RFC 4226 / RFC 6238 SHA1 seed
START = 1_111_111_109.0  # RFC 6238 vector: 07081804 (8 digits), 081804 with 6


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> VaultStore:
    vault, _recovery_key = Vault.create(
        password=PASSWORD, kdf=KdfParams(time_cost=2, memory_cost=19_456, parallelism=1)
    )
    tokens = [
        Token(kind=TokenKind.TOTP, secret=RFC_SECRET, issuer="GitHub", account="ada"),
        Token(kind=TokenKind.TOTP, secret=b"another secret!!", issuer="Mastodon", account="ada"),
        Token(kind=TokenKind.HOTP, secret=RFC_SECRET, issuer="Bank", account="ada", counter=5),
        Token.steam(secret=b"steam secret 0123", account="[bold]gamer"),
    ]
    for token in tokens:
        vault.add(token, now=START)
    vault_store = VaultStore(tmp_path / "vault.json")
    with vault_store.locked():
        vault_store.write(vault)
    return vault_store


class Copied(list[str]):
    def __call__(self, code: str) -> None:
        self.append(code)


def make_app(
    store: VaultStore, clock: FakeClock, copied: Copied, *, unlocked: bool = True
) -> AuthenticatorApp:
    vault = core.unlock(store, core.Credentials(password=PASSWORD)) if unlocked else None
    return AuthenticatorApp(
        store=store, clock=clock, vault=vault, copy=copied, idle_lock_seconds=120
    )


def rows(app: AuthenticatorApp) -> list[tuple[str, str]]:
    """(label, code) of each row as shown."""
    table = app.screen.query_one("#entries", DataTable)
    return [
        (str(row[0]), str(row[1])) for row in (table.get_row_at(i) for i in range(table.row_count))
    ]


def row_of(app: AuthenticatorApp, label: str) -> tuple[str, str]:
    return next(row for row in rows(app) if row[0] == label)


async def unlock_with(app: AuthenticatorApp, pilot: Pilot[None], password: str) -> None:
    await pilot.press(*password, "enter")
    await app.workers.wait_for_complete()
    await pilot.pause()


def test_group_code() -> None:
    assert group_code("123456") == "123 456"
    assert group_code("12345678") == "1234 5678"
    assert group_code("1234567") == "123 4567"
    assert group_code("2BX7K") == "2BX7K"


@pytest.mark.anyio
async def test_a_clock_tick_while_the_main_screen_is_still_being_built_is_skipped(
    store: VaultStore,
) -> None:
    """Unlocking swaps in the main screen, whose table appears a moment later; the once-a-second
    tick can come in between (it did, under load) and must wait for the next second."""
    clock = FakeClock(START)
    app = make_app(store, clock, Copied(), unlocked=False)
    async with app.run_test() as pilot:
        await unlock_with(app, pilot, PASSWORD)
        building = app.switch_screen(MainScreen())  # as unlocking does, not yet laid out
        assert isinstance(app.screen, MainScreen)
        assert not app.screen.query("#entries")
        app.tick()
        await building
        await pilot.pause()
        assert app.screen.query("#entries")
        # Laid out, not yet filled: the rows the app last showed are not in this table (the
        # once-a-second tick came in here once, under load, and raised).
        assert not app.screen.query_one("#entries", DataTable).row_count
        app.tick()


@pytest.mark.anyio
async def test_unlock_with_the_password_shows_the_entries(store: VaultStore) -> None:
    clock = FakeClock(START)
    app = make_app(store, clock, Copied(), unlocked=False)
    async with app.run_test() as pilot:
        assert isinstance(app.screen, LockedScreen)
        assert app.focused is app.screen.query_one("#password", Input)
        await unlock_with(app, pilot, "wrong")
        assert isinstance(app.screen, LockedScreen)
        assert app.vault is None
        error = str(app.screen.query_one("#lock-error", Static).render())
        assert "does not open this vault" in error
        await unlock_with(app, pilot, PASSWORD)
        assert isinstance(app.screen, MainScreen)
        assert [label for label, _code in rows(app)] == [
            "GitHub: ada",
            "Mastodon: ada",
            "Bank: ada",
            "Steam: [bold]gamer",  # shown as typed, not read as markup
        ]
        assert app.focused is app.screen.query_one("#search", Input)


@pytest.mark.anyio
async def test_codes_follow_the_clock(store: VaultStore) -> None:
    clock = FakeClock(START)
    app = make_app(store, clock, Copied())
    async with app.run_test():
        assert row_of(app, "GitHub: ada")[1] == "081 804"  # RFC 6238 at 1111111109
        assert row_of(app, "Bank: ada")[1] == "press Enter for a code"
        steam = store_token(store, "Steam: [bold]gamer")
        assert row_of(app, "Steam: [bold]gamer")[1] == steam.code(now=START)
        clock.now = START + 30
        app.tick()
        github = store_token(store, "GitHub: ada")
        assert row_of(app, "GitHub: ada")[1] == group_code(github.code(now=clock.now))
        assert github.code(now=clock.now) != "081804"


def store_token(store: VaultStore, label: str) -> Token:
    vault = Vault.unlock(store.read(), password=PASSWORD)
    return next(e.token for e in vault.entries if e.label == label)


@pytest.mark.anyio
async def test_search_filters_as_you_type_and_enter_copies_the_first_match(
    store: VaultStore,
) -> None:
    clock = FakeClock(START)
    copied = Copied()
    app = make_app(store, clock, copied)
    async with app.run_test() as pilot:
        await pilot.press(*"masto")
        assert [label for label, _code in rows(app)] == ["Mastodon: ada"]
        await pilot.press("enter")
        mastodon = store_token(store, "Mastodon: ada")
        assert copied == [mastodon.code(now=START)]
        notes = [n.message for n in app._notifications]
        assert notes == ["Copied code for Mastodon: ada (cleared in 30 s)"]
        await pilot.press("escape")
        assert len(rows(app)) == 4
        await pilot.press("down", "enter")  # the second row: Mastodon again
        assert copied == [mastodon.code(now=START)] * 2
        await pilot.press("up", "enter")
        assert copied[-1] == "081804"  # the raw code, not the grouped one


@pytest.mark.anyio
async def test_enter_on_an_hotp_row_saves_the_next_counter(store: VaultStore) -> None:
    clock = FakeClock(START)
    copied = Copied()
    app = make_app(store, clock, copied)
    async with app.run_test() as pilot:
        app.tick()
        assert store_token(store, "Bank: ada").counter == 5  # showing the table used nothing
        await pilot.press(*"bank", "enter")
        expected = Token(kind=TokenKind.HOTP, secret=RFC_SECRET, counter=5).code(now=0)
        assert expected == "254676"  # RFC 4226 appendix D, count 5
        assert copied == [expected]
        assert store_token(store, "Bank: ada").counter == 6
        assert row_of(app, "Bank: ada")[1] == "254 676"
        await pilot.press("enter")
        assert copied[-1] == "287922"  # count 6
        assert store_token(store, "Bank: ada").counter == 7


@pytest.mark.anyio
async def test_idle_lock_and_activity(store: VaultStore) -> None:
    clock = FakeClock(START)
    app = make_app(store, clock, Copied())
    async with app.run_test() as pilot:
        clock.now += 100
        await pilot.press("g")  # activity: the idle time starts again
        clock.now += 100
        app.tick()
        assert isinstance(app.screen, MainScreen)
        clock.now += 21
        app.tick()
        await pilot.pause()
        assert app.vault is None
        assert isinstance(app.screen, LockedScreen)
        await unlock_with(app, pilot, PASSWORD)
        assert isinstance(app.screen, MainScreen)
        assert app.screen.query_one("#search", Input).value == ""  # a new, empty screen
        assert len(rows(app)) == 4


@pytest.mark.anyio
async def test_ctrl_l_locks_and_q_quits_outside_the_search_box(store: VaultStore) -> None:
    clock = FakeClock(START)
    app = make_app(store, clock, Copied())
    async with app.run_test() as pilot:
        await pilot.press("q")  # typed into the search box
        assert app.screen.query_one("#search", Input).value == "q"
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert app.vault is None
        assert isinstance(app.screen, LockedScreen)
    app = make_app(store, clock, Copied())
    async with app.run_test() as pilot:
        await pilot.press("tab", "q")  # focus on the table
        await pilot.pause()
        assert app.return_code == 0
        assert not app.is_running


@pytest.mark.anyio
async def test_changes_made_by_a_command_show_up(store: VaultStore) -> None:
    clock = FakeClock(START)
    app = make_app(store, clock, Copied())
    async with app.run_test():
        other = core.unlock(store, core.Credentials(password=PASSWORD))
        token = Token(kind=TokenKind.TOTP, secret=b"added elsewhere!", issuer="Forge")
        core.add_tokens(store, other, [token], now=START)
        app.tick()
        assert "Forge" in [label for label, _code in rows(app)]


@pytest.mark.anyio
async def test_errors_become_notifications(store: VaultStore) -> None:
    def broken_clipboard(code: str) -> None:
        raise ClipboardError("no clipboard here")

    clock = FakeClock(START)
    vault = core.unlock(store, core.Credentials(password=PASSWORD))
    app = AuthenticatorApp(store=store, clock=clock, vault=vault, copy=broken_clipboard)
    async with app.run_test() as pilot:
        await pilot.press("enter")
        store.path.unlink()
        await pilot.press(*"bank", "enter")
        await pilot.pause()
        messages = [(n.title, n.message) for n in app._notifications]
        assert ("Not copied", "No clipboard here; the code is on screen.") in messages
        missing = f"No vault at {store.path} (create one with 'init' or 'add')"
        assert ("Vault error", missing) in messages
        assert app.is_running
        assert isinstance(app.screen, MainScreen)
