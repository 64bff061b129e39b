"""The vault on disk: a process killed at any point of a write leaves a readable vault, earlier
versions are kept, and a damaged file can be rolled back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sparekey.authenticator import core
from sparekey.authenticator.store import KEEP_VERSIONS, VaultStore
from sparekey.authenticator.vault import Vault, VaultCorruptError
from sparekey.protocols.tokens import Token, TokenKind
from tests.authenticator.conftest import LIGHT, T0

PASSWORD = "correct horse"

# The child process opens the vault, arranges to be SIGKILLed at one step of the write, and adds
# an entry. Killing is done from inside, at an exact point, which no timing from outside can do.
_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from sparekey.authenticator import core, store as store_module
    from sparekey.authenticator.vault import Vault
    from sparekey.protocols.tokens import Token, TokenKind

    path, point = Path(sys.argv[1]), sys.argv[2]
    store = store_module.VaultStore(path)
    vault = Vault.unlock(store.read(), password="correct horse")

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "mid-write":
        real_write = os.write
        def partial(fd, data):
            real_write(fd, bytes(data)[: len(data) // 2])
            die()
        os.write = partial
    elif point == "before-fsync":
        os.fsync = die
    elif point == "before-link":
        os.link = die
    elif point == "before-rename":
        real_replace = os.replace
        def replace(src, dst):
            if Path(dst) == path:
                die()
            return real_replace(src, dst)
        os.replace = replace
    token = Token(kind=TokenKind.TOTP, secret=b"added-by-the-child!!", issuer="Child")
    core.add_tokens(store, vault, [token], now=0.0)
    print("not killed")
    """
)


def _vault_with(path: Path, count: int) -> VaultStore:
    store = VaultStore(path)
    vault, _ = core.create_vault(store, password=PASSWORD, kdf=LIGHT)
    for i in range(count):
        token = Token(kind=TokenKind.TOTP, secret=f"existing secret {i}".encode(), issuer=f"I{i}")
        core.add_tokens(store, vault, [token], now=T0)
    return store


@pytest.mark.parametrize("point", ["mid-write", "before-fsync", "before-link", "before-rename"])
def test_a_crash_during_a_write_leaves_the_previous_vault_readable(
    tmp_path: Path, point: str
) -> None:
    store = _vault_with(tmp_path / "vault.json", 3)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(store.path), point],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert "not killed" not in child.stdout
    survivor = Vault.unlock(store.read(), password=PASSWORD)
    assert [e.token.issuer for e in survivor.entries] == ["I0", "I1", "I2"]
    # and the next write works as if nothing had happened
    core.add_tokens(
        store, survivor, [Token(kind=TokenKind.TOTP, secret=b"after the crash!!")], now=T0
    )
    assert len(Vault.unlock(store.read(), password=PASSWORD).entries) == 4


def test_the_previous_versions_are_kept(tmp_path: Path) -> None:
    store = _vault_with(tmp_path / "vault.json", KEEP_VERSIONS + 2)
    kept = store.previous_versions()
    assert [p.name for p in kept] == [f"vault.json.{n}" for n in range(1, KEEP_VERSIONS + 1)]
    counts = [len(Vault.unlock(p.read_bytes(), password=PASSWORD).entries) for p in kept]
    total = KEEP_VERSIONS + 2
    assert counts == [total - 1, total - 2, total - 3]
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in kept)


def test_a_damaged_vault_can_be_rolled_back_to_a_kept_version(tmp_path: Path) -> None:
    store = _vault_with(tmp_path / "vault.json", 2)
    document = json.loads(store.read())
    document["data"] = document["data"][:-8] + "AAAAAAA="
    store.path.write_bytes(json.dumps(document).encode())
    with pytest.raises(VaultCorruptError):
        Vault.unlock(store.read(), password=PASSWORD)
    store.restore_previous(1)
    assert len(Vault.unlock(store.read(), password=PASSWORD).entries) == 1
    # the damaged file was kept too, as the newest version
    assert json.loads(store.version_path(1).read_bytes())["data"].endswith("AAAAAAA=")
