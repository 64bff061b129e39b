"""Verify throughput with the KEK in a key file and in SoftHSM2 (PKCS#11), in one run.

Data keys are unwrapped once per process and cached, so no verification calls the provider; this
benchmark shows it. Each deployment (SQLite, HOTP factors) verifies fresh valid codes through the
service layer, alternating rounds between the two so drift on the machine affects both alike.

    .venv/bin/python bench/provider_verify.py [--users 200] [--rounds 5] [--per-round 2000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from sparekey.domain.models import FactorType
from sparekey.protocols.rfc4226 import hotp
from sparekey.runtime import Sparekey, initialize
from sparekey.settings import load_settings

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


class Deployment:
    def __init__(self, name: str, data_dir: Path, users: int, **settings: str) -> None:
        self.name = name
        config = load_settings(data_dir, **settings)
        initialize(config)
        self.app = Sparekey.open(config)
        self.secrets: list[bytes] = []
        self.counters: list[int] = []
        for n in range(users):
            user = f"u{n:05d}"
            self.app.users.create(user_id=user, display_name=None, email=None)
            enrollment = self.app.factors.enroll(user, type=FactorType.HOTP)
            self.app.factors.confirm(
                user, enrollment.factor.id, code=hotp(key=enrollment.secret, counter=0)
            )
            self.secrets.append(enrollment.secret)
            self.counters.append(0)

    def round(self, requests: int) -> float:
        """Verify ``requests`` fresh valid codes; returns verifications per second."""
        users = len(self.secrets)
        codes = []
        for i in range(requests):
            n = i % users
            self.counters[n] += 1
            codes.append((f"u{n:05d}", hotp(key=self.secrets[n], counter=self.counters[n])))
        started = time.perf_counter()
        for user, code in codes:
            if not self.app.verification.verify(user, code).verified:
                raise SystemExit(f"{self.name}: a valid code was refused")
        return requests / (time.perf_counter() - started)


def softhsm_token(directory: Path) -> None:
    (directory / "tokens").mkdir(parents=True)
    config = directory / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(config)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ],
        check=True,
        capture_output=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=2000)
    args = parser.parse_args()
    if shutil.which("softhsm2-util") is None:
        raise SystemExit("SoftHSM2 is not installed (apt-get install softhsm2)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        softhsm_token(root / "hsm")
        deployments = [
            Deployment("key file", root / "file", args.users),
            Deployment(
                "SoftHSM2",
                root / "pkcs11",
                args.users,
                key_provider="pkcs11",
                pkcs11_module=MODULE,
                pkcs11_token_label="bench",
                pkcs11_pin="1234",
            ),
        ]
        rates: dict[str, list[float]] = {d.name: [] for d in deployments}
        for _ in range(args.rounds):
            for deployment in deployments:
                rates[deployment.name].append(deployment.round(args.per_round))
        for deployment in deployments:
            deployment.app.close()
    file_rate = statistics.median(rates["key file"])
    hsm_rate = statistics.median(rates["SoftHSM2"])
    print(f"verify, valid HOTP codes, SQLite, {args.rounds} rounds of {args.per_round} (median):")
    print(f"  key file : {file_rate:8.0f} verifications/s")
    share = hsm_rate / file_rate * 100
    print(f"  SoftHSM2 : {hsm_rate:8.0f} verifications/s  ({share:.1f}% of the key file)")


if __name__ == "__main__":
    main()
