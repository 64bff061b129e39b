"""Readiness over HTTP: per user, recovery drills, and the organisation report."""

from __future__ import annotations

from fastapi.testclient import TestClient

from sparekey.domain.models import Scope
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey
from tests.api.test_problems import PROBLEM, assert_problem
from tests.helpers import create_user, enroll_confirmed_totp
from tests.services.test_readiness import add_factor_row, add_operator


def new_codes(client: TestClient, user_id: str = "alice") -> list[str]:
    response = client.post(f"/v1/users/{user_id}/backup-codes")
    assert response.status_code == 201, response.text
    return list(response.json()["codes"])


def check(client: TestClient, code: str, user_id: str = "alice") -> dict[str, object]:
    response = client.post(f"/v1/users/{user_id}/backup-codes/check", json={"code": code})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_new_users_readiness(client: TestClient) -> None:
    create_user(client, "alice")
    response = client.get("/v1/users/alice/readiness")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "user_id": "alice",
        "score": 5,
        "ways_in": 0,
        "one_device_from_lockout": False,
        "actions": body["actions"],
        "facts": {
            "active_factors": 0,
            "phishing_resistant_factors": 0,
            "stale_factors": 0,
            "backup_codes_unused": 0,
            "backup_codes_used": 0,
            "backup_codes_proven": False,
            "drilled": False,
            "fallback_factors": 0,
        },
        "backup_codes_proven_at": None,
        "last_drill_at": None,
    }
    assert [(a["id"], a["impact"]) for a in body["actions"]] == [
        ("enroll_factor", 45),
        ("generate_backup_codes", 35),
        ("add_phishing_resistant_factor", 10),
        ("run_recovery_drill", 5),
    ]
    assert all(a["title"] and a["why"] for a in body["actions"])


def test_actions_disappear_as_the_user_fixes_them(client: TestClient, clock: FixedClock) -> None:
    create_user(client, "alice")
    codes = new_codes(client)
    assert check(client, codes[0]) == {"valid": True, "remaining": 10}
    enroll_confirmed_totp(client, clock.now(), "alice")
    body = client.get("/v1/users/alice/readiness").json()
    assert [a["id"] for a in body["actions"]] == [
        "add_second_factor",
        "add_phishing_resistant_factor",
    ]
    assert (body["score"], body["ways_in"], body["one_device_from_lockout"]) == (65, 2, False)
    assert body["last_drill_at"] == body["backup_codes_proven_at"] == "2026-01-15T12:00:00Z"


def test_the_drill_never_spends_the_code(client: TestClient) -> None:
    create_user(client, "alice")
    codes = new_codes(client)
    assert check(client, codes[0]) == {"valid": True, "remaining": 10}
    assert check(client, codes[0]) == {"valid": True, "remaining": 10}
    signed_in = client.post("/v1/users/alice/verify", json={"code": codes[0]}).json()
    assert (signed_in["verified"], signed_in["backup_codes_remaining"]) == (True, 9)
    assert check(client, codes[0]) == {"valid": False, "remaining": 9}
    assert check(client, "123456") == {"valid": False, "remaining": 9}


def test_drills_are_audited(client: TestClient) -> None:
    create_user(client, "alice")
    codes = new_codes(client)
    check(client, codes[1])
    response = client.post(
        "/v1/users/alice/backup-codes/check",
        json={"code": "7KQF-M2XD-9RWP-HTNC", "context": {"ip": "198.51.100.9"}},
    )
    assert response.json() == {"valid": False, "remaining": 10}
    events = client.get(
        "/v1/audit", params={"user": "alice", "event": ["backup_codes.checked"]}
    ).json()["events"]
    assert [(e["outcome"], e["details"], e["ip"]) for e in events] == [
        ("failure", {"valid": False, "remaining": 10}, "198.51.100.9"),
        ("success", {"valid": True, "remaining": 10}, None),
    ]
    assert all(e["actor_type"] == "api_key" for e in events)


