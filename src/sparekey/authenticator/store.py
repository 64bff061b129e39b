"""The vault on disk: one file, replaced atomically, with the previous few versions kept.

A write goes to ``vault.json.tmp`` in the same folder, is flushed and fsynced, the current file is
hard-linked as ``vault.json.1`` (older versions shift to ``.2`` and ``.3``), and then
``os.replace`` puts the new file in place and the folder is fsynced. A crash at any point leaves
``vault.json`` either the old version or the new one, never a mixture; a damaged file can be
replaced by one of the kept versions (``restore_previous``).

Writers take an exclusive ``flock`` on ``vault.json.lock`` for their whole read-change-write, so two
processes (the terminal UI and a command, say) never lose each other's changes. Files are created
0600 and the folder 0700.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from sparekey.authenticator.vault import Vault, VaultCorruptError, VaultError

__all__ = ["KEEP_VERSIONS", "VaultStore"]

KEEP_VERSIONS = 3

if sys.platform != "win32":
    import fcntl

    def _lock(handle: int) -> None:
        fcntl.flock(handle, fcntl.LOCK_EX)

else:  # pragma: no cover - Windows
    import msvcrt

    def _lock(handle: int) -> None:
        msvcrt.locking(handle, msvcrt.LK_LOCK, 1)


class VaultStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def _tmp(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")

    @property
    def _lockfile(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def version_path(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError as exc:
            raise VaultError(f"no vault at {self.path} (create one with 'init' or 'add')") from exc
        except OSError as exc:
            raise VaultError(f"cannot read the vault: {exc.strerror}") from exc

    def previous_versions(self) -> list[Path]:
        return [p for n in range(1, KEEP_VERSIONS + 1) if (p := self.version_path(n)).exists()]

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the vault's writer lock."""
        self._ensure_folder()
        fd = os.open(self._lockfile, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock(fd)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def write(self, vault: Vault) -> None:
        """Write ``vault`` atomically; the caller holds :meth:`locked`."""
        document = vault.to_document()
        self._ensure_folder()
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(document)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.path.exists():
            self._keep_current_version()
        os.replace(self._tmp, self.path)
        self._fsync_folder()

    def restore_previous(self, n: int = 1) -> None:
        """Put kept version ``n`` back in place of the current file (which is kept as well)."""
        source = self.version_path(n)
        if not source.exists():
            raise VaultError(f"there is no kept version {n} of the vault")
        with self.locked():
            data = source.read_bytes()
            self._ensure_folder()
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if self.path.exists():
                self._keep_current_version()
            os.replace(self._tmp, self.path)
            self._fsync_folder()

    def _keep_current_version(self) -> None:
        for n in range(KEEP_VERSIONS - 1, 0, -1):
            older = self.version_path(n)
            if older.exists():
                os.replace(older, self.version_path(n + 1))
        newest = self.version_path(1)
        with contextlib.suppress(FileNotFoundError):
            newest.unlink()
        try:
            os.link(self.path, newest)
        except OSError:  # a file system without hard links
            newest.write_bytes(self.path.read_bytes())
            os.chmod(newest, 0o600)

    def _ensure_folder(self) -> None:
        folder = self.path.parent
        if not folder.exists():
            folder.mkdir(parents=True, mode=0o700)

    def _fsync_folder(self) -> None:
        if sys.platform == "win32":  # pragma: no cover
            return
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def describe_damage(store: VaultStore, error: VaultCorruptError) -> str:
    """The one line to show when the vault file itself is damaged."""
    kept = store.previous_versions()
    if not kept:
        return str(error)
    return f"{error}; earlier versions are kept: run 'restore-version' to go back to {kept[0].name}"
