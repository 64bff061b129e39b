"""Enrollment of TOTP/HOTP factors: pending until confirmed, expiring, listed without secrets."""

from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient

from sparekey.domain.ports import FixedClock
from sparekey.protocols.otpauth import b32decode, parse
from tests.api.test_problems import assert_problem
from tests.helpers import (
    create_user,
    enroll,
    enroll_confirmed_totp,
    hotp_code,
    step_up,
    totp_code,
)


def test_enrollment_returns_uri_secret_and_qr_once(client: TestClient) -> None:
    create_user(client, "alice", email="alice@example.com")
    factor = enroll(client, label="Phone", algorithm="SHA256", digits=8, period=60, qr_png=True)
    assert factor["status"] == "pending"
    assert factor["label"] == "Phone"
    assert len(b32decode(str(factor["secret"]))) == 32, "seed as long as SHA-256's output"
    uri = parse(str(factor["otpauth_uri"]))
    assert (uri.issuer, uri.account, uri.digits, uri.period) == (
        "Sparekey",
        "alice@example.com",
        8,
        60,
    )
    assert uri.secret == b32decode(str(factor["secret"]))
    assert parse_qs(urlsplit(str(factor["otpauth_uri"])).query)["issuer"] == ["Sparekey"]
    assert str(factor["qr_svg"]).startswith("<svg")
    assert str(factor["qr_png"]).startswith("data:image/png;base64,")

    listed = client.get("/v1/users/alice/factors").json()["factors"]
    assert [f["id"] for f in listed] == [factor["id"]]
    assert not {"secret", "otpauth_uri", "qr_svg"} & set(listed[0])
    assert str(factor["secret"]) not in client.get("/v1/users/alice/factors").text


def test_default_seed_is_at_least_160_bits_and_no_png_unless_asked(client: TestClient) -> None:
    create_user(client)
    factor = enroll(client)
    assert len(b32decode(str(factor["secret"]))) >= 20
    assert factor["qr_png"] is None


def test_confirm_activates_with_a_valid_code_only(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    factor = enroll(client)
    url = f"/v1/users/alice/factors/{factor['id']}/confirm"
    wrong = client.post(
        url,
        json={
            "code": "000000"
            if totp_code(str(factor["secret"]), clock.now()) != "000000"
            else "111111"
        },
    )
    assert_problem(wrong, 422, "code-rejected")
    good = client.post(url, json={"code": totp_code(str(factor["secret"]), clock.now())})
    assert good.status_code == 200
    assert good.json()["status"] == "active"
    assert good.json()["confirmed_at"] is not None
    assert_problem(client.post(url, json={"code": "123456"}), 409, "factor-state")


def test_pending_factor_cannot_verify(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    factor = enroll(client)
    code = totp_code(str(factor["secret"]), clock.now())
    assert client.post("/v1/users/alice/verify", json={"code": code}).json() == {"verified": False}


def test_pending_factor_expires(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    factor = enroll(client)
    clock.advance(601)
    code = totp_code(str(factor["secret"]), clock.now())
    response = client.post(f"/v1/users/alice/factors/{factor['id']}/confirm", json={"code": code})
    assert_problem(response, 409, "factor-expired")
    assert client.get("/v1/users/alice/factors").json() == {"factors": []}


def test_confirming_code_cannot_be_replayed_at_sign_in(
    client: TestClient, clock: FixedClock
) -> None:
    create_user(client)
    factor = enroll(client)
    code = totp_code(str(factor["secret"]), clock.now())
    client.post(f"/v1/users/alice/factors/{factor['id']}/confirm", json={"code": code})
    assert client.post("/v1/users/alice/verify", json={"code": code}).json() == {"verified": False}


def test_hotp_enrollment_uses_counter_zero(client: TestClient) -> None:
    create_user(client)
    factor = enroll(client, type="hotp")
    assert factor["period"] is None
    assert "counter=0" in str(factor["otpauth_uri"])
    code = hotp_code(str(factor["secret"]), 0)
    response = client.post(f"/v1/users/alice/factors/{factor['id']}/confirm", json={"code": code})
    assert response.status_code == 200


def test_rename_and_delete(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    factor = enroll_confirmed_totp(client, clock.now())
    renamed = client.patch(f"/v1/users/alice/factors/{factor['id']}", json={"label": "Spare phone"})
    assert renamed.json()["label"] == "Spare phone"
    assert client.get(f"/v1/users/alice/factors/{factor['id']}").json()["label"] == "Spare phone"
    clock.advance(30)
    headers = step_up(client, totp_code(str(factor["secret"]), clock.now()))
    path = f"/v1/users/alice/factors/{factor['id']}"
    assert_problem(client.delete(path, headers=headers), 409, "last-factor")
    assert client.delete(f"{path}?force=true", headers=headers).status_code == 204
    clock.advance(30)
    code = totp_code(str(factor["secret"]), clock.now())
    assert client.post("/v1/users/alice/verify", json={"code": code}).json() == {"verified": False}


def test_users_cannot_reach_each_others_factors(client: TestClient, clock: FixedClock) -> None:
    create_user(client, "alice")
    create_user(client, "bob")
    factor = enroll_confirmed_totp(client, clock.now(), "alice")
    assert_problem(client.get(f"/v1/users/bob/factors/{factor['id']}"), 404, "factor-not-found")
    assert_problem(client.delete(f"/v1/users/bob/factors/{factor['id']}"), 404, "factor-not-found")
    clock.advance(30)
    code = totp_code(str(factor["secret"]), clock.now())
    assert client.post("/v1/users/bob/verify", json={"code": code}).json() == {"verified": False}


def test_a_user_may_hold_several_factors(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    primary = enroll_confirmed_totp(client, clock.now(), label="Primary phone")
    clock.advance(30)
    headers = step_up(client, totp_code(str(primary["secret"]), clock.now()))
    spare = enroll_confirmed_totp(client, clock.now(), label="Spare phone", headers=headers)
    clock.advance(30)
    for factor in (spare, primary):
        code = totp_code(str(factor["secret"]), clock.now())
        answer = client.post("/v1/users/alice/verify", json={"code": code}).json()
        assert answer["verified"] is True
        assert answer["factor_id"] == factor["id"], "the answer names the factor that matched"


def test_qr_code_decodes_to_the_otpauth_uri(client: TestClient) -> None:
    """Decode the PNG with zxing-cpp, an independent QR reader, as a phone's camera would."""
    import base64
    import io

    import zxingcpp
    from PIL import Image

    create_user(client, "alice", email="alice@example.com")
    factor = enroll(client, qr_png=True, label="Phone")
    png = base64.b64decode(str(factor["qr_png"]).removeprefix("data:image/png;base64,"))
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert [d.text for d in decoded] == [factor["otpauth_uri"]]
