"""Envelope encryption: the key file, the keyring, and ciphertexts bound to their row."""

import os
import stat
from pathlib import Path

import pytest

from sparekey.crypto.aead import DecryptionError, open_sealed, seal
from sparekey.crypto.keyring import KeyPurpose, Keyring, NewKey, StoredKey
from sparekey.crypto.providers import FileKeyProvider, KeyFileError, KeyProviderError


class MemoryKeyStore:
    def __init__(self) -> None:
        self.keys: list[StoredKey] = []

    def list_keys(self) -> list[StoredKey]:
        return list(self.keys)

    def add_key(self, key: NewKey) -> StoredKey:
        key_id, purpose = len(self.keys) + 1, key.purpose
        self.keys = [
            StoredKey(
                id=k.id,
                purpose=k.purpose,
                wrapped=k.wrapped,
                kek_id=k.kek_id,
                active=k.active and k.purpose is not purpose,
            )
            for k in self.keys
        ]
        stored = StoredKey(
            id=key_id, purpose=purpose, wrapped=key.wrap(key_id), kek_id=key.kek_id, active=True
        )
        self.keys.append(stored)
        return stored


def test_key_file_is_created_private_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    created = FileKeyProvider.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = FileKeyProvider.load(path)
    assert loaded.kek_id == created.kek_id
    wrapped = created.wrap(b"k" * 32, aad=b"a")
    assert loaded.unwrap(wrapped, aad=b"a") == b"k" * 32


def test_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    FileKeyProvider.create(path)
    with pytest.raises(FileExistsError):
        FileKeyProvider.create(path)


@pytest.mark.parametrize(
    ("content", "mode", "reason"),
    [
        ("sparekey-kek-v1 " + "A" * 43 + "=\n", 0o644, "readable by others"),
        ("not a key\n", 0o600, "not a Sparekey key file"),
        ("sparekey-kek-v1 AAAA\n", 0o600, "256-bit"),
    ],
)
def test_bad_key_files_are_refused_with_a_reason(
    tmp_path: Path, content: str, mode: int, reason: str
) -> None:
    path = tmp_path / "k.key"
    path.write_text(content)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match=reason):
        FileKeyProvider.load(path)


def test_missing_key_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        FileKeyProvider.load(tmp_path / "absent.key")


def test_sealed_blob_opens_only_with_its_associated_data() -> None:
    key = os.urandom(32)
    blob = seal(key, b"seed", aad=b"user=alice|factor=1")
    assert open_sealed(key, blob, aad=b"user=alice|factor=1") == b"seed"
    with pytest.raises(DecryptionError):
        open_sealed(key, blob, aad=b"user=mallory|factor=1")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionError):
        open_sealed(key, tampered, aad=b"user=alice|factor=1")


def test_keyring_keeps_old_keys_readable_after_a_new_one(tmp_path: Path) -> None:
    provider = FileKeyProvider.create(tmp_path / "k.key")
    store = MemoryKeyStore()
    ring = Keyring(provider=provider, store=store)
    ring.ensure_keys()
    old_id, old_blob = ring.encrypt(b"one", aad=b"x")
    ring.add_key(KeyPurpose.ENCRYPTION)
    new_id, _ = ring.encrypt(b"two", aad=b"x")
    assert new_id != old_id
    fresh = Keyring(provider=provider, store=store)  # another process, same store
    assert fresh.decrypt(old_id, old_blob, aad=b"x") == b"one"


def test_wrapped_keys_are_bound_to_their_id(tmp_path: Path) -> None:
    provider = FileKeyProvider.create(tmp_path / "k.key")
    store = MemoryKeyStore()
    Keyring(provider=provider, store=store).ensure_keys()
    a, b, *_ = store.keys
    store.keys = [
        StoredKey(id=a.id, purpose=a.purpose, wrapped=b.wrapped, kek_id=a.kek_id, active=True),
        b,
    ]
    with pytest.raises(DecryptionError):
        Keyring(provider=provider, store=store)


def test_another_key_file_cannot_open_the_keys(tmp_path: Path) -> None:
    store = MemoryKeyStore()
    Keyring(provider=FileKeyProvider.create(tmp_path / "a.key"), store=store).ensure_keys()
    with pytest.raises(KeyProviderError, match="not reachable"):
        Keyring(provider=FileKeyProvider.create(tmp_path / "b.key"), store=store)
    # Even under the other file's KEK id, its key cannot unwrap them.
    other = FileKeyProvider.create(tmp_path / "c.key")
    store.keys = [
        StoredKey(id=k.id, purpose=k.purpose, wrapped=k.wrapped, kek_id=other.kek_id, active=True)
        for k in store.keys
    ]
    with pytest.raises(DecryptionError):
        Keyring(provider=other, store=store)
