"""Every error is RFC 9457 problem+json with a stable type; bad input writes nothing."""

import json
import re

import pytest
from fastapi.testclient import TestClient

from sparekey.api import create_app
from sparekey.api.schemas import SAFE_TEXT_PATTERN
from sparekey.domain.errors import DeliveryError
from sparekey.domain.models import OperatorRole, Scope
from sparekey.runtime import Sparekey
from tests.helpers import create_user, enroll, hotp_code

PROBLEM = "application/problem+json"


def assert_problem(response: object, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == PROBLEM  # type: ignore[attr-defined]
    body = dict(response.json())  # type: ignore[attr-defined]
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text  # type: ignore[attr-defined]
    return body


def test_missing_api_key_is_401(client: TestClient) -> None:
    del client.headers["Authorization"]
    response = client.get("/v1/users/alice")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("token", ["nonsense", "sk_abc_def", "sk__", "Basic x"])
def test_unknown_api_key_is_401(client: TestClient, token: str) -> None:
    client.headers["Authorization"] = f"Bearer {token}"
    assert_problem(client.get("/v1/users/alice"), 401, "unauthorized")


def test_right_id_wrong_secret_is_401(client: TestClient, admin_token: str) -> None:
    client.headers["Authorization"] = f"Bearer {admin_token[:-2]}xx"
    assert_problem(client.get("/v1/users/alice"), 401, "unauthorized")


def test_revoked_key_is_401(client: TestClient, sparekey: Sparekey) -> None:
    key = sparekey.api_keys.create(name="soon-gone", scopes=[Scope.ADMIN])
    client.headers["Authorization"] = f"Bearer {key.token}"
    assert client.get("/v1/users").status_code == 200
    sparekey.api_keys.revoke(key.key.id)
    assert_problem(client.get("/v1/users"), 401, "unauthorized")


def test_verify_scope_cannot_manage(client: TestClient, sparekey: Sparekey) -> None:
    create_user(client)
    key = sparekey.api_keys.create(name="login-page", scopes=[Scope.VERIFY])
    client.headers["Authorization"] = f"Bearer {key.token}"
    assert_problem(client.post("/v1/users/alice/factors", json={"type": "totp"}), 403, "forbidden")
    assert_problem(client.post("/v1/users", json={"id": "bob"}), 403, "forbidden")
    assert client.post("/v1/users/alice/verify", json={"code": "123456"}).status_code == 200


def test_unknown_user_and_factor_are_404(client: TestClient) -> None:
    assert_problem(client.get("/v1/users/nobody"), 404, "user-not-found")
    assert_problem(
        client.post("/v1/users/nobody/verify", json={"code": "123456"}), 404, "user-not-found"
    )
    assert_problem(client.post("/v1/users/nobody/backup-codes"), 404, "user-not-found")
    create_user(client)
    assert_problem(client.delete("/v1/users/alice/factors/fct_missing"), 404, "factor-not-found")
    assert_problem(
        client.post("/v1/users/alice/factors/fct_missing/confirm", json={"code": "1"}),
        404,
        "factor-not-found",
    )
    assert_problem(client.get("/v1/nothing-here"), 404, "not-found")


def test_existing_user_is_409(client: TestClient) -> None:
    create_user(client)
    assert_problem(client.post("/v1/users", json={"id": "alice"}), 409, "user-exists")


def test_a_whole_number_written_with_a_fraction_is_an_integer(client: TestClient) -> None:
    """JSON Schema counts 60.0 as an integer; a body that matches the document is accepted."""
    create_user(client)
    response = client.post(
        "/v1/users/alice/factors", json={"type": "totp", "digits": 8.0, "period": 60.0}
    )
    assert response.status_code == 201, response.text
    assert (response.json()["digits"], response.json()["period"]) == (8, 60)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "totp", "digits": 9}, "body.digits"),
        ({"type": "totp", "digits": 5}, "body.digits"),
        ({"type": "totp", "period": 0}, "body.period"),
        ({"type": "totp", "algorithm": "MD5"}, "body.algorithm"),
        ({"type": "voice"}, "body.type"),
        ({}, "body.type"),
        ({"type": "totp", "label": "bad\u0000label"}, "body.label"),
        ({"type": "totp", "label": "x" * 101}, "body.label"),
        ({"type": "totp", "surprise": 1}, "body.surprise"),
        # Wrong JSON types are refused, not converted: the document promises the types.
        ({"type": "hotp", "qr_png": 0}, "body.qr_png"),
        ({"type": "totp", "qr_png": "true"}, "body.qr_png"),
        ({"type": "totp", "digits": "6"}, "body.digits"),
        ({"type": "totp", "period": True}, "body.period"),
        ({"type": "totp", "period": 30.5}, "body.period"),
    ],
)
def test_malformed_enrollment_is_422_naming_the_field(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    create_user(client)
    problem = assert_problem(
        client.post("/v1/users/alice/factors", json=body), 422, "invalid-input"
    )
    assert field in [e["field"] for e in problem["errors"]]  # type: ignore[union-attr]
    assert client.get("/v1/users/alice/factors").json() == {"factors": []}, "nothing was written"


@pytest.mark.parametrize(
    "user_id", ["", "a" * 129, "bad id", "bad/id", "-leading-dash", "\u00e9l\u00e8ve", "nul\u0000"]
)
def test_bad_user_ids_are_422(client: TestClient, user_id: str) -> None:
    assert_problem(client.post("/v1/users", json={"id": user_id}), 422, "invalid-input")


def test_lone_surrogates_and_control_characters_are_422(client: TestClient) -> None:
    raw = b'{"id": "bob", "display_name": "\\ud800"}'
    response = client.post("/v1/users", content=raw, headers={"content-type": "application/json"})
    assert_problem(response, 422, "invalid-input")
    assert_problem(
        client.post("/v1/users", json={"id": "bob", "display_name": "a\u2028b"}),
        422,
        "invalid-input",
    )
    assert client.get("/v1/users/bob").status_code == 404


def test_unparsable_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/users", content=b'{"id": "bob"', headers={"content-type": "application/json"}
    )
    assert_problem(response, 400, "malformed-request")


