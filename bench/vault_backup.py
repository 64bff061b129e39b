"""Vault backups against a real ``sparekey serve`` (SQLite): push, pull and restore times by size.

Starts a server on loopback in a temporary data directory, makes a user and a device token, then
for each vault size pushes a new version (If-Match), downloads it and opens it with the master key
(a pull without the merge) and with the password (a restore: Argon2id at the default parameters).

    .venv/bin/python bench/vault_backup.py [--sizes 100,1000,10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx2

from sparekey.authenticator import core
from sparekey.authenticator.store import VaultStore
from sparekey.authenticator.sync import BackupClient, Target, upload_document
from sparekey.authenticator.vault import Vault
from sparekey.protocols.tokens import Token, TokenKind

SPAREKEY = str(Path(sys.executable).parent / "sparekey")


def _median_ms(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPAREKEY_")}
        env["SPAREKEY_DATA_DIR"] = str(Path(folder) / "server")
        env["SPAREKEY_VAULT_BACKUP_MAX_BYTES"] = str(64 * 1024 * 1024)
        init = subprocess.run(
            [SPAREKEY, "init"], env=env, capture_output=True, text=True, check=True
        )
        admin = init.stdout.strip().splitlines()[-1]
        port = _free_port()
        server = subprocess.Popen(
            [SPAREKEY, "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(150):
                try:
                    if httpx2.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx2.TransportError:
                    time.sleep(0.2)
            with httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}) as api:
                api.post("/v1/users", json={"id": "bench"}).raise_for_status()
                made = api.post(
                    "/v1/users/bench/device-tokens",
                    json={"name": "bench"},
                    headers={"Sparekey-Assurance": "override"},
                )
                made.raise_for_status()
            target = Target(server=url, user="bench", token=made.json()["token"])
            print(f"{'entries':>8}  {'KiB':>7}  {'push':>9}  {'pull':>9}  {'restore':>9}")
            with BackupClient(target) as client:
                etag: str | None = None
                for size in (int(s) for s in args.sizes.split(",")):
                    store = VaultStore(Path(folder) / f"vault-{size}.json")
                    vault, _ = core.create_vault(store, password="benchmark password")
                    tokens = [
                        Token(kind=TokenKind.TOTP, secret=f"secret {i:08}".encode(), issuer=f"I{i}")
                        for i in range(size)
                    ]
                    core.add_tokens(store, vault, tokens, now=0.0, allow_duplicates=True)
                    document = upload_document(store.read())

                    def push(document: bytes = document) -> None:
                        nonlocal etag
                        etag = client.upload(document, etag=etag).etag

                    def pull(key: bytes = vault.master_key) -> None:
                        Vault.decrypt(client.download()[0], master_key=key)

                    def restore() -> None:
                        Vault.unlock(client.download()[0], password="benchmark password")

                    pushed = _median_ms(push, args.repeat)
                    pulled = _median_ms(pull, args.repeat)
                    restored = _median_ms(restore, args.repeat)
                    print(
                        f"{size:>8,}  {len(document) / 1024:>7,.0f}  {pushed:>6.1f} ms  "
                        f"{pulled:>6.1f} ms  {restored:>6.1f} ms"
                    )
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
