"""The desktop authenticator's costs: unlocking, showing codes, saving and importing.

Prints one table. What a person waits for is the unlock (Argon2id by design) and, with a large
vault, a save; what the terminal UI pays every second is recomputing every visible code.

    .venv/bin/python bench/authenticator.py [--sizes 100,1000,10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sparekey.authenticator import core, imports
from sparekey.authenticator.store import VaultStore
from sparekey.authenticator.vault import KdfParams, Vault
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.tokens import Token, TokenKind

NOW = 1_800_000_000.0
PEER = Path(__file__).resolve().parents[1].parent / "shared" / "peer-exports"


def _median_ms(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _tokens(count: int) -> list[Token]:
    algorithms = list(HashAlgorithm)
    return [
        Token(
            kind=TokenKind.TOTP if i % 5 else TokenKind.HOTP,
            secret=f"benchmark secret number {i:06}".encode(),
            issuer=f"Issuer {i % 97}",
            account=f"user{i}@example.com",
            algorithm=algorithms[i % 3],
            digits=6 + i % 3,
            counter=i,
        )
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as folder:
        for name, kdf in (
            ("default (64 MiB, 3 passes, 4 lanes)", KdfParams()),
            (
                "floor (19 MiB, 2 passes, 1 lane)",
                KdfParams(time_cost=2, memory_cost=19_456, parallelism=1),
            ),
        ):
            store = VaultStore(Path(folder) / f"unlock-{kdf.memory_cost}.json")
            core.create_vault(store, password="benchmark password", kdf=kdf)
            document = store.read()
            ms = _median_ms(
                lambda d=document: Vault.unlock(d, password="benchmark password"), args.repeat
            )
            rows.append((f"unlock, Argon2id {name}", f"{ms:8.1f} ms"))
        light = KdfParams(time_cost=2, memory_cost=19_456, parallelism=1)
        for size in sizes:
            store = VaultStore(Path(folder) / f"vault-{size}.json")
            vault, _ = core.create_vault(store, password="pw", kdf=light)
            core.add_tokens(store, vault, _tokens(size), now=0.0, allow_duplicates=True)
            kib = store.path.stat().st_size / 1024
            save = _median_ms(
                lambda s=store, v=vault: core.update(s, v, lambda _f: None), args.repeat
            )
            rows.append((f"save {size:,} entries ({kib:,.0f} KiB file, fsync)", f"{save:8.1f} ms"))

            codes = _median_ms(
                lambda v=vault: [e.token.code(now=NOW) for e in v.entries if e.token.time_based],
                args.repeat,
            )
            timed = sum(1 for e in vault.entries if e.token.time_based)
            rows.append(
                (
                    f"codes for {timed:,} TOTP entries (one UI tick)",
                    f"{codes:8.1f} ms  ({timed / codes * 1000:,.0f} codes/s)",
                )
            )
            hotp_entry = next(e for e in vault.entries if e.token.kind is TokenKind.HOTP)
            shown = _median_ms(
                lambda s=store, v=vault, e=hotp_entry: core.next_code(s, v, e, now=NOW), args.repeat
            )
            rows.append((f"HOTP code in a {size:,}-entry vault (save first)", f"{shown:8.1f} ms"))
        for relative, password in (
            ("aegis-importers/aegis_encrypted.json", "test"),
            ("aegis-importers/2fas_authenticator_encrypted_v4.2fas", "test"),
            ("aegis-importers/andotp_encrypted.bin", "test"),
            ("extract_otp_secrets/example_export.txt", None),
        ):
            path = PEER / relative
            if not path.exists():
                continue
            ms = _median_ms(
                lambda p=path, pw=password: imports.read_files([p], password=pw), args.repeat
            )
            rows.append((f"read {path.name}", f"{ms:8.1f} ms"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
