"""The admin console in process (TestClient), on SQLite and PostgreSQL: operator sign-in with a
password and a second factor (a code or a security key), first-sign-in setup of an authenticator
app or a security key, refusals that do not say what was wrong, throttling, disabled operators,
CSRF, security headers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from sparekey.api import create_app
from sparekey.domain.models import OperatorRole
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey
from sparekey.settings import Settings
from sparekey.web.console import REFUSED
from sparekey.web.security import CONTENT_SECURITY_POLICY
from tests.api.test_webauthn import ORIGIN
from tests.helpers import create_user, enroll_confirmed_totp, totp_code
from tests.softauthn import SoftAuthenticator

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
SECRET = re.compile(r'aria-label="Setup key"><code>([A-Z2-7 ]+)</code>')
PASSWORD = "a long console password"


@pytest.fixture
def browser(sparekey: Sparekey) -> Iterator[TestClient]:
    """A browser: no API key, follows nothing on its own."""
    with TestClient(create_app(sparekey), raise_server_exceptions=False) as client:
        yield client


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def operator(
    sparekey: Sparekey, client: TestClient, clock: FixedClock, name: str, role: OperatorRole
) -> dict[str, Any]:
    """An operator with a password and a confirmed authenticator app; its factor (with secret)."""
    made = sparekey.operators.create(name, role=role)
    sparekey.operators.set_password(name, PASSWORD)
    factor = enroll_confirmed_totp(client, clock.now(), user_id=made.operator.user_id)
    clock.advance(30)  # the confirming code's step is spent
    return factor


def post_sign_in(browser: TestClient, name: str, password: str, code: str = "") -> Any:
    form = browser.get("/console/sign-in")
    assert form.status_code == 200
    return browser.post(
        "/console/sign-in",
        data={"csrf_token": csrf_of(form.text), "name": name, "password": password, "code": code},
        follow_redirects=False,
    )


def sign_in(browser: TestClient, clock: FixedClock, name: str, secret: str) -> str:
    """Sign in with the password and a fresh code; the home page's CSRF token."""
    answer = post_sign_in(browser, name, PASSWORD, totp_code(secret, clock.now()))
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console"
    home = browser.get("/console")
    assert home.status_code == 200, home.text
    clock.advance(30)
    return csrf_of(home.text)


def events(sparekey: Sparekey, event: str) -> list[Any]:
    """The records of ``event``, newest first."""
    return list(sparekey.audit.query(events=(event,)).records)


@pytest.fixture
def ada(sparekey: Sparekey, client: TestClient, clock: FixedClock) -> dict[str, Any]:
    return operator(sparekey, client, clock, "ada", OperatorRole.ADMIN)


def test_an_operator_signs_in_with_password_and_code_and_out_again(
    sparekey: Sparekey, browser: TestClient, clock: FixedClock, ada: dict[str, Any]
) -> None:
    assert browser.get("/console", follow_redirects=False).headers["location"] == (
        "/console/sign-in"
    )
    token = sign_in(browser, clock, "ada", str(ada["secret"]))
    home = browser.get("/console")
    assert "Signed in as <strong>ada</strong>" in home.text
    assert "admin" in home.text
    assert home.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert home.headers["cache-control"] == "no-store"
    assert "<script>" not in home.text
    cookie = browser.cookies.get("sparekey_console")
    assert cookie
    assert cookie not in home.text
    signed_in = events(sparekey, "console.signed_in")
    assert len(signed_in) == 1
    assert signed_in[0].actor_type == "operator"
    assert signed_in[0].actor_id == sparekey.operators.by_name("ada").id

    out = browser.post("/console/sign-out", data={"csrf_token": token})
    assert out.status_code == 200
    assert "You are signed out" in out.text
    assert len(events(sparekey, "console.signed_out")) == 1
    assert browser.get("/console", follow_redirects=False).status_code == 303
    # The portal's cookie is not the console's, nor the reverse
    assert browser.get("/portal").status_code == 401


def test_a_wrong_password_and_a_wrong_code_get_the_same_answer(
    sparekey: Sparekey, browser: TestClient, clock: FixedClock, ada: dict[str, Any]
) -> None:
    good_code = totp_code(str(ada["secret"]), clock.now())
    wrong_password = post_sign_in(browser, "ada", "not the password at all", good_code)
    wrong_code = post_sign_in(browser, "ada", PASSWORD, "000000" if good_code != "000000" else "1")
    no_code = post_sign_in(browser, "ada", PASSWORD, "")
    unknown = post_sign_in(browser, "nobody", PASSWORD, good_code)
    answers = [wrong_password, wrong_code, no_code, unknown]
    for answer in answers:
        assert answer.status_code == 401
        assert REFUSED in answer.text
        assert "sparekey_console=" not in answer.headers.get("set-cookie", "")

    def error_of(html: str) -> str:
        found = re.search(r'<div class="alert error" role="alert">(.*?)</div>', html, re.S)
        assert found
        return found.group(1)

    assert len({error_of(a.text) for a in answers}) == 1
    failed = events(sparekey, "console.sign_in_failed")
    reasons = [r.details["reason"] for r in reversed(failed)]
    assert reasons == ["password", "code", "code", "password"]
    assert all("name" not in r.details for r in failed), "a typed name may be a password"
    assert browser.get("/console", follow_redirects=False).status_code == 303


