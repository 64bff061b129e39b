"""The self-service pages in process (TestClient), on SQLite and PostgreSQL: portal links,
sessions and their cookie, CSRF, step-up, bad input shown on the page, security headers.
The journeys in a real browser are in tests/browser/test_portal_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sparekey.api import create_app
from sparekey.domain.models import Caller
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey
from sparekey.web.security import CONTENT_SECURITY_POLICY
from tests.helpers import create_user, enroll_confirmed_totp, totp_code

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def browser(sparekey: Sparekey) -> Iterator[TestClient]:
    """A browser: no API key, follows nothing on its own."""
    with TestClient(create_app(sparekey), raise_server_exceptions=False) as client:
        yield client


def link(client: TestClient, user_id: str = "alice") -> str:
    answer = client.post(f"/v1/users/{user_id}/portal-links")
    assert answer.status_code == 201, answer.text
    url = str(answer.json()["url"])
    assert url.startswith("http://localhost:8000/portal/start?token=")
    return url.removeprefix("http://localhost:8000")


def sign_in(client: TestClient, browser: TestClient, user_id: str = "alice") -> str:
    """Open a fresh portal link; the overview's CSRF token."""
    opened = browser.get(link(client, user_id), follow_redirects=False)
    assert opened.status_code == 303
    assert opened.headers["location"] == "/portal"
    page = browser.get("/portal")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


@pytest.fixture
def alice(client: TestClient, clock: FixedClock) -> dict[str, Any]:
    create_user(client, "alice", email="alice@example.com", display_name="Alice Example")
    return enroll_confirmed_totp(client, clock.now())