def test_wrong_method_is_405(client: TestClient) -> None:
    assert_problem(client.put("/v1/users"), 405, "method-not-allowed")


def test_bad_cursor_is_422(client: TestClient) -> None:
    problem = assert_problem(
        client.get("/v1/users", params={"cursor": "_-_-"}), 422, "invalid-input"
    )
    assert problem["errors"] == [
        {"field": "cursor", "message": "the cursor is not one this server gave out"}
    ]


def test_problem_types_are_described_by_the_server(client: TestClient) -> None:
    response = client.get("/problems/user-not-found")
    assert response.status_code == 200
    assert "User not found" in response.text


def test_openapi_declares_errors_as_problem_json(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    verify = document["paths"]["/v1/users/{user_id}/verify"]["post"]
    assert PROBLEM in verify["responses"]["422"]["content"]
    assert PROBLEM in verify["responses"]["401"]["content"]
    assert "application/json" not in verify["responses"]["422"]["content"]


def test_verify_route_answers_bad_input_like_every_other_route(client: TestClient) -> None:
    """The verify route is served outside FastAPI's request handling; its errors must not differ."""
    create_user(client)
    problem = assert_problem(
        client.post("/v1/users/bad%20id/verify", json={"code": "123456"}), 422, "invalid-input"
    )
    assert problem["errors"][0]["field"] == "path.user_id"  # type: ignore[index]
    problem = assert_problem(client.post("/v1/users/alice/verify", json={}), 422, "invalid-input")
    assert problem["errors"][0]["field"] == "body.code"  # type: ignore[index]
    assert_problem(
        client.post("/v1/users/alice/verify", json={"code": "1", "extra": True}),
        422,
        "invalid-input",
    )
    problem = assert_problem(
        client.post("/v1/users/alice/verify", json={"code": 123456}), 422, "invalid-input"
    )
    assert problem["errors"][0]["field"] == "body.code"  # type: ignore[index]
    assert_problem(
        client.post(
            "/v1/users/alice/verify", content=b"{", headers={"content-type": "application/json"}
        ),
        400,
        "malformed-request",
    )
    assert_problem(client.get("/v1/users/alice/verify"), 405, "method-not-allowed")
    del client.headers["Authorization"]
    assert_problem(client.post("/v1/users/alice/verify", json={"code": "1"}), 401, "unauthorized")


def test_openapi_documents_the_verify_operation_fully(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/users/{user_id}/verify"]["post"]
    assert operation["security"] == [{"HTTPBearer": []}]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["code"]
    assert operation["parameters"][0]["schema"]["pattern"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/VerifyOut"}


def test_a_delivery_failure_inside_a_request_is_502(sparekey: Sparekey) -> None:
    """A provider that did not take an email or SMS is the gateway's failure: 502, stable type."""
    api = create_app(sparekey)

    @api.post("/v1/test-only/send")
    def send() -> None:
        raise DeliveryError("twilio: HTTP 400, error 21211: The 'To' number [destination] ...")

    with TestClient(api) as test_client:
        problem = assert_problem(test_client.post("/v1/test-only/send"), 502, "delivery-failed")
        assert problem["detail"] == (
            "twilio: HTTP 400, error 21211: The 'To' number [destination] ..."
        )
        assert "Delivery failed" in test_client.get("/problems/delivery-failed").text


# -- Found by fuzzing the API from its OpenAPI document (tests/api/test_schemathesis.py) ----------


def test_an_operators_own_user_is_kept_with_a_409(client: TestClient, sparekey: Sparekey) -> None:
    """The operators table refers to the user holding an operator's factors: deleting it was a
    foreign-key failure, answered 500."""
    operator = sparekey.operators.create("ada", role=OperatorRole.ADMIN).operator
    problem = assert_problem(client.delete(f"/v1/users/{operator.user_id}"), 409, "conflict")
    assert "ada" in str(problem["detail"])
    assert client.get(f"/v1/users/{operator.user_id}").status_code == 200


def test_a_resync_code_with_non_ascii_characters_is_rejected(client: TestClient) -> None:
    """compare_digest refuses str with non-ASCII characters: such codes were a 500."""
    create_user(client)
    factor = enroll(client, type="hotp")
    url = f"/v1/users/alice/factors/{factor['id']}"
    confirmed = client.post(f"{url}/confirm", json={"code": hotp_code(str(factor["secret"]), 0)})
    assert confirmed.status_code == 200, confirmed.text
    for codes in (["\u00f7", "\U0001f600<"], ["\uff11\uff12\uff13\uff14\uff15\uff16", "123456"]):
        assert_problem(client.post(f"{url}/resync", json={"codes": codes}), 422, "code-rejected")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/v1/users", "GET, POST"),
        ("PUT", "/v1/users/alice", "GET, PATCH, DELETE"),
        ("POST", "/v1/users/alice/factors/fct_x", "GET, PATCH, DELETE"),
        ("GET", "/v1/users/alice/verify", "POST"),
        ("DELETE", "/v1/users/alice/vault-backups/latest", "GET, PUT"),
    ],
)
def test_405_allows_every_method_of_the_path(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    """RFC 9110 §15.5.6: Allow lists the methods the resource supports, not those of the first
    route matching the path."""
    response = client.request(method, path)
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == allowed


def test_every_documented_error_is_problem_json(client: TestClient) -> None:
    """Also on operations whose success is not JSON (plain text, the bytes of a vault backup)."""
    document = client.get("/openapi.json").json()
    problem = {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemModel"}}}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if int(status) >= 400:
                    assert answer["content"] == problem, (method, path, status)
    assert_problem(client.get("/problems/no-such-type"), 404, "not-found")


def test_every_reference_in_the_document_resolves(client: TestClient) -> None:
    """Schemas given whole (the hot paths' request bodies) had ``#/$defs/...`` references that
    point nowhere from the document's root."""
    document = client.get("/openapi.json").json()
    text = json.dumps(document)
    assert "$defs" not in text
    for name in re.findall(r'"#/components/schemas/([^"]+)"', text):
        assert name in document["components"]["schemas"], name


def test_every_bound_in_the_document_is_json_schema(client: TestClient) -> None:
    """A bound pydantic cannot translate is written as its own ``ge``/``le``, which JSON Schema
    ignores: clients (and fuzzers) would think any number goes."""

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            if "type" in node:
                assert not {"ge", "le", "gt", "lt"} & node.keys(), path
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}/{index}")

    walk(client.get("/openapi.json").json(), "")


def test_the_web_pages_are_not_in_the_document(client: TestClient) -> None:
    """The self-service and admin pages are HTML forms, not API operations."""
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/portal", "/console"))]
    assert all(p.startswith(("/v1/", "/healthz", "/metrics", "/problems/")) for p in paths)


@pytest.mark.parametrize("ip", ["", " 192.0.2.1", "192.0.2.1 ", "fe80::1%eth0", "192.0.2.001"])
def test_a_context_ip_is_an_address_as_documented(client: TestClient, ip: str) -> None:
    """The document says ipv4 or ipv6 (JSON Schema formats); what they refuse is refused."""
    schema = client.get("/openapi.json").json()["components"]["schemas"]["RequestContext"]
    assert schema["properties"]["ip"]["anyOf"][0]["anyOf"] == [
        {"format": "ipv4"},
        {"format": "ipv6"},
    ]
    body = {"id": "bob", "context": {"ip": ip}}
    problem = assert_problem(client.post("/v1/users", json=body), 422, "invalid-input")
    assert problem["errors"][0]["field"] == "body.context.ip"  # type: ignore[index]
    assert client.post("/v1/users", json={**body, "context": {"ip": "2001:DB8::1"}}).json()


def test_text_fields_document_that_control_characters_are_refused(client: TestClient) -> None:
    """The pattern in the document is the validator's rule: text it allows is accepted."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    name = schemas["UserCreate"]["properties"]["display_name"]["anyOf"][0]
    assert name["pattern"] == SAFE_TEXT_PATTERN
    rule = re.compile(SAFE_TEXT_PATTERN)
    for text, accepted in [
        ("Zoë 🙂", True),
        ("a\tb", False),
        ("a\x85b", False),
        ("a\u2029", False),
    ]:
        assert bool(rule.match(text)) is accepted
        answer = client.post("/v1/users", json={"id": "bob", "display_name": text})
        assert answer.status_code == (201 if accepted else 422), answer.text


@pytest.mark.parametrize("moment", ["0.5", "1700000000", "2026-01-15", "2026-01-15T12:00Z"])
def test_audit_times_are_rfc_3339_as_documented(client: TestClient, moment: str) -> None:
    """The document says date-time; pydantic also took a number of seconds since 1970."""
    problem = assert_problem(
        client.get("/v1/audit", params={"until": moment}), 422, "invalid-input"
    )
    assert problem["errors"][0]["field"] == "query.until"  # type: ignore[index]
    ok = client.get("/v1/audit", params={"until": "2026-01-15T12:00:00.5+01:00"})
    assert ok.status_code == 200, ok.text


def test_the_document_says_which_destination_each_factor_needs(client: TestClient) -> None:
    """An email factor needs `address` and an SMS factor `phone`, and not the other."""
    schema = client.get("/openapi.json").json()["components"]["schemas"]["FactorCreate"]
    rules = {rule["if"]["properties"]["type"]["const"]: rule["then"] for rule in schema["allOf"]}
    assert rules["email"]["required"] == ["address"]
    assert rules["email"]["properties"]["phone"] == {"type": "null"}
    assert rules["sms"]["required"] == ["phone"]
    assert rules["sms"]["properties"]["address"] == {"type": "null"}
    create_user(client)
    for body in (
        {"type": "sms"},
        {"type": "email", "address": ""},
        {"type": "sms", "phone": "1", "address": "a@example.com"},
    ):
        assert_problem(client.post("/v1/users/alice/factors", json=body), 422, "invalid-input")


def test_a_database_failure_on_the_verify_path_is_a_503_and_passes(
    client: TestClient, sparekey: Sparekey
) -> None:
    """The verify route talks to the driver directly (storage/prepared.py); its errors are raised
    as SQLAlchemy's, so a failing database answers 503 problem+json there too, not 500."""
    if not sparekey.db.is_sqlite:
        pytest.skip("a failure of the SQLite file is made on demand; the translation is shared")
    create_user(client)
    factor = enroll(client, type="hotp")
    url = f"/v1/users/alice/factors/{factor['id']}"
    secret = str(factor["secret"])
    assert client.post(f"{url}/confirm", json={"code": hotp_code(secret, 0)}).status_code == 200
    with sparekey.db.write() as conn:  # the file loses a table the verify read needs
        conn.exec_driver_sql("ALTER TABLE fallback_codes RENAME TO fallback_codes_away")
    code = {"code": hotp_code(secret, 1)}
    problem = assert_problem(client.post("/v1/users/alice/verify", json=code), 503, "unavailable")
    assert "Traceback" not in json.dumps(problem)
    with sparekey.db.write() as conn:
        conn.exec_driver_sql("ALTER TABLE fallback_codes_away RENAME TO fallback_codes")
    answer = client.post("/v1/users/alice/verify", json=code)
    assert answer.status_code == 200, answer.text
    assert answer.json()["verified"] is True, "the failed attempt spent nothing"