def test_sign_in_attempts_are_throttled_per_operator_name(
    browser: TestClient, clock: FixedClock, ada: dict[str, Any]
) -> None:
    for _ in range(5):
        assert post_sign_in(browser, "ada", "wrong password here").status_code == 401
    throttled = post_sign_in(browser, "ada", PASSWORD, totp_code(str(ada["secret"]), clock.now()))
    assert throttled.status_code == 429
    assert REFUSED in throttled.text
    clock.advance(61)
    sign_in(browser, clock, "ada", str(ada["secret"]))


def test_a_disabled_operator_cannot_sign_in_and_is_signed_out(
    sparekey: Sparekey, client: TestClient, clock: FixedClock, ada: dict[str, Any]
) -> None:
    with (
        TestClient(create_app(sparekey), raise_server_exceptions=False) as first,
        TestClient(create_app(sparekey), raise_server_exceptions=False) as second,
    ):
        sign_in(first, clock, "ada", str(ada["secret"]))
        sparekey.operators.disable("ada")
        assert first.get("/console", follow_redirects=False).headers["location"] == (
            "/console/sign-in"
        )
        refused = post_sign_in(second, "ada", PASSWORD, totp_code(str(ada["secret"]), clock.now()))
        assert refused.status_code == 401
        assert REFUSED in refused.text