def test_drills_are_throttled_per_user(client: TestClient, clock: FixedClock) -> None:
    create_user(client, "alice")
    create_user(client, "bob")
    codes = new_codes(client)
    for _ in range(5):
        check(client, "WRONG")
    refused = client.post("/v1/users/alice/backup-codes/check", json={"code": codes[0]})
    assert_problem(refused, 429, "drill-limited")
    assert refused.headers["retry-after"] == "180"
    assert check(client, "WRONG", user_id="bob") == {"valid": False, "remaining": 0}
    clock.advance(180)
    assert check(client, codes[0]) == {"valid": True, "remaining": 10}


def test_regenerating_forgets_the_proof(client: TestClient) -> None:
    create_user(client, "alice")
    assert check(client, new_codes(client)[0])["valid"]
    assert client.get("/v1/users/alice/readiness").json()["facts"]["backup_codes_proven"]
    new_codes(client)
    body = client.get("/v1/users/alice/readiness").json()
    assert body["backup_codes_proven_at"] is None
    assert "prove_backup_codes_saved" in [a["id"] for a in body["actions"]]


def test_errors_are_problems(client: TestClient, sparekey: Sparekey) -> None:
    assert_problem(client.get("/v1/users/nobody/readiness"), 404, "user-not-found")
    missing = client.post("/v1/users/nobody/backup-codes/check", json={"code": "X"})
    assert_problem(missing, 404, "user-not-found")
    create_user(client, "alice")
    invalid = client.post("/v1/users/alice/backup-codes/check", json={})
    assert_problem(invalid, 422, "invalid-input")
    extra = client.post("/v1/users/alice/backup-codes/check", json={"code": "X", "spend": True})
    assert_problem(extra, 422, "invalid-input")

    verify_key = sparekey.api_keys.create(name="login", scopes=[Scope.VERIFY]).token
    manage_key = sparekey.api_keys.create(name="app", scopes=[Scope.MANAGE]).token
    as_verify = {"Authorization": f"Bearer {verify_key}"}
    as_manage = {"Authorization": f"Bearer {manage_key}"}
    assert_problem(client.get("/v1/users/alice/readiness", headers=as_verify), 403, "forbidden")
    drill = client.post("/v1/users/alice/backup-codes/check", json={"code": "X"}, headers=as_verify)
    assert_problem(drill, 403, "forbidden")
    assert_problem(client.get("/v1/readiness", headers=as_manage), 403, "forbidden")
    assert client.get("/v1/users/alice/readiness", headers=as_manage).status_code == 200
    assert client.get("/v1/readiness").headers["content-type"] != PROBLEM


def test_the_organisation_report(client: TestClient, sparekey: Sparekey, clock: FixedClock) -> None:
    for user_id in ("alice", "bob", "carol", "root_user"):
        create_user(client, user_id)
    assert check(client, new_codes(client, "alice")[0], user_id="alice")["valid"]
    enroll_confirmed_totp(client, clock.now(), "alice")
    add_factor_row(sparekey, "alice", "fct_alice_key")
    enroll_confirmed_totp(client, clock.now(), "bob")
    enroll_confirmed_totp(client, clock.now(), "root_user")
    add_operator(sparekey, "root", "root_user", role="admin")

    response = client.get("/v1/readiness")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["generated_at"] == "2026-01-15T12:00:00Z"
    assert {k: body[k] for k in ("users", "one_device_from_lockout", "no_way_in")} == {
        "users": 4,
        "one_device_from_lockout": 2,  # bob and root: one app each, no codes
        "no_way_in": 1,  # carol
    }
    assert (body["admins"], body["admins_without_phishing_resistant"]) == (1, ["root"])
    assert [(b["low"], b["high"]) for b in body["scores"]][::5] == [(0, 9), (50, 59), (100, 100)]
    assert sum(b["users"] for b in body["scores"]) == 4
    assert body["scores"][-1]["users"] == 1  # alice
    top = body["actions"][0]
    assert top == {
        "id": "generate_backup_codes",
        "title": "Generate backup codes",
        "impact": 35,
        "users": 3,
        "points": 105,
    }
    assert body["mean_score"] == sparekey.readiness.report().mean_score
