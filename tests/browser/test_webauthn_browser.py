"""WebAuthn in a real browser: Chromium (Debian's) with virtual authenticators over CDP, driven by
Playwright, on a page served by a real Sparekey server on http://localhost:PORT that calls the API.
"""

from __future__ import annotations

import base64
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from playwright.sync_api import Browser, CDPSession, Page, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from sparekey.api import create_app
from sparekey.domain.models import Scope
from sparekey.runtime import Sparekey, initialize
from sparekey.services.assurance import Assurance
from sparekey.settings import load_settings
from tests.cli.test_cli import _free_port
from tests.softauthn import b64url, b64url_decode

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Sparekey WebAuthn test page</title></head>
<body><h1>WebAuthn test page</h1>
<script>
const api = (token, path, body, assurance) => fetch(path, {
  method: "POST",
  headers: {
    "Authorization": "Bearer " + token,
    "Content-Type": "application/json",
    ...(assurance ? {"Sparekey-Assurance": assurance} : {}),
  },
  body: JSON.stringify(body || {}),
}).then(async r => ({status: r.status, body: await r.json()}));

// The browser side alone: options JSON in, credential JSON out.
async function create(options) {
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options);
  const signal = AbortSignal.timeout(10000);  // a test never waits on a missing authenticator
  return (await navigator.credentials.create({publicKey, signal})).toJSON();
}
async function get(options) {
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
  const signal = AbortSignal.timeout(10000);
  return (await navigator.credentials.get({publicKey, signal})).toJSON();
}