def test_first_sign_in_sets_up_an_authenticator_app(
    sparekey: Sparekey, browser: TestClient, clock: FixedClock
) -> None:
    sparekey.operators.create("hank", role=OperatorRole.HELPDESK)
    assert post_sign_in(browser, "hank", PASSWORD).status_code == 401  # no password yet
    clock.advance(61)
    sparekey.operators.set_password("hank", PASSWORD)
    started = post_sign_in(browser, "hank", PASSWORD)
    assert started.status_code == 303
    assert started.headers["location"] == "/console/setup"
    # The setup step is not a console session
    assert browser.get("/console", follow_redirects=False).status_code == 303
    setup = browser.get("/console/setup")
    assert setup.status_code == 200
    assert 'src="data:image/png;base64,' in setup.text
    assert "Sign out" not in setup.text
    found = SECRET.search(setup.text)
    assert found
    secret = found.group(1).replace(" ", "")
    action = re.search(r'action="(/console/setup/[^"]+/confirm)"', setup.text)
    assert action
    token = csrf_of(setup.text)

    wrong = browser.post(action.group(1), data={"csrf_token": token, "code": "12"})
    assert wrong.status_code == 422
    assert "Not done." in wrong.text
    forged = browser.post(action.group(1), data={"code": totp_code(secret, clock.now())})
    assert forged.status_code == 403
    done = browser.post(
        action.group(1),
        data={"csrf_token": token, "code": totp_code(secret, clock.now())},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/console"
    home = browser.get("/console")
    assert "Signed in as <strong>hank</strong>" in home.text
    assert "helpdesk" in home.text
    assert len(events(sparekey, "console.signed_in")) == 1
    # The setup session is gone, and from now on the code is asked for
    assert browser.get("/console/setup", follow_redirects=False).status_code == 303
    clock.advance(30)
    with TestClient(create_app(sparekey), raise_server_exceptions=False) as other:
        assert post_sign_in(other, "hank", PASSWORD).status_code == 401
        sign_in(other, clock, "hank", secret)


def key_operator(sparekey: Sparekey, name: str, key: SoftAuthenticator) -> str:
    """An operator with a password and only a security key; its user id."""
    made = sparekey.operators.create(name, role=OperatorRole.ADMIN)
    sparekey.operators.set_password(name, PASSWORD)
    register_key(sparekey, made.operator.user_id, key)
    return made.operator.user_id


def register_key(sparekey: Sparekey, user_id: str, key: SoftAuthenticator) -> dict[str, Any]:
    """A security key for a user with no active factor yet; the credential it created."""
    credential = key.create(sparekey.webauthn.begin_registration(user_id), origin=ORIGIN)
    sparekey.webauthn.finish_registration(user_id, credential)
    return credential


def key_step(browser: TestClient, name: str) -> dict[str, str]:
    """The password step for a key operator; the key step's CSRF header."""
    started = post_sign_in(browser, name, PASSWORD)
    assert started.status_code == 303, started.text
    assert started.headers["location"] == "/console/key"
    # Only the password: no console session yet
    assert browser.get("/console", follow_redirects=False).status_code == 303
    assert browser.get("/console/cases", follow_redirects=False).status_code == 303
    step = browser.get("/console/key")
    assert step.status_code == 200
    assert 'data-webauthn="authenticate"' in step.text
    assert "<script>" not in step.text
    assert "Sign out" not in step.text
    found = META_CSRF.search(step.text)
    assert found
    return {"X-CSRF-Token": found.group(1)}


def test_an_operator_with_a_security_key_signs_in_with_password_and_key(
    sparekey: Sparekey, browser: TestClient
) -> None:
    key = SoftAuthenticator()
    key_operator(sparekey, "kim", key)
    headers = key_step(browser, "kim")
    assert browser.post("/console/key/options").status_code == 403  # no CSRF header
    options = browser.post("/console/key/options", headers=headers)
    assert options.status_code == 200, options.text
    assertion = key.get(options.json()["options"], origin=ORIGIN)
    assert browser.post("/console/key", json={"credential": assertion}).status_code == 403
    done = browser.post("/console/key", json={"credential": assertion}, headers=headers)
    assert done.status_code == 200, done.text
    assert done.json() == {"redirect": "/console"}
    home = browser.get("/console")
    assert "Signed in as <strong>kim</strong>" in home.text
    signed_in = events(sparekey, "console.signed_in")
    assert len(signed_in) == 1
    assert signed_in[0].actor_id == sparekey.operators.by_name("kim").id
    # The pending step is over
    assert browser.get("/console/key", follow_redirects=False).status_code == 303


def test_a_key_of_another_user_or_no_key_is_refused(
    sparekey: Sparekey, client: TestClient, browser: TestClient
) -> None:
    kims, mallorys = SoftAuthenticator(), SoftAuthenticator()
    key_operator(sparekey, "kim", kims)
    create_user(client, "mallory")
    theirs = register_key(sparekey, "mallory", mallorys)
    headers = key_step(browser, "kim")
    options = browser.post("/console/key/options", headers=headers).json()["options"]
    options["allowCredentials"] = [{"type": "public-key", "id": theirs["id"]}]
    assertion = mallorys.get(options, origin=ORIGIN)
    refused = browser.post("/console/key", json={"credential": assertion}, headers=headers)
    assert refused.status_code == 401
    assert refused.json() == {"error": REFUSED}
    assert "sparekey_console=" not in refused.headers.get("set-cookie", "")
    assert browser.get("/console", follow_redirects=False).status_code == 303
    # One try per password: the pending step has ended
    assert browser.get("/console/key", follow_redirects=False).status_code == 303

    # A passkey sign-in's challenge (no user) answered by another user's key: refused too
    headers = key_step(browser, "kim")
    loose = sparekey.webauthn.begin_authentication()
    assertion = mallorys.get(loose, origin=ORIGIN, credential_id=None)
    refused = browser.post("/console/key", json={"credential": assertion}, headers=headers)
    assert refused.status_code == 401

    # Only the password, then nothing (or garbage): never signed in
    headers = key_step(browser, "kim")
    garbage = browser.post("/console/key", json={"credential": {"id": "x"}}, headers=headers)
    assert garbage.status_code == 401
    assert browser.get("/console", follow_redirects=False).status_code == 303
    # A wrong password never reaches the key step
    wrong = post_sign_in(browser, "kim", "not the password at all")
    assert wrong.status_code == 401
    assert REFUSED in wrong.text
    assert events(sparekey, "console.signed_in") == []
    reasons = [r.details["reason"] for r in reversed(events(sparekey, "console.sign_in_failed"))]
    assert reasons == ["key", "key", "key", "password"]


def test_first_sign_in_sets_up_a_security_key_instead(
    sparekey: Sparekey, browser: TestClient, clock: FixedClock
) -> None:
    made = sparekey.operators.create("hank", role=OperatorRole.HELPDESK)
    sparekey.operators.set_password("hank", PASSWORD)
    started = post_sign_in(browser, "hank", PASSWORD)
    assert started.headers["location"] == "/console/setup"
    setup = browser.get("/console/setup")
    assert "Use a security key instead" in setup.text
    assert 'data-webauthn="register"' in setup.text
    found = META_CSRF.search(setup.text)
    assert found
    headers = {"X-CSRF-Token": found.group(1)}
    assert browser.post("/console/setup/key/options").status_code == 403
    options = browser.post("/console/setup/key/options", headers=headers)
    assert options.status_code == 200, options.text
    key = SoftAuthenticator()
    credential = key.create(options.json()["options"], origin=ORIGIN)
    done = browser.post("/console/setup/key", json={"credential": credential}, headers=headers)
    assert done.status_code == 200, done.text
    assert done.json() == {"redirect": "/console"}
    home = browser.get("/console")
    assert "Signed in as <strong>hank</strong>" in home.text
    assert len(events(sparekey, "console.signed_in")) == 1
    active = [f for f in sparekey.factors.list(made.operator.user_id) if f.status.value == "active"]
    assert [f.type.value for f in active] == ["webauthn"]
    # The setup session is gone; from now on the key is asked for
    assert browser.get("/console/setup", follow_redirects=False).status_code == 303
    with TestClient(create_app(sparekey), raise_server_exceptions=False) as other:
        headers = key_step(other, "hank")
        options = other.post("/console/key/options", headers=headers).json()["options"]
        assertion = key.get(options, origin=ORIGIN)
        answer = other.post("/console/key", json={"credential": assertion}, headers=headers)
        assert answer.status_code == 200
        assert "Signed in as <strong>hank</strong>" in other.get("/console").text


def test_the_key_step_session_cannot_set_up_another_factor(
    sparekey: Sparekey, browser: TestClient
) -> None:
    key_operator(sparekey, "kim", SoftAuthenticator())
    headers = key_step(browser, "kim")
    attempt = browser.post("/console/setup/key/options", headers=headers)
    assert attempt.status_code == 409
    assert browser.get("/console/setup", follow_redirects=False).status_code == 303
    assert browser.get("/console", follow_redirects=False).status_code == 303


def test_forms_without_the_csrf_token_are_refused(
    sparekey: Sparekey, browser: TestClient, clock: FixedClock, ada: dict[str, Any]
) -> None:
    code = totp_code(str(ada["secret"]), clock.now())
    browser.get("/console/sign-in")
    forged = browser.post(
        "/console/sign-in",
        data={"csrf_token": "forged", "name": "ada", "password": PASSWORD, "code": code},
    )
    assert forged.status_code == 403
    assert "This request was refused" in forged.text
    assert events(sparekey, "console.sign_in_failed") == []
    sign_in(browser, clock, "ada", str(ada["secret"]))
    kept = browser.post("/console/sign-out", data={"csrf_token": "forged"})
    assert kept.status_code == 403
    assert browser.get("/console").status_code == 200


def test_the_sign_in_page_has_labels_and_the_security_headers(browser: TestClient) -> None:
    page = browser.get("/console/sign-in")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["x-frame-options"] == "DENY"
    for control in ("name", "password", "code"):
        assert f'<label for="{control}">' in page.text
        assert f'id="{control}"' in page.text
    assert browser.get("/console/nothing-here").status_code == 404
    assert "<html" in browser.get("/console/nothing-here").text


# -- the recovery queue ------------------------------------------------------------------------


def post(browser: TestClient, path: str, token: str, **fields: Any) -> Any:
    return browser.post(path, data={"csrf_token": token, **fields}, follow_redirects=False)


def case_id_of(answer: Any) -> str:
    assert answer.status_code == 303, answer.text
    found = re.match(
        r"/console/cases/(rc_[A-Za-z0-9_-]+)\?done=opened$", answer.headers["location"]
    )
    assert found, answer.headers["location"]
    return found.group(1)


def test_a_case_from_opening_to_the_pass(
    sparekey: Sparekey,
    client: TestClient,
    clock: FixedClock,
    ada: dict[str, Any],
) -> None:
    create_user(client, "alice", email="alice@example.com")
    hank = operator(sparekey, client, clock, "hank", OperatorRole.HELPDESK)
    bob = operator(sparekey, client, clock, "bob", OperatorRole.ADMIN)
    with (
        TestClient(create_app(sparekey), raise_server_exceptions=False) as helpdesk,
        TestClient(create_app(sparekey), raise_server_exceptions=False) as admin,
    ):
        hank_token = sign_in(helpdesk, clock, "hank", str(hank["secret"]))
        opened = post(helpdesk, "/console/cases", hank_token, user_id="alice", reason="lost phone")
        case_id = case_id_of(opened)
        detail = helpdesk.get(opened.headers["location"])
        assert "The case was opened." in detail.text
        assert "Check the person's identity" in detail.text
        assert "/approve" not in detail.text, "helpdesk never sees approve or deny"
        assert "/deny" not in detail.text
        for item in sparekey.recovery.policy.checklist:
            assert f'value="{item}"' in detail.text

        too_few = post(
            helpdesk, f"/console/cases/{case_id}/verify", hank_token, evidence=["government_id"]
        )
        assert too_few.status_code == 422
        assert "check at least 2 items" in too_few.text
        # The helpdesk cannot approve even by posting directly: the service says why
        refused = post(helpdesk, f"/console/cases/{case_id}/approve", hank_token)
        assert refused.status_code == 403
        assert "only an operator with the role admin may approve" in refused.text
        verified = post(
            helpdesk,
            f"/console/cases/{case_id}/verify",
            hank_token,
            evidence=["government_id", "video_call"],
        )
        assert verified.status_code == 303

        queue = helpdesk.get("/console/cases")
        assert case_id in queue.text
        assert "identity verified" in queue.text

        bob_token = sign_in(admin, clock, "bob", str(bob["secret"]))
        page = admin.get(f"/console/cases/{case_id}")
        assert 'action="/console/cases/' + case_id + '/approve"' in page.text
        assert "checked by hank: government_id, video_call" in page.text
        approved = post(admin, f"/console/cases/{case_id}/approve", bob_token)
        assert approved.status_code == 303
        waiting = admin.get("/console/cases?state=waiting")
        assert case_id in waiting.text
        assert "ready in 24 h 0 min" in waiting.text
        clock.advance(20 * 60 + 1)
        assert "ready in 23 h 40 min" in admin.get(f"/console/cases/{case_id}").text
        assert "Issue the pass" not in admin.get(f"/console/cases/{case_id}").text

        clock.advance(24 * 3600)  # sessions end after 30 minutes without use
        assert helpdesk.get("/console", follow_redirects=False).status_code == 303
        hank_token = sign_in(helpdesk, clock, "hank", str(hank["secret"]))
        ready = helpdesk.get(f"/console/cases/{case_id}")
        assert "ready" in ready.text
        issued = post(helpdesk, f"/console/cases/{case_id}/pass", hank_token)
        assert issued.status_code == 200
        assert issued.headers["cache-control"] == "no-store"
        found = re.search(r'aria-label="Temporary access pass"><code>([^<]+)</code>', issued.text)
        assert found
        assert found.group(1) not in helpdesk.get(f"/console/cases/{case_id}").text
        assert sparekey.recovery.get(case_id).pass_expires_at is not None

    steps = [r.actor_id for r in sparekey.audit.query(user_id="alice").records]
    assert sparekey.operators.by_name("hank").id in steps
    assert sparekey.operators.by_name("bob").id in steps


def test_the_requester_cannot_approve_and_is_told_why(
    sparekey: Sparekey,
    client: TestClient,
    browser: TestClient,
    clock: FixedClock,
    ada: dict[str, Any],
) -> None:
    create_user(client, "alice")
    token = sign_in(browser, clock, "ada", str(ada["secret"]))
    case_id = case_id_of(post(browser, "/console/cases", token, user_id="alice"))
    again = post(browser, "/console/cases", token, user_id="alice")
    assert again.status_code == 409
    assert "already has an open case" in again.text
    missing = post(browser, "/console/cases", token, user_id="nobody")
    assert missing.status_code == 404
    assert 'value="nobody"' in missing.text, "what was typed is kept"
    post(
        browser,
        f"/console/cases/{case_id}/verify",
        token,
        evidence=["government_id", "known_phone_callback"],
    )
    refused = post(browser, f"/console/cases/{case_id}/approve", token)
    assert refused.status_code == 403
    assert "four eyes: whoever requested the case or verified the identity cannot" in refused.text
    assert sparekey.recovery.get(case_id).state.value == "identity_verified"
    denied = post(browser, f"/console/cases/{case_id}/deny", token, reason="caller unsure")
    assert denied.status_code == 303
    closed = browser.get(f"/console/cases/{case_id}")
    assert "denied" in closed.text
    assert "caller unsure" in closed.text
    assert '<form method="post" action="/console/cases/' not in closed.text
    assert case_id not in browser.get("/console/cases").text, "open cases only by default"
    assert case_id in browser.get("/console/cases?state=all").text
    assert case_id in browser.get("/console/cases?state=denied").text


def test_an_auditor_reads_and_changes_nothing(
    sparekey: Sparekey, client: TestClient, browser: TestClient, clock: FixedClock
) -> None:
    create_user(client, "alice")
    case = sparekey.recovery.request("alice", reason="lost phone")
    audrey = operator(sparekey, client, clock, "audrey", OperatorRole.AUDITOR)
    token = sign_in(browser, clock, "audrey", str(audrey["secret"]))
    queue = browser.get("/console/cases")
    assert case.id in queue.text
    assert 'method="post" action="/console/cases"' not in queue.text
    detail = browser.get(f"/console/cases/{case.id}")
    assert detail.status_code == 200
    assert "lost phone" in detail.text
    assert 'action="/console/cases/' not in detail.text
    for step, fields in (
        ("verify", {"evidence": ["government_id", "video_call"]}),
        ("approve", {}),
        ("deny", {}),
        ("pass", {}),
    ):
        refused = post(browser, f"/console/cases/{case.id}/{step}", token, **fields)
        assert refused.status_code == 403, step
        assert "an auditor reads only" in refused.text
    refused = post(browser, "/console/cases", token, user_id="alice")
    assert refused.status_code == 403
    assert sparekey.recovery.get(case.id).state.value == "requested"
    forged = browser.post(f"/console/cases/{case.id}/deny", data={"csrf_token": "x"})
    assert forged.status_code == 403
    assert "This request was refused" in forged.text
    assert browser.get("/console/cases/rc_nothing").status_code == 404


# -- users -------------------------------------------------------------------------------------


def test_users_are_found_and_a_case_is_opened_from_the_user_page(
    sparekey: Sparekey,
    client: TestClient,
    browser: TestClient,
    clock: FixedClock,
    ada: dict[str, Any],
) -> None:
    create_user(client, "alice", email="alice@example.com", display_name="Alice Example")
    enroll_confirmed_totp(client, clock.now(), user_id="alice")
    for n in range(55):
        create_user(client, f"zed{n:02d}")
    token = sign_in(browser, clock, "ada", str(ada["secret"]))

    found = browser.get("/console/users?query=alice")
    assert found.status_code == 200
    assert 'href="/console/users/alice"' in found.text
    assert "zed00" not in found.text
    first = browser.get("/console/users?query=zed")
    assert first.text.count('href="/console/users/zed') == 50
    more = re.search(r'href="/console/users\?query=zed&amp;cursor=([^"]+)"', first.text)
    assert more
    second = browser.get(f"/console/users?query=zed&cursor={more.group(1)}")
    assert second.text.count('href="/console/users/zed') == 5
    assert browser.get("/console/users?cursor=spoilt").status_code == 200

    detail = browser.get("/console/users/alice")
    assert detail.status_code == 200
    assert "Alice Example" in detail.text
    assert "Authenticator app" in detail.text
    assert "1 way in" in detail.text
    assert "factor.confirmed" in detail.text
    assert 'name="user_id" value="alice"' in detail.text
    opened = post(browser, "/console/cases", token, user_id="alice", reason="from the user page")
    case_id = case_id_of(opened)
    detail = browser.get("/console/users/alice")
    assert f'href="/console/cases/{case_id}"' in detail.text
    assert 'name="user_id" value="alice"' not in detail.text, "one open case at a time"
    assert "recovery.requested" in detail.text
    assert browser.get("/console/users/nobody").status_code == 404


def test_an_auditor_sees_users_without_forms(
    sparekey: Sparekey, client: TestClient, browser: TestClient, clock: FixedClock
) -> None:
    create_user(client, "alice")
    audrey = operator(sparekey, client, clock, "audrey", OperatorRole.AUDITOR)
    sign_in(browser, clock, "audrey", str(audrey["secret"]))
    detail = browser.get("/console/users/alice")
    assert detail.status_code == 200
    assert 'method="post" action="/console/cases"' not in detail.text
    assert "No open case." in detail.text
    assert browser.get("/console/users", follow_redirects=False).status_code == 200
    browser.cookies.clear()
    assert browser.get("/console/users", follow_redirects=False).status_code == 303


# -- organisation readiness --------------------------------------------------------------------


def test_every_role_sees_the_readiness_dashboard_with_its_chart(
    sparekey: Sparekey,
    client: TestClient,
    browser: TestClient,
    clock: FixedClock,
    ada: dict[str, Any],
) -> None:
    create_user(client, "alice")
    create_user(client, "bob")
    enroll_confirmed_totp(client, clock.now(), user_id="bob")
    report = sparekey.readiness.report()
    assert report.users >= 3
    sign_in(browser, clock, "ada", str(ada["secret"]))
    home = browser.get("/console")
    assert 'href="/console/readiness"' in home.text
    assert 'href="/console/api-keys"' in home.text, "admins see the API keys"
    dashboard = browser.get("/console/readiness")
    assert dashboard.status_code == 200
    html = dashboard.text
    assert "<script" not in html
    facts = re.search(r'<dl class="facts">(.*?)</dl>', html, re.S)
    assert facts
    assert f"<dt>Users</dt><dd>{report.users}</dd>" in facts.group(1)
    assert f"<dd>{report.one_device_from_lockout}</dd>" in facts.group(1)
    assert f"<dt>No way in</dt><dd>{report.no_way_in}</dd>" in facts.group(1)
    assert report.admins_without_phishing_resistant == ("ada",)
    assert f"1 of {report.admins}: ada" in facts.group(1)

    svg = re.search(r"<svg[^>]*>(.*?)</svg>", html, re.S)
    assert svg
    assert 'role="img"' in svg.group(0)
    assert '<title id="chart-title">' in svg.group(1)
    assert len(report.scores) == 11
    assert svg.group(1).count('<rect class="bar"') == len(report.scores)
    for band in report.scores:
        label = str(band.low) if band.low == band.high else f"{band.low}\u2013{band.high}"
        plural = "" if band.users == 1 else "s"
        assert f"<title>Score {label}: {band.users} user{plural}</title>" in svg.group(1)
        assert f"<tr><td>{label}</td><td>{band.users}</td></tr>" in html, "and in a table"
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]* height="([\d.]+)"', html)]
    assert max(heights) > 0
    assert heights.count(0.0) == sum(1 for b in report.scores if b.users == 0)

    assert report.actions
    for action in report.actions:
        assert f"<tr><td>{action.title}</td><td>{action.users}</td>" in html

    for name, role in (("hank", OperatorRole.HELPDESK), ("audrey", OperatorRole.AUDITOR)):
        other = operator(sparekey, client, clock, name, role)
        browser.cookies.clear()
        sign_in(browser, clock, name, str(other["secret"]))
        seen = browser.get("/console/readiness")
        assert seen.status_code == 200, name
        assert seen.text.count('<rect class="bar"') == 11
        assert 'href="/console/api-keys"' not in seen.text, "only admins see the API keys"
    browser.cookies.clear()
    assert browser.get("/console/readiness", follow_redirects=False).status_code == 303


