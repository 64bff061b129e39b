"""The self-service security page in a real browser (Debian's Chromium, Playwright), served by a
real Sparekey on http://localhost:PORT: whole journeys, as a person would make them.

Screenshots of the main pages are saved under test-artifacts/portal/ (git-ignored) for review.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx2
import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from sparekey.api import create_app
from sparekey.domain.models import Caller, Scope
from sparekey.runtime import Sparekey, initialize
from sparekey.settings import load_settings
from tests.browser.test_webauthn_browser import (
    Authenticators,
    ServerThread,
    Site,
    browser,  # noqa: F401  (the module-scoped Chromium fixture)
)
from tests.cli.test_cli import _free_port
from tests.helpers import totp_code

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "portal"
CODE = re.compile(r"^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    port = _free_port()
    settings = load_settings(tmp_path / "data", port=port)
    initialize(settings)
    app = Sparekey.open(settings)
    token = app.api_keys.create(name="application", scopes=[Scope.MANAGE]).token
    try:
        with ServerThread(create_app(app), port) as server:
            yield Site(url=server.url, token=token, app=app)
    finally:
        app.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    yield context.new_page()
    context.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def portal_link(site: Site, user_id: str) -> str:
    """What the application does: ask for a link, and send the browser there."""
    answer = httpx2.post(
        f"{site.url}/v1/users/{user_id}/portal-links",
        headers={"Authorization": f"Bearer {site.token}"},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["url"])


def test_a_user_sets_up_an_app_backup_codes_a_drill_and_a_passkey(
    site: Site, page: Page, tmp_path: Path
) -> None:
    site.app.users.create(user_id="alice", display_name="Alice Liddell", email="alice@example.com")
    page.goto(portal_link(site, "alice"))
    assert urlparse(page.url).path == "/portal"
    assert "token" not in page.url
    expect(page.get_by_role("heading", name="Your account's safety net")).to_be_visible()
    shot(page, "01-overview-new-user")

    # An authenticator app: the QR code decoded from the screen, the code from oathtool
    page.get_by_role("link", name="Enroll an authenticator").first.click()
    page.get_by_label("A name for it").fill("Phone")
    page.get_by_role("button", name="Show the QR code").click()
    expect(page.get_by_role("heading", name="Scan this code with your app")).to_be_visible()
    shot(page, "02-authenticator-qr")
    qr_file = tmp_path / "qr.png"
    page.locator("img.qr").screenshot(path=str(qr_file))
    # A phone's app reads QR codes only. zxing-cpp once gave two results for this screenshot,
    # so the check is that every QR code read from it says the one same thing
    only_qr = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    texts = {d.text for d in zxingcpp.read_barcodes(Image.open(qr_file), formats=only_qr)}
    assert len(texts) == 1
    uri = urlparse(texts.pop())
    assert uri.scheme == "otpauth"
    secret = parse_qs(uri.query)["secret"][0]
    shown = page.locator(".secret code").inner_text().replace(" ", "")
    assert shown == secret
    page.get_by_label("Code from the app").fill(totp_code(secret, datetime.now(UTC)))
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status")).to_contain_text("Your authenticator app is set up")
    expect(page.locator(".factor-name", has_text="Phone")).to_be_visible()

    # Backup codes: shown once on the answer, downloadable, then one proven saved
    page.get_by_role("link", name="Backup codes").first.click()
    page.get_by_role("button", name="Generate backup codes").click()
    expect(page.get_by_role("heading", name="Your new backup codes")).to_be_visible()
    codes = page.locator(".codes code").all_inner_texts()
    assert len(codes) == 10
    assert all(CODE.match(c) for c in codes)
    download = page.get_by_role("link", name="Download as text")
    assert download.get_attribute("download") == "sparekey-backup-codes.txt"
    shot(page, "03-backup-codes")
    page.emulate_media(media="print")
    shot(page, "03b-backup-codes-print")
    page.emulate_media(media="screen")
    page.get_by_label("A backup code").fill(codes[3].lower().replace("-", " "))
    page.get_by_role("button", name="Check").click()
    expect(page.get_by_role("status")).to_contain_text("That code works")
    shot(page, "04-drill")

    # A passkey, with a virtual authenticator (the step-up of the app's confirmation holds)
    keys = Authenticators(page.context.new_cdp_session(page))
    keys.add()
    page.goto(f"{site.url}/portal/factors/new/key")
    page.get_by_label("A name for it").fill("Laptop")
    shot(page, "05-add-passkey")
    page.get_by_role("button", name="Add security key or passkey").click()
    expect(page.get_by_role("status")).to_contain_text("security key or passkey is registered")
    expect(page.locator(".factor-name", has_text="Laptop")).to_be_visible()
    shot(page, "06-overview-protected")

    # The same page on a phone-sized screen
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "07-overview-phone")

    events = [r.event for r in site.app.audit.query(user_id="alice").records]
    for event in ("portal.signed_in", "factor.confirmed", "backup_codes.generated"):
        assert event in events
    assert site.app.readiness.assess("alice").backup_codes_proven_at is not None


def test_a_fresh_session_steps_up_with_the_passkey_then_acts(site: Site, page: Page) -> None:
    site.app.users.create(user_id="bea", display_name=None, email="bea@example.com")
    keys = Authenticators(page.context.new_cdp_session(page))
    keys.add()
    page.goto(portal_link(site, "bea"))
    page.goto(f"{site.url}/portal/factors/new/key")  # a first factor: no step-up yet
    page.get_by_role("button", name="Add security key or passkey").click()
    expect(page.get_by_role("status")).to_contain_text("registered")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    page.goto(portal_link(site, "bea"))
    page.goto(f"{site.url}/portal/backup-codes")
    page.get_by_role("button", name="Generate backup codes").click()
    expect(page.get_by_role("heading", name="Confirm it's you")).to_be_visible()
    shot(page, "08-step-up")
    page.get_by_role("button", name="Use your security key or passkey").click()
    page.wait_for_url(f"{site.url}/portal/backup-codes")
    page.get_by_role("button", name="Generate backup codes").click()
    expect(page.get_by_role("heading", name="Your new backup codes")).to_be_visible()


def test_the_user_cancels_a_recovery_and_csrf_is_refused(site: Site, page: Page) -> None:
    app = site.app
    app.users.create(user_id="cy", display_name=None, email="cy@example.com")
    case = app.recovery.request(
        "cy",
        reason="says the phone fell in a lake",
        caller=Caller(type="operator", id="op_helpdesk"),
    )
    page.goto(portal_link(site, "cy"))
    expect(
        page.get_by_role("heading", name="Someone asked to recover your account")
    ).to_be_visible()
    shot(page, "09-recovery-banner")

    # A request without the form's token is refused, and changes nothing
    status = page.evaluate(
        "fetch('/portal/recovery/cancel', {method: 'POST', body: new URLSearchParams({})})"
        ".then(r => r.status)"
    )
    assert status == 403
    assert app.recovery.get(case.id).state.open

    page.get_by_role("button", name="Cancel this recovery").click()
    expect(page.get_by_role("status")).to_contain_text("The recovery was cancelled")
    assert not app.recovery.get(case.id).state.open
    page.goto(f"{site.url}/portal/activity")
    expect(page.get_by_role("cell", name="A recovery was cancelled")).to_be_visible()
    shot(page, "10-activity")

    # Keyboard only: the skip link, then the tabs, are reachable
    page.goto(f"{site.url}/portal/contacts")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    shot(page, "11-contacts")