// What an application's page does: ask Sparekey for options, ask the browser, send the answer.
// A user who already has a factor steps up first: `assurance` is a sign-in's assurance_token.
async function register(token, userId, label, assurance) {
  const begun = await api(token, `/v1/users/${userId}/webauthn/registrations`, {}, assurance);
  const credential = await create(begun.body.options);
  const body = {credential, label};
  return api(token, `/v1/users/${userId}/webauthn/registrations/verify`, body, assurance);
}
async function signIn(token, userId) {
  const begun = await api(token, "/v1/webauthn/authentications", userId ? {user_id: userId} : {});
  if (begun.status !== 200) return begun;
  const credential = await get(begun.body.options);
  const answer = await api(token, "/v1/webauthn/authentications/verify", {credential});
  return {...answer, credential};
}
</script></body></html>
"""


async def _page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


class ServerThread:
    """uvicorn serving an ASGI app on 127.0.0.1:port in a thread; browsers use localhost."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://localhost:{port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                pytest.fail("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Site:
    url: str
    token: str
    app: Sparekey


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Chromium is not installed; the test command installs it (apt chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A real Sparekey (SQLite) on its own port, with the test page at /test-page."""
    port = _free_port()
    settings = load_settings(tmp_path / "data", port=port)
    initialize(settings)
    app = Sparekey.open(settings)
    token = app.api_keys.create(name="page", scopes=[Scope.MANAGE]).token
    api = create_app(app)
    api.add_route("/test-page", _page)
    try:
        with ServerThread(api, port) as server:
            yield Site(url=server.url, token=token, app=app)
    finally:
        app.close()


class Authenticators:
    """Virtual authenticators in one browser context, switched on and off one at a time."""

    def __init__(self, cdp: CDPSession) -> None:
        self.cdp = cdp
        self.ids: list[str] = []
        cdp.send("WebAuthn.enable", {"enableUI": False})

    def add(self, *, transport: str = "internal", resident: bool = True) -> str:
        options = {
            "protocol": "ctap2",
            "transport": transport,
            "hasResidentKey": resident,
            "hasUserVerification": True,
            "isUserVerified": True,
            "automaticPresenceSimulation": True,
        }
        added = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})
        self.ids.append(added["authenticatorId"])
        self.use(added["authenticatorId"])
        return str(added["authenticatorId"])

    def use(self, authenticator_id: str) -> None:
        """Only this one answers (a person touching one key of several)."""
        for other in self.ids:
            self.cdp.send(
                "WebAuthn.setAutomaticPresenceSimulation",
                {"authenticatorId": other, "enabled": other == authenticator_id},
            )

    def credentials(self, authenticator_id: str) -> list[dict[str, Any]]:
        found = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
        return list(found["credentials"])


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    opened.goto(f"{site.url}/test-page")
    yield opened
    context.close()


@pytest.fixture
def keys(page: Page) -> Authenticators:
    return Authenticators(page.context.new_cdp_session(page))


def register(
    page: Page, site: Site, user_id: str, label: str | None = None, assurance: str | None = None
) -> Any:
    return page.evaluate(
        "([t, u, l, a]) => register(t, u, l, a)", [site.token, user_id, label, assurance]
    )


def sign_in(page: Page, site: Site, user_id: str | None) -> Any:
    return page.evaluate("([t, u]) => signIn(t, u)", [site.token, user_id])


def verify(site: Site, credential: dict[str, Any]) -> Any:
    answer = httpx2.post(
        f"{site.url}/v1/webauthn/authentications/verify",
        json={"credential": credential},
        headers={"Authorization": f"Bearer {site.token}"},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def new_user(site: Site, user_id: str) -> None:
    site.app.users.create(user_id=user_id, display_name=user_id.title(), email=None)


def test_two_authenticators_register_for_one_user_and_each_signs_in(
    page: Page, site: Site, keys: Authenticators
) -> None:
    new_user(site, "alice")
    laptop = keys.add(transport="internal")
    made = register(page, site, "alice", "Laptop")
    assert made["status"] == 201, made
    stepped_up = sign_in(page, site, "alice")["body"]["assurance_token"]  # with the laptop
    usb = keys.add(transport="usb", resident=False)
    second = register(page, site, "alice", "Blue key", stepped_up)
    assert second["status"] == 201, second
    assert second["body"]["webauthn"]["transports"] == ["usb"]
    assert made["body"]["webauthn"]["discoverable"] is True
    factors = {f.label: f.id for f in site.app.factors.list("alice")}
    assert set(factors) == {"Laptop", "Blue key"}

    for authenticator, label in ((laptop, "Laptop"), (usb, "Blue key")):
        keys.use(authenticator)
        answer = sign_in(page, site, "alice")
        assert str(answer["body"].pop("assurance_token")).startswith("sat1.")
        assert answer["body"] == {
            "verified": True,
            "user_id": "alice",
            "factor_id": factors[label],
        }, answer


def test_the_same_authenticator_cannot_register_twice(
    page: Page, site: Site, keys: Authenticators
) -> None:
    new_user(site, "alice")
    keys.add()
    assert register(page, site, "alice")["status"] == 201
    stepped_up = sign_in(page, site, "alice")["body"]["assurance_token"]
    with pytest.raises(Exception, match="InvalidStateError"):
        register(page, site, "alice", None, stepped_up)  # excludeCredentials: the browser refuses
    assert len(site.app.factors.list("alice")) == 1


def test_a_passkey_signs_in_without_a_user_name(
    page: Page, site: Site, keys: Authenticators
) -> None:
    new_user(site, "bob")
    keys.add(resident=True)
    assert register(page, site, "bob")["status"] == 201
    answer = sign_in(page, site, None)
    assert answer["body"]["verified"] is True
    assert answer["body"]["user_id"] == "bob"
    assert answer["credential"]["response"]["userHandle"], "the browser sent the user handle"


def test_a_removed_credential_can_no_longer_sign_in(
    page: Page, site: Site, keys: Authenticators
) -> None:
    new_user(site, "alice")
    keys.add(resident=True)
    factor = register(page, site, "alice")["body"]
    stepped_up = Assurance(token=sign_in(page, site, "alice")["body"]["assurance_token"])
    # her only factor: removing it takes an administrator's force
    site.app.factors.delete("alice", factor["id"], assurance=stepped_up, force=True)
    assert sign_in(page, site, "alice")["body"]["type"] == "/problems/no-credentials"
    answer = sign_in(page, site, None)  # the authenticator still holds it
    assert answer["body"]["verified"] is False


def test_replayed_tampered_and_foreign_origin_assertions_are_refused(
    page: Page, site: Site, keys: Authenticators
) -> None:
    new_user(site, "alice")
    keys.add()
    assert register(page, site, "alice")["status"] == 201
    first = sign_in(page, site, "alice")
    assert first["body"]["verified"] is True
    assert verify(site, first["credential"])["verified"] is False, "a replay"

    begun = site.app.webauthn.begin_authentication("alice")
    tampered = page.evaluate("(o) => get(o)", begun)
    signature = bytearray(b64url_decode(tampered["response"]["signature"]))
    signature[8] ^= 0x01
    tampered["response"]["signature"] = b64url(bytes(signature))
    assert verify(site, tampered)["verified"] is False

    other_port = _free_port()
    elsewhere = Starlette(routes=[Route("/test-page", _page)])
    with ServerThread(elsewhere, other_port) as other:
        page.goto(f"{other.url}/test-page")  # same rp id (localhost), another origin
        begun = site.app.webauthn.begin_authentication("alice")
        credential = page.evaluate("(o) => get(o)", begun)
        assert credential["id"]
        assert verify(site, credential)["verified"] is False
    reasons = [
        r.details.get("reason", "") for r in site.app.audit.export() if r.event == "verify.failed"
    ]
    assert any("origin" in str(reason) for reason in reasons), reasons


def test_a_cloned_authenticator_is_caught_by_its_counter(
    page: Page, site: Site, keys: Authenticators
) -> None:
    new_user(site, "alice")
    authenticator = keys.add()
    assert register(page, site, "alice")["status"] == 201
    for _ in range(2):
        assert sign_in(page, site, "alice")["body"]["verified"] is True
    [credential] = keys.credentials(authenticator)
    assert credential["signCount"] >= 2
    # A copy of the key made when its counter was lower: same private key, counter 0.
    keys.cdp.send(
        "WebAuthn.removeCredential",
        {"authenticatorId": authenticator, "credentialId": credential["credentialId"]},
    )
    keys.cdp.send(
        "WebAuthn.addCredential",
        {"authenticatorId": authenticator, "credential": {**credential, "signCount": 0}},
    )
    cloned = sign_in(page, site, "alice")
    assert cloned["body"]["verified"] is False
    events = [r.event for r in site.app.audit.export()]
    assert "webauthn.counter_regressed" in events
    raw_id = base64.b64decode(credential["credentialId"])  # CDP ids are standard base64
    assert b64url(raw_id) == cloned["credential"]["rawId"]