# -- the audit log -----------------------------------------------------------------------------


def test_the_audit_viewer_filters_and_pages_newest_first(
    sparekey: Sparekey, client: TestClient, browser: TestClient, clock: FixedClock
) -> None:
    create_user(client, "alice")
    enroll_confirmed_totp(client, clock.now(), user_id="alice")
    for n in range(55):
        create_user(client, f"zed{n:02d}")
    audrey = operator(sparekey, client, clock, "audrey", OperatorRole.AUDITOR)
    sign_in(browser, clock, "audrey", str(audrey["secret"]))

    def rows(html: str) -> list[tuple[int, str, str]]:
        found = re.findall(
            r"<tr[^>]*>\s*<td>(\d+)</td>\s*<td>[^<]*</td>\s*<td>([^<]*)</td>"
            r"\s*<td>[^<]*</td>\s*<td>(?:<a [^>]*>)?([^<]*)",
            html,
        )
        return [(int(i), event, user) for i, event, user in found]

    everything = browser.get("/console/audit")
    assert everything.status_code == 200
    first = rows(everything.text)
    assert len(first) == 50
    assert [r[0] for r in first] == sorted((r[0] for r in first), reverse=True), "newest first"
    assert first[0][1] == "console.signed_in"
    older = re.search(r'href="(/console/audit\?[^"]*cursor=\d+)"', everything.text)
    assert older
    second = rows(browser.get(older.group(1).replace("&amp;", "&")).text)
    assert second
    assert second[0][0] < first[-1][0]

    alice = rows(browser.get("/console/audit?user=alice").text)
    assert alice
    assert {r[2] for r in alice} == {"alice"}
    assert "factor.confirmed" in {r[1] for r in alice}
    created = rows(browser.get("/console/audit?event=user.created&user=zed07").text)
    assert [(r[1], r[2]) for r in created] == [("user.created", "zed07")]

    today = clock.now().date()
    since_tomorrow = browser.get(f"/console/audit?since={today + timedelta(days=1)}")
    assert rows(since_tomorrow.text) == []
    assert "No records match the filters." in since_tomorrow.text
    until_yesterday = browser.get(f"/console/audit?until={today - timedelta(days=1)}")
    assert rows(until_yesterday.text) == []
    today_only = browser.get(f"/console/audit?since={today}&until={today}&user=alice")
    assert len(rows(today_only.text)) == len(alice)
    spoilt = browser.get("/console/audit?since=yesterday")
    assert spoilt.status_code == 422
    assert "YYYY-MM-DD" in spoilt.text
    assert browser.get("/console/audit?cursor=spoilt").status_code == 200


