"""What docs/security.md claims of web sessions, each shown here: a deleted user's sessions end
with them, a busy session still ends at its absolute deadline, the database keeps only digests
of the tokens a browser holds, and proxy headers count only from the trusted proxy."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from sparekey.api import create_app
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey
from sparekey.settings import Settings
from tests.cli.test_cli import SPAREKEY, _free_port
from tests.helpers import create_user, enroll_confirmed_totp, totp_code
from tests.storage.test_secrets_at_rest import _all_bytes
from tests.web.test_portal import link, sign_in


@pytest.fixture
def browser(sparekey: Sparekey) -> Iterator[TestClient]:
    with TestClient(create_app(sparekey), raise_server_exceptions=False) as client:
        yield client


def test_deleting_a_user_ends_their_sessions_even_if_the_id_comes_back(
    client: TestClient, browser: TestClient, sparekey: Sparekey
) -> None:
    """User ids are the application's own and may be given out again. A session left behind
    would open the new user's page, where a user without factors enrolls with no step-up."""
    create_user(client, "alice")
    csrf = sign_in(client, browser)
    assert client.delete("/v1/users/alice").status_code == 204
    create_user(client, "alice")
    assert browser.get("/portal").status_code == 401
    added = browser.post("/portal/factors/new/app", data={"csrf_token": csrf, "label": "Mine"})
    assert added.status_code == 401
    assert client.get("/v1/users/alice/factors").json()["factors"] == []


def test_a_busy_session_still_ends_twelve_hours_after_sign_in(
    client: TestClient, browser: TestClient, clock: FixedClock
) -> None:
    create_user(client, "alice")
    sign_in(client, browser)
    for _ in range(24):  # a request every 29 minutes keeps the idle deadline moving
        clock.advance(29 * 60)
        assert browser.get("/portal").status_code == 200
    clock.advance(25 * 60)  # 12 h 1 min after sign-in, 25 min after the last request
    ended = browser.get("/portal")
    assert ended.status_code == 401
    assert "Your session has ended" in ended.text


def test_the_database_keeps_only_digests_of_session_and_link_tokens(
    client: TestClient,
    browser: TestClient,
    clock: FixedClock,
    settings: Settings,
    backend: str,
) -> None:
    """Someone who reads the database cannot ride a session or open a portal link."""
    create_user(client, "alice")
    factor = enroll_confirmed_totp(client, clock.now())
    unused = link(client).removeprefix("/portal/start?token=")
    csrf = sign_in(client, browser)
    clock.advance(30)
    code = totp_code(str(factor["secret"]), clock.now())
    stepped = browser.post("/portal/step-up", data={"csrf_token": csrf, "code": code})
    assert stepped.status_code == 200, stepped.text
    cookie = str(browser.cookies.get("sparekey_portal"))
    assert len(cookie) >= 43  # 256 random bits
    stored = _all_bytes(settings, backend)
    for secret in (cookie, unused):
        assert secret.encode() not in stored
    assert b"sat1." not in stored, "nor the session's step-up token"


def _serve(data_dir: Path, port: int, **settings: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAREKEY_")}
    env["SPAREKEY_DATA_DIR"] = str(data_dir)
    env.update({f"SPAREKEY_{name.upper()}": value for name, value in settings.items()})
    process = subprocess.Popen(
        [SPAREKEY, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return process
        except httpx2.TransportError:
            time.sleep(0.2)
    process.kill()
    pytest.fail("the server did not answer within 30 s")


def test_forwarded_headers_count_only_from_the_trusted_proxy(tmp_path: Path) -> None:
    """A client that is not the proxy cannot claim HTTPS or another address: its cookie is not
    marked Secure, and the audit log records its own address. From the proxy, both count."""
    port = _free_port()
    process = _serve(tmp_path / "data", port, forwarded_allow_ips="127.0.0.2")
    try:
        token = process.stdout.readline().strip() if process.stdout else ""
        assert token.startswith("sk_")
        api = httpx2.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
        )
        assert api.post("/v1/users", json={"id": "alice"}).status_code == 201
        claims = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
        seen: dict[str, Any] = {}
        for source in ("127.0.0.1", "127.0.0.2"):  # an ordinary client, then the proxy
            url = api.post("/v1/users/alice/portal-links").json()["url"]
            path = url.split("/portal/", 1)[1]
            transport = httpx2.HTTPTransport(local_address=source)
            with httpx2.Client(base_url=f"http://127.0.0.1:{port}", transport=transport) as web:
                opened = web.get(f"/portal/{path}", headers=claims, follow_redirects=False)
            assert opened.status_code == 303, opened.text
            seen[source] = opened.headers["set-cookie"]
        signed_in = api.get("/v1/audit", params={"event": "portal.signed_in"}).json()["events"]
        api.close()
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert "Secure" not in seen["127.0.0.1"]
    assert "Secure" in seen["127.0.0.2"]
    assert sorted(e["ip"] for e in signed_in) == ["127.0.0.1", "203.0.113.9"]
