"""How long key rotations take as the number of enrolled factors grows.

For each size, a fresh deployment gets that many users with a confirmed HOTP factor; then
``rotate-kek`` (rewrap the data keys: should not depend on the number of users) and ``rotate-dek``
(re-encrypt every secret in batches) are timed through the service layer.

    .venv/bin/python bench/key_rotation.py [--sizes 1000,10000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sparekey.crypto.keyring import KeyPurpose
from sparekey.domain.models import FactorType
from sparekey.protocols.rfc4226 import hotp
from sparekey.runtime import Sparekey, initialize
from sparekey.settings import load_settings


def measure(size: int, database_url: str | None) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as directory:
        overrides = {"database_url": database_url} if database_url else {}
        settings = load_settings(Path(directory), key_refresh_seconds=0.0, **overrides)
        initialize(settings)
        app = Sparekey.open(settings)
        try:
            for n in range(size):
                user_id = f"u{n}"
                app.users.create(user_id=user_id, display_name=None, email=None)
                enrollment = app.factors.enroll(user_id, type=FactorType.HOTP)
                code = hotp(key=enrollment.secret, counter=0)
                app.factors.confirm(user_id, enrollment.factor.id, code=code)
            started = time.perf_counter()
            app.keys.rotate_kek(app.new_kek())
            kek_seconds = time.perf_counter() - started
            started = time.perf_counter()
            rotation = app.keys.rotate_dek(KeyPurpose.ENCRYPTION, batch_size=500)
            dek_seconds = time.perf_counter() - started
            assert rotation.reencrypted == size
        finally:
            app.close()
    return kek_seconds, dek_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--database-url", default=None, help="an empty database [SQLite]")
    args = parser.parse_args()
    print("factors   rotate-kek   rotate-dek   re-encrypted/s")
    for size in (int(s) for s in args.sizes.split(",")):
        kek, dek = measure(size, args.database_url)
        print(f"{size:>7}   {kek * 1000:>8.1f} ms   {dek:>8.2f} s   {size / dek:>12,.0f}")


if __name__ == "__main__":
    main()
