"""Test helpers: codes from oathtool (an independent implementation), and small API shortcuts."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from tests.conftest import PG_ADMIN_URL

T = TypeVar("T")


def race(attempt: Callable[[], T], *, threads: int) -> list[T]:
    """Run ``attempt`` in ``threads`` threads released at once; the results, or the first error."""
    barrier = threading.Barrier(threads)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            outcome = attempt()
        except BaseException as exc:  # raised in the test's thread below
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(outcome)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return results


def oathtool(*args: str) -> list[str]:
    if shutil.which("oathtool") is None:
        pytest.fail(
            "oathtool is not installed; the test command installs it (apt-get install oathtool)"
        )
    out = subprocess.run(["oathtool", *args], check=True, capture_output=True, text=True).stdout
    return out.split()


def totp_code(
    secret: str, at: datetime, *, algorithm: str = "SHA1", digits: int = 6, period: int = 30
) -> str:
    return oathtool(
        f"--totp={algorithm}",
        "-b",
        "-d",
        str(digits),
        "-s",
        f"{period}s",
        "-N",
        f"@{int(at.timestamp())}",
        secret,
    )[0]


def hotp_code(secret: str, counter: int, *, algorithm: str = "SHA1", digits: int = 6) -> str:
    """HOTP(counter) through oathtool. For SHA-256/512, TOTP with a one-second step at time
    ``counter`` is exactly HOTP with that hash (RFC 6238 section 4), which oathtool supports."""
    if algorithm == "SHA1":
        return oathtool("--hotp", "-b", "-d", str(digits), "-c", str(counter), secret)[0]
    return oathtool(
        f"--totp={algorithm}", "-b", "-d", str(digits), "-s", "1s", "-N", f"@{counter}", secret
    )[0]


def create_user(client: TestClient, user_id: str = "alice", **fields: str) -> dict[str, object]:
    response = client.post("/v1/users", json={"id": user_id, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def enroll(
    client: TestClient,
    user_id: str = "alice",
    *,
    headers: dict[str, str] | None = None,
    **options: object,
) -> dict[str, object]:
    response = client.post(
        f"/v1/users/{user_id}/factors", json={"type": "totp", **options}, headers=headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def enroll_confirmed_totp(
    client: TestClient,
    at: datetime,
    user_id: str = "alice",
    *,
    headers: dict[str, str] | None = None,
    **options: object,
) -> dict[str, object]:
    """The factor as enrolled (with its secret), plus the ``assurance_token`` its confirmation
    gave. ``headers``: a step-up (see :func:`step_up`) if the user already has a factor."""
    factor = enroll(client, user_id, headers=headers, **options)
    code = totp_code(
        str(factor["secret"]),
        at,
        algorithm=str(factor["algorithm"]),
        digits=int(str(factor["digits"])),
        period=int(str(factor["period"])),
    )
    response = client.post(
        f"/v1/users/{user_id}/factors/{factor['id']}/confirm", json={"code": code}, headers=headers
    )
    assert response.status_code == 200, response.text
    factor["assurance_token"] = response.json()["assurance_token"]
    return factor


ASSURANCE = "Sparekey-Assurance"
OVERRIDE = {ASSURANCE: "override", "Sparekey-Override-Reason": "test setup"}
"""An administrator's audited override of step-up (the ``client`` fixture's key is admin)."""


def assured(token: object) -> dict[str, str]:
    return {ASSURANCE: str(token)}


def step_up(client: TestClient, code: str, user_id: str = "alice") -> dict[str, str]:
    """Headers carrying the assurance token of a real, successful verification with ``code``."""
    answer = client.post(f"/v1/users/{user_id}/verify", json={"code": code}).json()
    assert answer["verified"] is True, answer
    return assured(answer["assurance_token"])


def new_pg_database(prefix: str) -> str:
    """A new, empty PostgreSQL database named after ``prefix``; its URL."""
    name = f"{prefix}_{os.getpid()}_{random.randrange(10**9)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    """Drop the database of ``url``, ending whatever sessions it still has."""
    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextmanager
def pg_database(prefix: str) -> Iterator[str]:
    """A PostgreSQL database of the block's own (its URL), dropped after it."""
    url = new_pg_database(prefix)
    try:
        yield url
    finally:
        drop_pg_database(url)
