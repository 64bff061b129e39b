"""Read the raw database after enrollment: no seed (raw, base32, hex) and no backup code."""

import base64
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text

from sparekey.domain.ports import FixedClock
from sparekey.protocols.otpauth import b32decode
from sparekey.settings import Settings
from tests.helpers import assured, create_user, enroll, enroll_confirmed_totp, totp_code


def _all_bytes(settings: Settings, backend: str) -> bytes:
    """Everything stored: every cell of every table, and for SQLite the files themselves."""
    engine = create_engine(settings.resolved_database_url)
    chunks: list[bytes] = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for cell in row:
                    chunks.append(cell if isinstance(cell, bytes) else str(cell).encode())
    engine.dispose()
    if backend == "sqlite":
        data_dir = Path(settings.resolved_database_url.removeprefix("sqlite:///")).parent
        for path in data_dir.glob("sparekey.db*"):
            chunks.append(path.read_bytes())
    return b"\n".join(chunks)


def forms_of(secret: bytes) -> list[bytes]:
    b32 = base64.b32encode(secret).rstrip(b"=")
    return [
        secret,
        b32,
        b32.lower(),
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret).rstrip(b"="),
    ]


def test_no_seed_or_backup_code_in_the_database(
    client: TestClient, clock: FixedClock, settings: Settings, backend: str
) -> None:
    create_user(client)
    totp = enroll_confirmed_totp(client, clock.now())
    confirmed = assured(totp["assurance_token"])  # the confirming code stepped alice up
    seeds = [
        b32decode(str(totp["secret"])),
        b32decode(
            str(enroll(client, type="hotp", algorithm="SHA512", headers=confirmed)["secret"])
        ),
    ]
    codes = client.post("/v1/users/alice/backup-codes", headers=confirmed).json()["codes"]
    stored = _all_bytes(settings, backend)
    assert len(stored) > 1000
    for seed in seeds:
        for form in forms_of(seed):
            assert form not in stored
    for code in codes:
        assert code.encode() not in stored
        assert code.replace("-", "").encode() not in stored
        assert code.replace("-", "").lower().encode() not in stored


def test_api_keys_are_stored_hashed(
    client: TestClient, admin_token: str, settings: Settings, backend: str
) -> None:
    secret = admin_token.split("_", 2)[2]  # the secret may itself contain "_"
    assert len(secret) == 43
    assert secret.encode() not in _all_bytes(settings, backend)


def test_a_sealed_seed_moved_to_another_user_does_not_open(
    client: TestClient, clock: FixedClock, settings: Settings
) -> None:
    """Copy Alice's ciphertext onto Mallory's factor: it must fail to decrypt there."""
    create_user(client, "alice")
    create_user(client, "mallory")
    alice = enroll_confirmed_totp(client, clock.now(), "alice")
    mallory = enroll_confirmed_totp(client, clock.now(), "mallory")
    engine = create_engine(settings.resolved_database_url)
    with engine.begin() as conn:
        a = conn.execute(
            text("SELECT secret FROM factors WHERE id = :i"), {"i": alice["id"]}
        ).scalar_one()
        conn.execute(
            text("UPDATE factors SET secret = :s WHERE id = :i"), {"s": a, "i": mallory["id"]}
        )
    engine.dispose()
    clock.advance(30)
    alice_code = totp_code(str(alice["secret"]), clock.now())
    mallory_code = totp_code(str(mallory["secret"]), clock.now())
    for code in (alice_code, mallory_code):
        response = client.post("/v1/users/mallory/verify", json={"code": code})
        assert response.json() == {"verified": False}, "the moved ciphertext fails closed"
    assert client.post("/v1/users/alice/verify", json={"code": alice_code}).json()["verified"]
