"""The admin console in a real browser (Debian's Chromium, Playwright), served by a real Sparekey
on http://localhost:PORT: an admin signs in with password and authenticator code, a helpdesk
operator sets up their app on first sign-in, opens a case and checks the identity, the admin
approves, and the user cancels the recovery from their own security page; an operator sets up a
security key (Chromium's virtual authenticator) on first sign-in and signs in with it again.

Screenshots are saved under test-artifacts/console/ (git-ignored) for review.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest
from playwright.sync_api import Browser, Page, expect

from sparekey.api import create_app
from sparekey.domain.models import FactorType, OperatorRole, Scope
from sparekey.protocols.otpauth import b32encode
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

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
PASSWORD = "a long console password"


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


def person(browser: Browser) -> Page:  # noqa: F811
    """A browser of their own (own cookies) for each person."""
    return browser.new_context(viewport={"width": 1100, "height": 900}).new_page()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def admin_with_app(app: Sparekey, name: str) -> str:
    """An admin with a password and a confirmed authenticator app (confirmed with the previous
    step's code, so the current one is free for signing in); the app's secret."""
    made = app.operators.create(name, role=OperatorRole.ADMIN)
    app.operators.set_password(name, PASSWORD)
    enrolled = app.factors.enroll(made.operator.user_id, type=FactorType.TOTP)
    secret = b32encode(enrolled.secret)
    earlier = app.clock.now() - timedelta(seconds=30)
    app.factors.confirm(made.operator.user_id, enrolled.factor.id, code=totp_code(secret, earlier))
    return secret


def fill_sign_in(page: Page, site: Site, name: str, code: str = "") -> None:
    page.goto(f"{site.url}/console")
    expect(page).to_have_url(f"{site.url}/console/sign-in")
    page.get_by_label("Operator name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Code from your authenticator app").fill(code)


def test_sign_in_a_case_approved_and_the_user_cancels_it(
    site: Site,
    browser: Browser,  # noqa: F811
) -> None:
    app = site.app
    app.users.create(user_id="alice", display_name="Alice Liddell", email="alice@example.com")
    ada_secret = admin_with_app(app, "ada")
    app.operators.create("hank", role=OperatorRole.HELPDESK)
    app.operators.set_password("hank", PASSWORD)

    # The admin: a wrong code is refused without saying what was wrong, then the right one
    ada = person(browser)
    fill_sign_in(ada, site, "ada", "000000")
    shot(ada, "01-sign-in")
    ada.get_by_role("button", name="Sign in").click()
    expect(ada.get_by_role("alert")).to_contain_text("The name, password or code was not accepted")
    fill_sign_in(ada, site, "ada", totp_code(ada_secret, app.clock.now()))
    ada.get_by_role("button", name="Sign in").click()
    expect(ada).to_have_url(f"{site.url}/console")
    expect(ada.get_by_role("heading", name="Signed in as ada")).to_be_visible()
    shot(ada, "02-home")

    # The helpdesk operator's first sign-in: set up an authenticator app
    hank = person(browser)
    fill_sign_in(hank, site, "hank")
    hank.get_by_role("button", name="Sign in").click()
    expect(hank).to_have_url(f"{site.url}/console/setup")
    expect(
        hank.get_by_alt_text("QR code to add Sparekey to your authenticator app")
    ).to_be_visible()
    shot(hank, "03-first-sign-in-setup")
    secret = hank.get_by_label("Setup key").inner_text().replace(" ", "")
    hank.get_by_label("Code from the app").fill(totp_code(secret, app.clock.now()))
    hank.get_by_role("button", name="Confirm and sign in").click()
    expect(hank.get_by_role("heading", name="Signed in as hank")).to_be_visible()

    # ... opens a case for alice and checks her identity
    hank.get_by_role("link", name="Recovery cases").click()
    hank.get_by_label("User id").fill("alice")
    hank.get_by_label("Reason").fill("lost phone, called the helpdesk")
    hank.get_by_role("button", name="Open the case").click()
    expect(hank.get_by_role("status")).to_contain_text("The case was opened")
    expect(hank.get_by_role("button", name="Approve")).to_have_count(0)
    hank.get_by_label("government id").check()
    hank.get_by_label("video call").check()
    shot(hank, "04-identity-check")
    hank.get_by_role("button", name="Record the identity check").click()
    expect(hank.get_by_role("status")).to_contain_text("The identity check was recorded")
    case_url = hank.url.split("?")[0]

    # The admin sees it in the queue and approves: the waiting period starts
    ada.get_by_role("link", name="Recovery cases").click()
    expect(ada.get_by_role("cell", name="alice")).to_be_visible()
    shot(ada, "05-queue")
    ada.goto(case_url)
    expect(ada.get_by_text("checked by hank: government_id, video_call")).to_be_visible()
    ada.get_by_role("button", name="Approve").click()
    expect(ada.get_by_role("status")).to_contain_text("Your approval was recorded")
    expect(ada.get_by_text(re.compile(r"waiting · ready in (24 h 0|23 h 59) min"))).to_be_visible()
    shot(ada, "06-approved-waiting")

    # The user sees the recovery on their own page and cancels it
    alice = person(browser)
    link = httpx2.post(
        f"{site.url}/v1/users/alice/portal-links",
        headers={"Authorization": f"Bearer {site.token}"},
    )
    assert link.status_code == 201, link.text
    alice.goto(str(link.json()["url"]))
    expect(
        alice.get_by_role("heading", name="Someone asked to recover your account")
    ).to_be_visible()
    alice.get_by_role("button", name="Cancel this recovery").click()
    expect(alice.get_by_role("status")).to_contain_text("The recovery was cancelled")

    ada.goto(case_url)
    expect(ada.get_by_text("cancelled by the user on their security page")).to_be_visible()
    expect(ada.get_by_role("button", name="Deny")).to_have_count(0)
    shot(ada, "07-cancelled")

    events = [r.event for r in app.audit.query(events=("console.signed_in",)).records]
    assert len(events) == 2
    failed = app.audit.query(events=("console.sign_in_failed",)).records
    assert [r.details["reason"] for r in failed] == ["code"]
    for page in (ada, hank, alice):
        page.context.close()


def test_readiness_audit_and_api_key_pages(
    site: Site,
    browser: Browser,  # noqa: F811
) -> None:
    app = site.app
    for n in range(6):
        app.users.create(user_id=f"user{n}", display_name=None, email=None)
    ada_secret = admin_with_app(app, "ada")
    ada = person(browser)
    fill_sign_in(ada, site, "ada", totp_code(ada_secret, app.clock.now()))
    ada.get_by_role("button", name="Sign in").click()
    expect(ada.get_by_role("heading", name="Signed in as ada")).to_be_visible()

    ada.get_by_role("link", name="Readiness").click()
    expect(ada.get_by_role("img", name="Users by readiness score")).to_be_visible()
    shot(ada, "08-readiness")

    ada.get_by_role("link", name="Audit log").click()
    ada.get_by_role("button", name="Verify the chain").click()
    expect(ada.get_by_role("status")).to_contain_text("The chain is verified.")
    ada.get_by_label("Event").fill("user.created")
    ada.get_by_role("button", name="Filter").click()
    expect(ada.get_by_role("cell", name="user.created")).to_have_count(6)
    shot(ada, "09-audit")

    ada.get_by_role("link", name="API keys").click()
    ada.get_by_label("Name").fill("Billing app")
    ada.get_by_label("manage").check()
    ada.get_by_role("button", name="Create the key").click()
    token = ada.get_by_label("API key token").inner_text()
    assert token.startswith("sk_")
    shot(ada, "10-api-key-created")
    ada.get_by_role("button", name="Revoke “Billing app” now").click()
    expect(ada.get_by_role("status")).to_contain_text("The key was revoked")
    shot(ada, "11-api-keys")
    answer = httpx2.get(
        f"{site.url}/v1/users/user0/readiness", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 401
    ada.context.close()


def test_an_operator_sets_up_a_security_key_and_signs_in_with_it(
    browser: Browser,  # noqa: F811
    site: Site,
) -> None:
    site.app.operators.create("kim", role=OperatorRole.AUDITOR)
    site.app.operators.set_password("kim", PASSWORD)
    kim = person(browser)
    keys = Authenticators(kim.context.new_cdp_session(kim))
    key = keys.add()
    fill_sign_in(kim, site, "kim")
    kim.get_by_role("button", name="Sign in").click()
    expect(kim).to_have_url(f"{site.url}/console/setup")
    kim.get_by_role("button", name="Use a security key instead").click()
    expect(kim).to_have_url(f"{site.url}/console")
    expect(kim.get_by_role("heading", name="Signed in as kim")).to_be_visible()
    assert len(keys.credentials(key)) == 1

    kim.get_by_role("button", name="Sign out").click()
    fill_sign_in(kim, site, "kim")
    kim.get_by_role("button", name="Use a security key").click()
    expect(kim).to_have_url(f"{site.url}/console/key")
    shot(kim, "key-step")
    kim.get_by_role("button", name="Use your security key or passkey").click()
    expect(kim).to_have_url(f"{site.url}/console")
    expect(kim.get_by_role("heading", name="Signed in as kim")).to_be_visible()
    kim.context.close()
