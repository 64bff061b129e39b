"""A key-encryption key held in AWS KMS.

KMS encrypts and decrypts the data keys (``Encrypt``/``Decrypt`` with the KEK's key id); the
associated data travels as the KMS encryption context, which KMS binds to the ciphertext the same
way. The KEK never leaves KMS. This machine reaches no AWS endpoint, so the tests run against
``moto``'s in-process KMS; against real AWS the same code needs only credentials and a key.
"""

from __future__ import annotations

import base64
from typing import Any

from sparekey.crypto.aead import DecryptionError
from sparekey.crypto.providers import KeyProviderError

__all__ = ["AwsKmsKeyProvider"]


class AwsKmsKeyProvider:
    def __init__(self, *, key_id: str, region: str, client: Any | None = None) -> None:
        if not key_id:
            raise KeyProviderError("set aws_kms_key_id to the KMS key's id, ARN or alias")
        if client is None:
            import boto3  # type: ignore[import-untyped]  # only for deployments that choose it

            client = boto3.client("kms", region_name=region)
        self._client = client
        self._key_id = key_id
        self._kek_id = f"aws-kms:{key_id}"

    @property
    def kek_id(self) -> str:
        return self._kek_id

    @staticmethod
    def _context(aad: bytes) -> dict[str, str]:
        return {"sparekey-aad": base64.b64encode(aad).decode("ascii")}

    def wrap(self, key: bytes, *, aad: bytes) -> bytes:
        try:
            answer = self._client.encrypt(
                KeyId=self._key_id, Plaintext=key, EncryptionContext=self._context(aad)
            )
        except Exception as exc:  # botocore's errors: unreachable, denied, no such key
            raise KeyProviderError(f"AWS KMS could not wrap a key: {exc}") from exc
        return bytes(answer["CiphertextBlob"])

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        try:
            answer = self._client.decrypt(
                CiphertextBlob=wrapped, KeyId=self._key_id, EncryptionContext=self._context(aad)
            )
        except self._client.exceptions.InvalidCiphertextException as exc:
            raise DecryptionError("AWS KMS did not accept this wrapped key") from exc
        except Exception as exc:
            raise KeyProviderError(f"AWS KMS could not unwrap a key: {exc}") from exc
        return bytes(answer["Plaintext"])
