"""Zero-knowledge backups of the vault on the user's own Sparekey server.

What goes up is the vault file itself, minus its keyring slot: the entries encrypted under the
master key, the master key wrapped by the password (Argon2id) and the recovery key. The server
stores the bytes as they come and never receives a key, so it cannot read an entry; a changed byte
fails AES-GCM on the way back down. The desktop signs in with a device token (``skd_...``), a
credential good for that user's vault backups only.

The server keeps numbered versions and answers each with an ETag. ``push`` sends ``If-Match`` with
the ETag this computer last saw (``If-None-Match: *`` for the first backup), so a push from a
second computer that has not seen the first one's backup is refused (412) instead of silently
overwriting it; ``pull`` merges the server's copy into the local vault (entries from both, the
later edit, the higher HOTP counter, removals from both) and remembers its ETag, after which a push
succeeds. A server answering with an older version than this computer has already seen is refused
(a rollback). ``restore`` puts a backup in place on a new computer; opening it needs the password
or the recovery key, as the vault always does.

Where the backups go (server, user, device token) and the last ETag seen are kept inside the
vault's encrypted contents, under ``sync``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx2

from sparekey.authenticator.vault import Vault, VaultCorruptError, VaultError

__all__ = ["BackupClient", "BackupInfo", "SyncError", "Target", "upload_document"]

_TIMEOUT = httpx2.Timeout(15.0, connect=5.0)


class SyncError(VaultError):
    """The server refused or could not be reached; the message is one line for a person."""


class ConflictError(SyncError):
    """Another computer pushed a backup this one has not pulled yet."""


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where backups go: the server's URL, the user's id there, and the device token."""

    server: str
    user: str
    token: str

    @classmethod
    def from_vault(cls, vault: Vault) -> Target:
        sync = vault.sync
        if not all(
            isinstance(sync.get(k), str) and sync.get(k) for k in ("server", "user", "token")
        ):
            raise SyncError("no backup server is set up: run 'backup setup' first")
        return cls(server=sync["server"], user=sync["user"], token=sync["token"])

    def remember(self, vault: Vault) -> None:
        vault.sync.update(server=self.server, user=self.user, token=self.token)


@dataclass(frozen=True, kw_only=True)
class BackupInfo:
    version: int
    etag: str
    size: int
    sha256: str


def upload_document(vault_document: bytes) -> bytes:
    """The bytes that go to the server: the vault file without its keyring slot (that key stays
    in this computer's keyring and is no use anywhere else)."""
    document = json.loads(vault_document)
    document["slots"] = [s for s in document["slots"] if s.get("type") != "keyring"]
    return (json.dumps(document, indent=2) + "\n").encode()


class BackupClient:
    """The vault-backup endpoints of a Sparekey server, with one device token."""

    def __init__(self, target: Target, *, transport: httpx2.BaseTransport | None = None) -> None:
        self.target = target
        base = target.server.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise SyncError(f"the server URL must start with https:// or http://, not {base!r}")
        self._client = httpx2.Client(
            base_url=base,
            headers={"Authorization": f"Bearer {target.token}"},
            timeout=_TIMEOUT,
            transport=transport or httpx2.HTTPTransport(retries=2),
            follow_redirects=False,
        )
        self._path = f"/v1/users/{quote(target.user, safe='')}/vault-backups"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> BackupClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def versions(self) -> list[dict[str, Any]]:
        answer = self._send("GET", self._path)
        body = _json(answer)
        backups = body.get("backups") if isinstance(body, dict) else None
        if not isinstance(backups, list):
            raise SyncError("the server's list of backups is not what Sparekey sends")
        return backups

    def download(self, version: int | None = None) -> tuple[bytes, BackupInfo]:
        """The bytes of a backup (the latest by default), checked against the server's ETag."""
        which = "latest" if version is None else str(version)
        answer = self._send("GET", f"{self._path}/{which}")
        data = answer.content
        info = _info(answer.headers.get("etag", ""), data)
        return data, info

    def upload(self, data: bytes, *, etag: str | None) -> BackupInfo:
        """Store a new version if the latest is still ``etag`` (None: if there is none yet)."""
        headers = {"Content-Type": "application/octet-stream"}
        if etag is None:
            headers["If-None-Match"] = "*"
        else:
            headers["If-Match"] = etag
        answer = self._send("PUT", f"{self._path}/latest", content=data, headers=headers)
        return _info(answer.headers.get("etag", ""), data)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        try:
            answer = self._client.request(method, path, **kwargs)
        except httpx2.HTTPError as exc:
            raise SyncError(f"cannot reach the backup server {self.target.server}: {exc}") from exc
        if answer.status_code < 300:
            return answer
        detail = _problem_detail(answer)
        if answer.status_code == 412:
            raise ConflictError(
                "the server holds a newer backup from another computer: run 'backup pull' "
                "first (or 'backup push --force' to replace it)"
            )
        if answer.status_code == 401:
            raise SyncError(f"the server refused the device token (revoked or wrong): {detail}")
        if answer.status_code == 404:
            raise SyncError(f"the server has no such backup: {detail}")
        raise SyncError(f"the backup server answered {answer.status_code}: {detail}")


def _json(answer: httpx2.Response) -> Any:
    try:
        return answer.json()
    except ValueError as exc:
        raise SyncError("the server's answer is not JSON") from exc


def _problem_detail(answer: httpx2.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.reason_phrase or "no detail"
    if isinstance(body, dict):
        text = body.get("detail") or body.get("title")
        if isinstance(text, str) and text:
            return " ".join(text.split())
    return answer.reason_phrase or "no detail"


def _info(etag: str, data: bytes) -> BackupInfo:
    """Read ``"v{version}-{sha256 prefix}"`` and check the bytes against it."""
    digest = hashlib.sha256(data).hexdigest()
    inner = etag.strip().removeprefix("W/").strip('"')
    version_text, _, prefix = inner.partition("-")
    if not version_text.startswith("v") or not version_text[1:].isdigit() or not prefix:
        raise SyncError("the server's answer carries no backup version (ETag)")
    if not digest.startswith(prefix.lower()):
        raise VaultCorruptError("the backup does not match the server's checksum (damaged)")
    return BackupInfo(
        version=int(version_text[1:]), etag=etag.strip(), size=len(data), sha256=digest
    )