def test_verifying_the_chain_says_it_holds_or_names_the_edited_record(
    sparekey: Sparekey,
    client: TestClient,
    browser: TestClient,
    clock: FixedClock,
    settings: Settings,
    ada: dict[str, Any],
) -> None:
    create_user(client, "alice")
    token = sign_in(browser, clock, "ada", str(ada["secret"]))
    page_ = browser.get("/console/audit?user=alice")
    assert 'action="/console/audit/verify"' in page_.text
    assert "The chain is verified" not in page_.text, "verified only when asked"
    intact = post(browser, "/console/audit/verify", token, user="alice")
    assert intact.status_code == 200
    assert "The chain is verified." in intact.text
    assert 'name="user" value="alice"' in intact.text, "the filters stay"

    sparekey.audit.seal_all()
    edited = events(sparekey, "user.created")[0].id
    engine = create_engine(settings.resolved_database_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET outcome = 'failure' WHERE id = :i"), {"i": edited}
        )
    engine.dispose()
    broken = post(browser, "/console/audit/verify", token)
    assert broken.status_code == 200
    assert "The chain is broken." in broken.text
    assert f"record {edited}" in broken.text

    forged = browser.post("/console/audit/verify", data={"csrf_token": "x"})
    assert forged.status_code == 403
    assert "This request was refused" in forged.text


