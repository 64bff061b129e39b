"""An email/SMS code as identity evidence inside a recovery case (decision 0016), on SQLite and
PostgreSQL: sent even under ``fallback_only`` (the case is why), never when ``disabled``; spent
once, throttled, and not a sign-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sparekey.domain.models import OperatorRole, Scope
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey
from sparekey.settings import Settings, load_settings
from tests.api.test_fallback import enroll_sms, sms_codes
from tests.api.test_problems import assert_problem
from tests.api.test_recovery import CASES, Desk, bearer, step
from tests.helpers import OVERRIDE, create_user, enroll_confirmed_totp, race
from tests.helpers_delivery import Provider, twilio_api, twilio_settings


@pytest.fixture
def sms() -> Iterator[Provider]:
    with Provider(twilio_api()) as provider:
        yield provider


@pytest.fixture
def mode() -> str:
    return "fallback_only"


@pytest.fixture
def settings(tmp_path: Path, database_url: str, sms: Provider, mode: str) -> Settings:
    return load_settings(
        tmp_path / "data",
        database_url=database_url,
        public_url="https://example.com",
        **twilio_settings(sms),
        fallback_channels=mode,
    )


@pytest.fixture
def desk(sparekey: Sparekey) -> Desk:
    def token(name: str, role: OperatorRole) -> dict[str, str]:
        return bearer(sparekey.operators.create(name, role=role).token)

    return Desk(
        hank=token("hank", OperatorRole.HELPDESK),
        ada=token("ada", OperatorRole.ADMIN),
        bob=token("bob", OperatorRole.ADMIN),
        audrey=token("audrey", OperatorRole.AUDITOR),
        app=bearer(sparekey.api_keys.create(name="app", scopes=[Scope.MANAGE]).token),
    )


@pytest.fixture
def alice(client: TestClient, clock: FixedClock, sms: Provider) -> str:
    """Alice has an authenticator app (her phone's, now lost) and an SMS factor."""
    create_user(client)
    enroll_confirmed_totp(client, clock.now())
    return enroll_sms(client, sms, headers=OVERRIDE)


def open_case(client: TestClient, desk: Desk) -> str:
    made = client.post(CASES, json={"user_id": "alice"}, headers=desk.hank)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def failures(client: TestClient) -> int:
    return int(client.get("/v1/users/alice").json()["throttle"]["failures"])


def events(client: TestClient) -> list[str]:
    answer = client.get("/v1/audit", params={"user": "alice", "limit": 200})
    return [e["event"] for e in answer.json()["events"]]


def test_a_code_inside_a_case_is_identity_evidence_but_not_a_sign_in(
    client: TestClient, desk: Desk, alice: str, sms: Provider
) -> None:
    refused = client.post(f"/v1/users/alice/factors/{alice}/send")
    assert_problem(refused, 403, "fallback-not-allowed")
    case_id = open_case(client, desk)

    sent = step(client, case_id, "fallback-code", desk.hank)
    assert sent.status_code == 200, sent.text
    assert sent.json()["factor_id"] == alice
    code = sms_codes(sms)[-1]

    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert step(client, case_id, "fallback-code/check", desk.hank, code=wrong).json() == {
        "verified": False
    }
    assert failures(client) == 1, "a wrong code counts against the throttle"

    right = step(client, case_id, "fallback-code/check", desk.hank, code=code)
    assert right.status_code == 200, right.text
    checked = right.json()
    assert checked["verified"] is True
    assert "assurance_token" not in checked, "not a sign-in"
    case = checked["case"]
    assert case["state"] == "requested", "the case stays open"
    assert case["fallback_verified_at"] is not None
    assert case["fallback_factor_id"] == alice

    again = step(client, case_id, "fallback-code/check", desk.hank, code=code)
    assert again.json() == {"verified": False}, "single use"
    assert client.post("/v1/users/alice/verify", json={"code": code}).json() == {"verified": False}

    verified = step(
        client, case_id, "identity", desk.hank, evidence=["fallback_code", "video_call"]
    )
    assert verified.status_code == 200, verified.text
    assert verified.json()["state"] == "identity_verified"
    assert verified.json()["evidence"] == ["fallback_code", "video_call"]
    assert {
        "recovery.fallback_code_sent",
        "recovery.fallback_code_verified",
        "recovery.identity_verified",
    } <= set(events(client))
    assert "recovery.cancelled" not in events(client)
    late = step(client, case_id, "fallback-code", desk.hank)
    assert_problem(late, 409, "recovery-state")


def test_claiming_a_code_that_was_not_checked_is_refused(
    client: TestClient, desk: Desk, alice: str
) -> None:
    case_id = open_case(client, desk)
    claimed = step(client, case_id, "identity", desk.hank, evidence=["fallback_code", "video_call"])
    assert_problem(claimed, 409, "fallback-evidence-missing")
    assert client.get(f"{CASES}/{case_id}", headers=desk.hank).json()["state"] == "requested"


def test_a_code_inside_a_case_is_single_use_under_parallel_checks(
    client: TestClient, desk: Desk, alice: str, sms: Provider
) -> None:
    case_id = open_case(client, desk)
    assert step(client, case_id, "fallback-code", desk.hank).status_code == 200
    code = sms_codes(sms)[-1]

    def check() -> Any:
        return step(client, case_id, "fallback-code/check", desk.hank, code=code).json()

    results = race(lambda: check().get("verified"), threads=4)
    assert sorted(results) == [False] * 3 + [True]


def test_a_named_factor_must_be_the_users_email_or_sms_factor(
    client: TestClient, desk: Desk, alice: str, sparekey: Sparekey
) -> None:
    case_id = open_case(client, desk)
    missing = step(client, case_id, "fallback-code", desk.hank, factor_id="fct_nothere")
    assert_problem(missing, 404, "factor-not-found")
    named = step(client, case_id, "fallback-code", desk.hank, factor_id=alice)
    assert named.status_code == 200, named.text


@pytest.mark.parametrize("mode", ["disabled"])
def test_disabled_channels_send_nothing_even_inside_a_case(
    client: TestClient, desk: Desk, clock: FixedClock, sms: Provider
) -> None:
    create_user(client)
    enroll_confirmed_totp(client, clock.now())
    case_id = open_case(client, desk)
    refused = step(client, case_id, "fallback-code", desk.hank)
    assert_problem(refused, 403, "fallback-disabled")
    assert sms.requests == []
    assert step(client, case_id, "fallback-code/check", desk.hank, code="123456").json() == {
        "verified": False
    }
