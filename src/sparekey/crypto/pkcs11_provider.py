"""A key-encryption key held in a PKCS#11 token (an HSM; SoftHSM2 in tests).

The KEK is an AES-256 key generated inside the token, sensitive and not extractable: it never
leaves the token. Data keys are wrapped with CKM_AES_GCM (the token's own AES-GCM, with a random
96-bit IV from this process and the associated data), and stored as ``IV || ciphertext || tag``.
The provider is called only when a node starts or meets a data key it has not unwrapped yet.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import NoSuchKey, PKCS11Error
from pkcs11.mechanisms import GCMParams

from sparekey.crypto.aead import DecryptionError
from sparekey.crypto.providers import KeyProviderError

__all__ = ["Pkcs11KeyProvider"]

_IV_SIZE = 12
_libraries: dict[str, Any] = {}
_libraries_lock = threading.Lock()


def _library(module: str) -> Any:
    """One loaded PKCS#11 library per module path (C_Initialize runs once per process)."""
    with _libraries_lock:
        if module not in _libraries:
            try:
                _libraries[module] = pkcs11.lib(module)
            except (OSError, RuntimeError, PKCS11Error) as exc:
                raise KeyProviderError(f"cannot load PKCS#11 module {module}: {exc}") from exc
        return _libraries[module]


class Pkcs11KeyProvider:
    def __init__(self, *, module: str, token_label: str, pin: str, key_label: str) -> None:
        self._pin = pin
        self._key_label = key_label
        self._lock = threading.Lock()  # PKCS#11 sessions are not shared between threads
        try:
            self._token = _library(module).get_token(token_label=token_label)
        except PKCS11Error as exc:
            raise KeyProviderError(f"no PKCS#11 token labelled {token_label!r}") from exc
        self._kek_id = f"pkcs11:{token_label}:{key_label}"

    @property
    def kek_id(self) -> str:
        return self._kek_id

    def exists(self) -> bool:
        with self._session() as session:
            return self._find(session) is not None

    def create(self) -> None:
        """Generate the KEK inside the token (sensitive, never extractable); refuses a second."""
        with self._session() as session:
            if self._find(session) is not None:
                raise KeyProviderError(f"the token already holds a key {self._key_label!r}")
            session.generate_key(
                KeyType.AES,
                256,
                label=self._key_label,
                store=True,
                template={
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.ENCRYPT: True,
                    Attribute.DECRYPT: True,
                },
            )

    def destroy(self) -> None:
        """Destroy the KEK in the token (once no data key or kept backup needs it)."""
        with self._session() as session:
            self._kek(session).destroy()

    def wrap(self, key: bytes, *, aad: bytes) -> bytes:
        iv = os.urandom(_IV_SIZE)
        with self._session() as session:
            sealed = self._kek(session).encrypt(
                key, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, aad, 128)
            )
        return iv + bytes(sealed)

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        iv, sealed = wrapped[:_IV_SIZE], wrapped[_IV_SIZE:]
        with self._session() as session:
            try:
                return bytes(
                    self._kek(session).decrypt(
                        sealed, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, aad, 128)
                    )
                )
            except PKCS11Error as exc:  # a GCM tag failure surfaces as a GeneralError
                raise DecryptionError("the token could not unwrap this key") from exc

    @contextmanager
    def _session(self) -> Iterator[Any]:
        with self._lock:
            try:
                session = self._token.open(user_pin=self._pin, rw=True)
            except PKCS11Error as exc:
                raise KeyProviderError(f"cannot open a session on the token: {exc!r}") from exc
            try:
                yield session
            finally:
                session.close()

    def _find(self, session: Any) -> Any:
        try:
            return session.get_key(
                label=self._key_label, key_type=KeyType.AES, object_class=ObjectClass.SECRET_KEY
            )
        except NoSuchKey:
            return None

    def _kek(self, session: Any) -> Any:
        key = self._find(session)
        if key is None:
            raise KeyProviderError(f"the token holds no key {self._key_label!r}")
        return key
