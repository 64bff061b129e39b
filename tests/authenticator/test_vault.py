"""The vault format: slots, tampering, no plaintext on disk, keyring, HOTP counters, locking."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keyrings.alt.file import PlaintextKeyring

from sparekey.authenticator import core
from sparekey.authenticator.store import VaultStore
from sparekey.authenticator.vault import (
    KdfParams,
    Vault,
    VaultCorruptError,
    VaultError,
    WrongCredentialError,
    read_header,
)
from sparekey.protocols.otpauth import b32encode
from sparekey.protocols.rfc4226 import HashAlgorithm, hotp
from sparekey.protocols.tokens import Token, TokenKind
from tests.authenticator.conftest import LIGHT, T0
from tests.protocols.formats.peer import mutated as mutated_bytes

SECRET = b"12345678901234567890"
TOKENS = [
    Token(kind=TokenKind.TOTP, secret=SECRET, issuer="Example", account="alice@example.com"),
    Token(
        kind=TokenKind.HOTP,
        secret=b"hotp-secret-0123456789",
        issuer="Bank",
        account="alice",
        algorithm=HashAlgorithm.SHA256,
        digits=8,
        counter=41,
    ),
    Token.steam(secret=b"steam-secret-1234567", account="gamer"),
]


def _new_store(path: Path, *, tokens: list[Token] = TOKENS) -> tuple[VaultStore, Vault, str]:
    store = VaultStore(path)
    vault, recovery_key = core.create_vault(store, password="correct horse", kdf=LIGHT)
    core.add_tokens(store, vault, tokens, now=T0)
    return store, vault, recovery_key


def test_the_file_holds_no_secret_name_or_code(tmp_path: Path) -> None:
    store, _vault, _ = _new_store(tmp_path / "vault.json")
    raw = store.read()
    for token in TOKENS:
        for needle in (
            b32encode(token.secret).encode(),
            base64.b64encode(token.secret),
            token.secret,
            token.account.encode(),
            token.issuer.encode(),
        ):
            assert needle not in raw
    document = json.loads(raw)
    assert document["format"] == "sparekey-authenticator-vault"
    assert [slot["type"] for slot in document["slots"]] == ["password", "recovery"]
    kdf = document["slots"][0]["kdf"]
    assert (kdf["name"], kdf["time_cost"], kdf["memory_cost"], kdf["parallelism"]) == (
        "argon2id",
        2,
        19_456,
        1,
    )
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"


def test_password_and_recovery_key_both_open_it(tmp_path: Path) -> None:
    store, _vault, recovery_key = _new_store(tmp_path / "vault.json")
    by_password = Vault.unlock(store.read(), password="correct horse")
    assert [e.token for e in by_password.entries] == TOKENS
    typed = recovery_key.lower().replace("-", " ")  # as a person might type it
    by_recovery = Vault.unlock(store.read(), recovery_key=typed)
    assert by_recovery.master_key == by_password.master_key


@pytest.mark.parametrize(
    "credential",
    [
        {"password": "Correct horse"},
        {"password": ""},
        {"recovery_key": "0000-0000-0000-0000-0000-0000-0000-0000"},
    ],
)
def test_a_wrong_credential_is_refused(tmp_path: Path, credential: dict[str, str]) -> None:
    store, _, _ = _new_store(tmp_path / "vault.json")
    with pytest.raises(WrongCredentialError):
        Vault.unlock(store.read(), **credential)


def test_a_recovery_key_of_the_wrong_shape_says_so(tmp_path: Path) -> None:
    store, _, _ = _new_store(tmp_path / "vault.json")
    with pytest.raises(WrongCredentialError, match="not a recovery key"):
        Vault.unlock(store.read(), recovery_key="12345")


def test_changing_the_password_rewraps_only_the_password_slot(tmp_path: Path) -> None:
    store, vault, recovery_key = _new_store(tmp_path / "vault.json")
    before = json.loads(store.read())
    core.update(store, vault, lambda fresh: fresh.set_password("new password"))
    after = json.loads(store.read())
    assert after["slots"][0]["type"] == "recovery"  # untouched, moved ahead of the new slot
    assert after["slots"][0] == before["slots"][1]
    assert after["slots"][1]["wrapped_key"] != before["slots"][0]["wrapped_key"]
    with pytest.raises(WrongCredentialError):
        Vault.unlock(store.read(), password="correct horse")
    reopened = Vault.unlock(store.read(), password="new password")
    assert reopened.master_key == vault.master_key  # the entries' key did not change
    assert Vault.unlock(store.read(), recovery_key=recovery_key).master_key == vault.master_key


def test_a_new_recovery_key_retires_the_old_one(tmp_path: Path) -> None:
    store, vault, old = _new_store(tmp_path / "vault.json")
    made: list[str] = []
    core.update(store, vault, lambda fresh: made.append(fresh.new_recovery_key()))
    with pytest.raises(WrongCredentialError):
        Vault.unlock(store.read(), recovery_key=old)
    assert Vault.unlock(store.read(), recovery_key=made[0]).entries


def _tamper(store: VaultStore, edit: object) -> bytes:
    document = json.loads(store.read())
    assert callable(edit)
    edit(document)
    return json.dumps(document).encode()


def _flip(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[len(raw) // 2] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda d: d.update(data=_flip(d["data"])), VaultCorruptError),
        (lambda d: d.update(nonce=_flip(d["nonce"])), VaultCorruptError),
        (lambda d: d.update(vault_id="00000000-0000-4000-8000-000000000000"), WrongCredentialError),
        (
            lambda d: d["slots"][0].update(wrapped_key=_flip(d["slots"][0]["wrapped_key"])),
            WrongCredentialError,
        ),
        (lambda d: d["slots"][0]["kdf"].update(time_cost=3), WrongCredentialError),
        (lambda d: d["slots"][0]["kdf"].update(memory_cost=2**40), VaultCorruptError),
        (lambda d: d["slots"][0]["kdf"].update(name="scrypt"), VaultCorruptError),
        (lambda d: d.update(version=2), VaultCorruptError),
        (lambda d: d.update(format="aegis"), VaultCorruptError),
        (lambda d: d.update(slots="none"), VaultCorruptError),
        (lambda d: d.update(data="***"), VaultCorruptError),
    ],
)
def test_tampering_is_caught_with_a_clear_error(
    tmp_path: Path, edit: object, error: type[Exception]
) -> None:
    store, _, _ = _new_store(tmp_path / "vault.json")
    document = _tamper(store, edit)
    with pytest.raises(error) as caught:
        Vault.unlock(document, password="correct horse")
    assert "\n" not in str(caught.value)


def test_absurd_argon2_parameters_are_refused_before_any_work(tmp_path: Path) -> None:
    store, _, _ = _new_store(tmp_path / "vault.json")
    document = _tamper(store, lambda d: d["slots"][0]["kdf"].update(time_cost=10_000))
    started = time.perf_counter()
    with pytest.raises(VaultCorruptError, match="out of range"):
        Vault.unlock(document, password="correct horse")
    assert time.perf_counter() - started < 1.0


def test_a_slot_cannot_be_moved_to_another_vault(tmp_path: Path) -> None:
    first, _, _ = _new_store(tmp_path / "a.json")
    second, _, _ = _new_store(tmp_path / "b.json")
    a, b = json.loads(first.read()), json.loads(second.read())
    b["slots"] = a["slots"]  # the attacker knows the password of vault a
    with pytest.raises(WrongCredentialError):
        Vault.unlock(json.dumps(b).encode(), password="correct horse")


def test_weak_argon2_parameters_are_refused_at_creation(tmp_path: Path) -> None:
    with pytest.raises(VaultError, match="at least"):
        core.create_vault(
            VaultStore(tmp_path / "v.json"),
            password="pw",
            kdf=KdfParams(time_cost=1, memory_cost=8192, parallelism=1),
        )


def test_hotp_counter_is_saved_before_the_code_is_shown(tmp_path: Path) -> None:
    store, vault, _ = _new_store(tmp_path / "vault.json")
    entry = core.find_entry(vault, "bank")
    shown = core.next_code(store, vault, entry, now=T0)
    expected = hotp(key=TOKENS[1].secret, counter=41, digits=8, algorithm=HashAlgorithm.SHA256)
    assert (shown.code, shown.counter) == (expected, 41)
    on_disk = Vault.unlock(store.read(), password="correct horse")
    assert core.find_entry(on_disk, "bank").token.counter == 42
    again = core.next_code(store, vault, entry, now=T0)
    assert again.counter == 42
    assert again.code != shown.code


def test_duplicates_are_detected_by_secret_not_name(tmp_path: Path) -> None:
    store, vault, _ = _new_store(tmp_path / "vault.json")
    renamed = Token(kind=TokenKind.TOTP, secret=SECRET, issuer="Other", account="x")
    outcome = core.add_tokens(store, vault, [renamed, renamed], now=T0)
    assert outcome.added == ()
    assert [existing.label for _, existing in outcome.duplicates] == [
        "Example: alice@example.com"
    ] * 2
    same_name_other_secret = Token(
        kind=TokenKind.TOTP,
        secret=b"another secret!!",
        issuer="Example",
        account="alice@example.com",
    )
    assert len(core.add_tokens(store, vault, [same_name_other_secret], now=T0).added) == 1


def test_two_writers_never_lose_each_others_entries(tmp_path: Path) -> None:
    store, _, _ = _new_store(tmp_path / "vault.json", tokens=[])
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            own = Vault.unlock(store.read(), password="correct horse")
            for i in range(8):
                token = Token(kind=TokenKind.TOTP, secret=f"writer{n}-{i}-secret".encode())
                core.add_tokens(store, own, [token], now=T0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(Vault.unlock(store.read(), password="correct horse").entries) == 24


def test_the_keyring_slot_opens_the_vault_without_the_password(
    tmp_path: Path, file_keyring: PlaintextKeyring
) -> None:
    store, vault, _ = _new_store(tmp_path / "vault.json")
    with pytest.raises(WrongCredentialError):
        core.unlock(store, core.Credentials())
    core.enable_keyring(store, vault)
    assert read_header(store.read()).slot_types == ("password", "recovery", "keyring")
    stored = file_keyring.get_password("sparekey-authenticator", vault.vault_id)
    assert stored is not None
    assert stored.encode() not in store.read()
    assert core.unlock(store, core.Credentials()).master_key == vault.master_key
    core.disable_keyring(store, vault)
    assert file_keyring.get_password("sparekey-authenticator", vault.vault_id) is None
    with pytest.raises(WrongCredentialError):
        core.unlock(store, core.Credentials())


def test_find_entry_explains_ambiguity(tmp_path: Path) -> None:
    store, vault, _ = _new_store(tmp_path / "vault.json")
    core.add_tokens(
        store,
        vault,
        [Token(kind=TokenKind.TOTP, secret=b"second example!!", issuer="Example", account="bob")],
        now=T0,
    )
    assert core.find_entry(vault, "example:bob").token.account == "bob"
    assert core.find_entry(vault, "alice").token.issuer == "Bank"  # exact account wins
    assert core.find_entry(vault, "alice@").token.account == "alice@example.com"
    with pytest.raises(VaultError, match="matches 2 entries"):
        core.find_entry(vault, "example")
    with pytest.raises(VaultError, match="no entry matches"):
        core.find_entry(vault, "nothing")
    entry = vault.entries[0]
    assert core.find_entry(vault, entry.id[:8]) == entry


@pytest.fixture(scope="module")
def sealed_document(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    store, vault, _ = _new_store(tmp_path_factory.mktemp("fuzz") / "vault.json")
    return store.read(), vault.master_key


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_damaged_files_give_a_vault_error_and_nothing_else(
    sealed_document: tuple[bytes, bytes], data: st.DataObject
) -> None:
    """Whatever the bytes, reading a vault raises a VaultError (one line) or opens it."""
    document, master_key = sealed_document
    mutated = data.draw(mutated_bytes(document))
    _opens_or_says_why(
        lambda: (Vault.decrypt(mutated, master_key=master_key), read_header(mutated))
    )


@settings(max_examples=60, deadline=None)
@given(
    field=st.sampled_from(["vault_id", "slots", "nonce", "data", "version", "format"]),
    value=st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=20),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    ),
)
def test_wrong_field_types_give_a_vault_error(
    sealed_document: tuple[bytes, bytes], field: str, value: object
) -> None:
    document, master_key = sealed_document
    edited = json.loads(document)
    edited[field] = value
    _opens_or_says_why(lambda: Vault.decrypt(json.dumps(edited).encode(), master_key=master_key))


def _opens_or_says_why(read: Callable[[], object]) -> None:
    message = ""
    try:
        read()
    except VaultError as exc:
        message = str(exc) or "(empty message)"
    assert "\n" not in message


def test_merge_takes_entries_edits_counters_and_removals_from_both_sides(tmp_path: Path) -> None:
    store, vault, _ = _new_store(tmp_path / "vault.json")
    other = Vault.unlock(store.read(), password="correct horse")  # the same vault, elsewhere
    totp, bank, steam = (e.id for e in vault.entries)
    # here: rename the TOTP entry late, remove the Steam entry
    vault.replace_token(totp, replace(TOKENS[0], account="renamed here"), now=T0 + 20)
    vault.remove(steam, now=T0 + 20)
    # there: rename the TOTP entry earlier, spend two HOTP codes, add an entry
    other.replace_token(totp, replace(TOKENS[0], account="renamed there"), now=T0 + 10)
    other.replace_token(bank, replace(TOKENS[1], counter=43), now=T0 + 10)
    added = other.add(Token(kind=TokenKind.TOTP, secret=b"added elsewhere!"), now=T0 + 10)
    changed = vault.merge(other)
    by_id = {e.id: e for e in vault.entries}
    assert set(by_id) == {totp, bank, added.id}
    assert by_id[totp].token.account == "renamed here"  # the later edit
    assert by_id[bank].token.counter == 43  # the higher counter: no code shown twice
    assert changed == 2
    # and the removal wins over the other side's older copy, merged the other way too
    other.merge(vault)
    assert {e.id for e in other.entries} == {totp, bank, added.id}


def test_merge_refuses_another_vault(tmp_path: Path) -> None:
    _, first, _ = _new_store(tmp_path / "a.json")
    _, second, _ = _new_store(tmp_path / "b.json")
    with pytest.raises(VaultError, match="another vault"):
        first.merge(second)


@pytest.mark.parametrize("field", ["vault_id", "slots", "nonce", "data", "version", "format"])
def test_a_missing_field_gives_a_vault_error(
    sealed_document: tuple[bytes, bytes], field: str
) -> None:
    document, master_key = sealed_document
    edited = json.loads(document)
    del edited[field]
    with pytest.raises(VaultError):
        Vault.decrypt(json.dumps(edited).encode(), master_key=master_key)