def test_a_link_starts_a_session_once_and_the_cookie_is_strict(
    client: TestClient, browser: TestClient, alice: dict[str, Any], sparekey: Sparekey
) -> None:
    url = link(client)
    opened = browser.get(url, follow_redirects=False)
    assert opened.status_code == 303
    cookie = opened.headers["set-cookie"]
    assert cookie.startswith("sparekey_portal=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; HTTPS below
    assert "token" not in opened.headers["location"]
    page = browser.get("/portal")
    assert "Alice Example" in page.text
    assert "Signed in as" in page.text

    again = TestClient(create_app(sparekey)).get(url, follow_redirects=False)
    assert again.status_code == 400
    assert "expired or was already used" in again.text
    events = [r.event for r in sparekey.audit.query(user_id="alice").records]
    assert "portal.link_created" in events
    assert "portal.signed_in" in events


def test_the_cookie_is_secure_over_https(
    client: TestClient, alice: dict[str, Any], sparekey: Sparekey
) -> None:
    with TestClient(create_app(sparekey), base_url="https://sparekey.example") as secure:
        opened = secure.get(link(client), follow_redirects=False)
    assert "Secure" in opened.headers["set-cookie"]


def test_an_expired_link_and_an_idle_session_end(
    client: TestClient, browser: TestClient, alice: dict[str, Any], clock: FixedClock
) -> None:
    url = link(client)
    clock.advance(301)
    assert browser.get(url).status_code == 400

    sign_in(client, browser)
    clock.advance(29 * 60)
    assert browser.get("/portal").status_code == 200  # in use: the idle deadline moves on
    clock.advance(31 * 60)
    ended = browser.get("/portal")
    assert ended.status_code == 401
    assert "Your session has ended" in ended.text
    assert "Traceback" not in ended.text


def test_sign_out_deletes_the_session(
    client: TestClient, browser: TestClient, alice: dict[str, Any], sparekey: Sparekey
) -> None:
    token = sign_in(client, browser)
    cookie = browser.cookies.get("sparekey_portal")
    out = browser.post("/portal/sign-out", data={"csrf_token": token})
    assert out.status_code == 200
    assert "You are signed out" in out.text
    assert browser.get("/portal").status_code == 401
    replay = TestClient(create_app(sparekey), cookies={"sparekey_portal": str(cookie)})
    assert replay.get("/portal").status_code == 401
    assert "portal.signed_out" in [r.event for r in sparekey.audit.query(user_id="alice").records]


def test_a_form_without_the_csrf_token_is_refused(
    client: TestClient, browser: TestClient, alice: dict[str, Any]
) -> None:
    token = sign_in(client, browser)
    factor_id = alice["id"]
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": token[:-1]}):
        refused = browser.post(f"/portal/factors/{factor_id}/lost", data=data)
        assert refused.status_code == 403
        assert "This request was refused" in refused.text
    json_refused = browser.post("/portal/webauthn/registration/options", json={})
    assert json_refused.status_code == 403
    page = browser.get(f"/portal/factors/{factor_id}")
    assert "Active" in page.text  # nothing changed


def test_pages_answer_with_the_security_headers(
    client: TestClient, browser: TestClient, alice: dict[str, Any]
) -> None:
    sign_in(client, browser)
    for path in ("/portal", "/portal/activity", "/portal/no-such-page"):
        answer = browser.get(path)
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["cache-control"] == "no-store"
        assert "<script>" not in answer.text  # no inline script, ever
    missing = browser.get("/portal/no-such-page")
    assert missing.status_code == 404
    assert "text/html" in missing.headers["content-type"]
    css = browser.get("/static/sparekey.css")
    assert css.status_code == 200
    assert "text/css" in css.headers["content-type"]
    api = client.get("/v1/users/alice/factors/nope")  # the API keeps problem+json
    assert api.headers["content-type"] == "application/problem+json"


def test_a_sensitive_change_asks_for_a_step_up_and_bad_codes_are_shown(
    client: TestClient, browser: TestClient, alice: dict[str, Any], clock: FixedClock
) -> None:
    token = sign_in(client, browser)
    asked = browser.post("/portal/backup-codes", data={"csrf_token": token}, follow_redirects=False)
    assert asked.status_code == 303
    assert asked.headers["location"] == "/portal/step-up?next=/portal/backup-codes"

    for code, message in [
        ("", "Enter the code your authenticator app shows"),
        ("000000", "That code was not accepted"),
        ("\x00bad", "Enter the code your authenticator app shows"),
    ]:
        wrong = browser.post(
            "/portal/step-up",
            data={"csrf_token": token, "code": code, "next": "/portal/backup-codes"},
        )
        assert wrong.status_code == 422
        assert message in wrong.text

    clock.advance(30)
    code = totp_code(str(alice["secret"]), clock.now())
    passed = browser.post(
        "/portal/step-up",
        data={"csrf_token": token, "code": code, "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert passed.headers["location"] == "/portal"  # never off-site
    shown = browser.post("/portal/backup-codes", data={"csrf_token": token})
    assert shown.status_code == 200
    codes = re.findall(
        r"<code>([0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4})</code>", shown.text
    )
    assert len(codes) == 10
    assert shown.headers["cache-control"] == "no-store"
    assert "data:text/plain;charset=utf-8," in shown.text


def test_bad_input_is_explained_on_the_page(
    client: TestClient, browser: TestClient, alice: dict[str, Any], clock: FixedClock
) -> None:
    token = sign_in(client, browser)
    factor_id = alice["id"]
    clock.advance(30)
    code = totp_code(str(alice["secret"]), clock.now())
    browser.post("/portal/step-up", data={"csrf_token": token, "code": code, "next": "/portal"})
    cases = [
        (f"/portal/factors/{factor_id}/rename", {"label": ""}, "Enter a name"),
        (f"/portal/factors/{factor_id}/rename", {"label": "x" * 101}, "Enter a name"),
        ("/portal/drill", {"code": ""}, "Enter one of your backup codes"),
        ("/portal/contacts", {"contacts": "not a valid id!"}, "List user ids only"),
        ("/portal/contacts", {"contacts": "bob\ncy"}, "not users of this deployment"),
        ("/portal/contacts", {"contacts": "alice\nbob"}, "cannot be their own trusted contact"),
    ]
    for path, data, message in cases:
        answer = browser.post(path, data={"csrf_token": token, **data})
        assert answer.status_code in (409, 422), (path, answer.status_code)
        assert message in answer.text, (path, re.findall(r"Not done.</strong>([^<]*)", answer.text))
    unknown = browser.get("/portal/factors/fct_nope")
    assert unknown.status_code == 404
    assert "no factor with id" in unknown.text
    last = browser.post(f"/portal/factors/{factor_id}/remove", data={"csrf_token": token})
    assert last.status_code == 409
    assert "last active factor" in last.text
    # Rename works, marking lost works, and the activity page says so in words
    assert (
        browser.post(
            f"/portal/factors/{factor_id}/rename", data={"csrf_token": token, "label": "Old phone"}
        ).url.path
        == "/portal"
    )
    lost = browser.post(f"/portal/factors/{factor_id}/lost", data={"csrf_token": token})
    assert "was marked lost" in lost.text
    again = browser.post(f"/portal/factors/{factor_id}/lost", data={"csrf_token": token})
    assert "already marked lost" in again.text
    activity = browser.get("/portal/activity")
    assert "Marked a factor lost" in activity.text
    assert "Renamed a factor" in activity.text


def test_with_every_factor_lost_adding_one_takes_a_backup_code(
    client: TestClient, browser: TestClient, alice: dict[str, Any], clock: FixedClock
) -> None:
    """A portal session can mark every factor lost, but not then add its own factor."""
    clock.advance(30)
    assurance = {"Sparekey-Assurance": str(alice["assurance_token"])}
    codes = client.post("/v1/users/alice/backup-codes", headers=assurance).json()["codes"]
    token = sign_in(client, browser)
    browser.post(f"/portal/factors/{alice['id']}/lost", data={"csrf_token": token})

    asked = browser.get("/portal/factors/new/app", follow_redirects=False)
    assert asked.headers["location"] == "/portal/step-up?next=/portal/factors/new/app"
    step_up = browser.get(asked.headers["location"])
    assert "Every factor of yours is marked lost" in step_up.text
    refused = browser.post(
        "/portal/factors/new/app",
        data={"csrf_token": token, "label": "Mine"},
        follow_redirects=False,
    )
    assert refused.headers["location"].startswith("/portal/step-up"), "nothing was enrolled"
    assert [f["status"] for f in client.get("/v1/users/alice/factors").json()["factors"]] == [
        "lost"
    ]

    passed = browser.post(
        "/portal/step-up",
        data={"csrf_token": token, "code": codes[0], "next": "/portal/factors/new/app"},
        follow_redirects=False,
    )
    assert passed.headers["location"] == "/portal/factors/new/app"
    added = browser.post("/portal/factors/new/app", data={"csrf_token": token, "label": "Mine"})
    assert added.status_code == 200
    assert "Scan this code with your app" in added.text


def test_a_contact_approves_a_request_after_a_step_up(
    client: TestClient, browser: TestClient, sparekey: Sparekey, clock: FixedClock
) -> None:
    for name in ("alice", "bea", "cy"):
        create_user(client, name)
    bea = enroll_confirmed_totp(client, clock.now(), "bea")
    sparekey.recovery.set_contacts("alice", ["bea", "cy"], caller=Caller(type="system"))
    case = sparekey.recovery.request("alice", approval="contacts", caller=Caller(type="system"))

    token = sign_in(client, browser, "bea")
    assert "A person who trusts you needs help" in browser.get("/portal").text
    page = browser.get("/portal/contacts")
    assert f"/portal/contacts/requests/{case.id}/approve" in page.text
    asked = browser.post(
        f"/portal/contacts/requests/{case.id}/approve",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert asked.headers["location"] == "/portal/step-up?next=/portal/contacts"
    clock.advance(30)
    code = totp_code(str(bea["secret"]), clock.now())
    browser.post(
        "/portal/step-up", data={"csrf_token": token, "code": code, "next": "/portal/contacts"}
    )
    approved = browser.post(
        f"/portal/contacts/requests/{case.id}/approve", data={"csrf_token": token}
    )
    assert "Your approval was recorded" in approved.text
    assert sparekey.recovery.get(case.id).approvals == ("contact:bea",)


def test_a_contact_denies_a_request_they_did_not_expect(
    client: TestClient, browser: TestClient, sparekey: Sparekey, clock: FixedClock
) -> None:
    for name in ("alice", "bea", "cy"):
        create_user(client, name)
    bea = enroll_confirmed_totp(client, clock.now(), "bea")
    sparekey.recovery.set_contacts("alice", ["bea", "cy"], caller=Caller(type="system"))
    case = sparekey.recovery.request("alice", approval="contacts", caller=Caller(type="system"))
    token = sign_in(client, browser, "bea")
    assert f"/portal/contacts/requests/{case.id}/deny" in browser.get("/portal/contacts").text
    clock.advance(30)
    code = totp_code(str(bea["secret"]), clock.now())
    browser.post(
        "/portal/step-up", data={"csrf_token": token, "code": code, "next": "/portal/contacts"}
    )
    denied = browser.post(f"/portal/contacts/requests/{case.id}/deny", data={"csrf_token": token})
    assert "the recovery is stopped" in denied.text
    assert sparekey.recovery.get(case.id).state.value == "denied"
    unknown = browser.post(f"/portal/contacts/requests/{case.id}/maybe", data={"csrf_token": token})
    assert unknown.status_code == 404


def test_the_step_up_kept_with_a_session_is_sealed_at_rest(
    client: TestClient, browser: TestClient, sparekey: Sparekey, clock: FixedClock
) -> None:
    from sqlalchemy import create_engine, text

    create_user(client, "alice")
    alice = enroll_confirmed_totp(client, clock.now(), "alice")
    token = sign_in(client, browser, "alice")
    clock.advance(30)
    code = totp_code(str(alice["secret"]), clock.now())
    stepped = browser.post(
        "/portal/step-up", data={"csrf_token": token, "code": code, "next": "/portal"}
    )
    assert stepped.status_code == 200, stepped.text
    engine = create_engine(sparekey.settings.resolved_database_url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT step_up_token FROM web_sessions")).scalars().all()
    engine.dispose()
    assert [s for s in stored if s], "the step-up is kept with the session"
    assert all("sat1." not in (s or "") for s in stored), "never the assurance token itself"
    # ... and it still opens: a sensitive action goes through without asking again.
    made = browser.post("/portal/backup-codes", data={"csrf_token": token}, follow_redirects=False)
    assert made.status_code == 200, made.headers.get("location")
    assert len(re.findall(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}\b", made.text)) >= 10


def test_the_desktop_authenticator_page_makes_a_token_after_a_step_up_and_revokes_it(
    client: TestClient, browser: TestClient, alice: dict[str, Any], clock: FixedClock
) -> None:
    token = sign_in(client, browser)
    assert 'href="/portal/device-tokens"' in browser.get("/portal").text
    empty = browser.get("/portal/device-tokens")
    assert empty.status_code == 200
    assert "No computer is set up yet" in empty.text
    refused = browser.post("/portal/device-tokens", data={"name": "Laptop"})
    assert refused.status_code == 403  # no CSRF token

    asked = browser.post(
        "/portal/device-tokens",
        data={"csrf_token": token, "name": "Laptop"},
        follow_redirects=False,
    )
    assert asked.status_code == 303
    assert asked.headers["location"] == "/portal/step-up?next=/portal/device-tokens"
    clock.advance(30)
    code = totp_code(str(alice["secret"]), clock.now())
    browser.post(
        "/portal/step-up",
        data={"csrf_token": token, "code": code, "next": "/portal/device-tokens"},
    )
    nameless = browser.post("/portal/device-tokens", data={"csrf_token": token, "name": ""})
    assert nameless.status_code == 422
    assert "Enter a name" in nameless.text

    made = browser.post("/portal/device-tokens", data={"csrf_token": token, "name": "Laptop"})
    assert made.status_code == 200
    assert made.headers["cache-control"] == "no-store"
    shown = re.findall(r"skd_[A-Za-z0-9_-]{43}", made.text)
    assert len(set(shown)) == 1
    device_token = shown[0]
    hint = "skauth backup restore --server http://localhost:8000 --user alice --token-file FILE"
    assert hint in made.text
    backups = "/v1/users/alice/vault-backups"
    desktop = {"Authorization": f"Bearer {device_token}"}
    assert client.get(backups, headers=desktop).status_code == 200

    listed = browser.get("/portal/device-tokens")
    assert "Laptop" in listed.text
    assert device_token not in listed.text, "shown once"
    token_id = re.search(r"/portal/device-tokens/(dtk_[a-z2-7]+)/revoke", listed.text)
    assert token_id
    revoked = browser.post(
        f"/portal/device-tokens/{token_id.group(1)}/revoke", data={"csrf_token": token}
    )
    assert "can no longer store or fetch backups" in revoked.text
    assert "Revoked" in revoked.text
    assert client.get(backups, headers=desktop).status_code == 401
    activity = browser.get("/portal/activity").text
    assert "Connected a desktop authenticator" in activity
    assert "Revoked a desktop authenticator" in activity