# -- API keys ----------------------------------------------------------------------------------

TOKEN = re.compile(r'aria-label="API key token">(sk_[^<]+)</code>')


def test_an_admin_creates_and_revokes_api_keys(
    sparekey: Sparekey,
    client: TestClient,
    browser: TestClient,
    clock: FixedClock,
    ada: dict[str, Any],
) -> None:
    create_user(client, "alice")
    token = sign_in(browser, clock, "ada", str(ada["secret"]))
    listed = browser.get("/console/api-keys")
    assert listed.status_code == 200
    assert "test-admin" in listed.text
    assert "<td>ada</td>" in listed.text, "the operator's personal token names them"

    refused = post(browser, "/console/api-keys", token, name="no scopes")
    assert refused.status_code == 422
    assert "at least one scope" in refused.text
    assert 'value="no scopes"' in refused.text

    created = post(browser, "/console/api-keys", token, name="Billing app", scopes=["manage"])
    assert created.status_code == 200
    found = TOKEN.search(created.text)
    assert found
    api_token = found.group(1)
    assert created.text.count(api_token) == 1
    assert api_token not in browser.get("/console/api-keys").text, "shown once"
    key = next(k for k in sparekey.api_keys.list() if k.name == "Billing app")
    assert {s.value for s in key.scopes} == {"manage"}
    assert key.operator_id is None
    record = events(sparekey, "api_key.created")[0]
    assert record.actor_type == "operator"
    assert record.actor_id == sparekey.operators.by_name("ada").id

    bearer = {"Authorization": f"Bearer {api_token}"}
    assert browser.get("/v1/users/alice/readiness", headers=bearer).status_code == 200
    assert browser.get("/v1/readiness", headers=bearer).status_code == 403, "manage only"

    forged = browser.post(f"/console/api-keys/{key.id}/revoke", data={"csrf_token": "x"})
    assert forged.status_code == 403
    assert browser.get("/v1/users/alice/readiness", headers=bearer).status_code == 200
    listed = browser.get("/console/api-keys")
    assert f'action="/console/api-keys/{key.id}/revoke"' in listed.text
    assert "Revoke “Billing app” now" in listed.text
    answer = post(browser, f"/console/api-keys/{key.id}/revoke", token)
    assert answer.status_code == 303
    revoked = browser.get(answer.headers["location"])
    assert revoked.status_code == 200
    assert "The key was revoked" in revoked.text
    assert f'action="/console/api-keys/{key.id}/revoke"' not in revoked.text
    assert browser.get("/v1/users/alice/readiness", headers=bearer).status_code == 401
    record = events(sparekey, "api_key.revoked")[0]
    assert record.actor_id == sparekey.operators.by_name("ada").id
    assert post(browser, "/console/api-keys/nothing/revoke", token).status_code == 404


def test_api_keys_are_for_admins_only(
    sparekey: Sparekey, client: TestClient, browser: TestClient, clock: FixedClock
) -> None:
    for name, role in (("hank", OperatorRole.HELPDESK), ("audrey", OperatorRole.AUDITOR)):
        other = operator(sparekey, client, clock, name, role)
        browser.cookies.clear()
        token = sign_in(browser, clock, name, str(other["secret"]))
        before = len(sparekey.api_keys.list())
        seen = browser.get("/console/api-keys")
        assert seen.status_code == 403, name
        assert "API keys are managed by admins" in seen.text
        made = post(browser, "/console/api-keys", token, name="sneaky", scopes=["admin"])
        assert made.status_code == 403
        live = next(k for k in sparekey.api_keys.list() if k.name == "test-admin")
        assert post(browser, f"/console/api-keys/{live.id}/revoke", token).status_code == 403
        assert len(sparekey.api_keys.list()) == before
        assert all(k.revoked_at is None for k in sparekey.api_keys.list())
