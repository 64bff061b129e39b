"""Property tests of the HTTP endpoints that take what a person typed: code verification and the
redemption of a temporary access pass. Whatever the body, the answer is ``{"verified": false}``
(or the pass's 403) or a problem+json 4xx, never a 500; a real code typed any way works once."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from httpx2 import Response
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sparekey.domain.models import Caller
from sparekey.protocols.backup_codes import CODE_LENGTH
from sparekey.runtime import Sparekey
from sparekey.services.recovery import PASS_LENGTH
from sparekey.storage import backup_codes as codes_repo
from tests.helpers import create_user
from tests.protocols.typed_codes import Typing, apply, codes, typed, typing

VERIFY = "/v1/users/alice/verify"
REDEEM = "/v1/users/alice/temporary-access/redeem"
OPERATOR = Caller(type="operator", id="op_fuzz", role="helpdesk")

JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
CODE_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="0123456789 ", max_size=70),
    st.sampled_from([CODE_LENGTH, PASS_LENGTH]).flatmap(codes).flatmap(typed),
)


def _body(field: str) -> st.SearchStrategy[bytes]:
    """Request bodies: the field with any text or JSON value, other JSON, or any bytes."""
    return st.one_of(
        CODE_TEXT.map(lambda text: json.dumps({field: text}).encode()),
        JSON_VALUES.map(lambda value: json.dumps({field: value}).encode()),
        JSON_VALUES.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=100),
    )


def _problem_or(answer: Response, *allowed: int) -> bool:
    """A 4xx problem+json (True), or one of ``allowed`` success statuses (False); nothing else."""
    assert answer.status_code < 500, answer.text
    if answer.status_code in allowed:
        return False
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"] == "application/problem+json", answer.text
    problem = answer.json()
    assert problem["type"].startswith("/problems/")
    assert problem["status"] == answer.status_code
    return True


def _remaining(sparekey: Sparekey) -> int:
    with sparekey.db.read() as conn:
        return codes_repo.count_remaining(conn, "alice")


def test_verify_answers_any_body_with_a_no_or_a_problem(
    client: TestClient, sparekey: Sparekey
) -> None:
    create_user(client)
    issued = client.post("/v1/users/alice/backup-codes").json()["codes"]
    count = len(issued)

    @settings(max_examples=50, deadline=None)
    @given(_body("code"))
    @example(b'{"code": "\\ud800"}')  # a lone surrogate
    @example(json.dumps({"code": "1" * 257}).encode())
    @example(b'{"code": "' + b"[" * 5000 + b'"}')
    @example(b"[" * 5000)  # nested deeper than any parser recurses
    def check(body: bytes) -> None:
        answer = client.post(VERIFY, content=body, headers={"content-type": "application/json"})
        if not _problem_or(answer, 200):
            assert answer.json() == {"verified": False}
        assert _remaining(sparekey) == count

    check()
    real = issued[0].lower().replace("-", " ")
    assert client.post(VERIFY, json={"code": real}).json()["verified"] is True
    assert client.post(VERIFY, json={"code": issued[0]}).json() == {"verified": False}


def test_a_backup_code_typed_any_way_verifies_over_http(client: TestClient) -> None:
    create_user(client)
    way = typing(CODE_LENGTH)

    @settings(max_examples=8, deadline=None)
    @given(way)
    def check(typing: Typing) -> None:
        fresh = client.post("/v1/users/alice/backup-codes").json()["codes"][0].replace("-", "")
        answer = client.post(VERIFY, json={"code": apply(typing, fresh)})
        assert answer.status_code == 200, answer.text
        assert answer.json()["verified"] is True
        assert answer.json()["factor_type"] == "backup_code"

    check()


def test_redeem_answers_any_body_with_a_refusal_or_a_problem(
    client: TestClient, sparekey: Sparekey
) -> None:
    create_user(client)
    issued = sparekey.recovery.break_glass("alice", reason="fuzz", caller=OPERATOR)

    @settings(max_examples=40, deadline=None)
    @given(_body("pass"))
    @example(b'{"pass": "\\ud800"}')
    @example(json.dumps({"pass": "1" * 65}).encode())
    def check(body: bytes) -> None:
        answer = client.post(REDEEM, content=body, headers={"content-type": "application/json"})
        assert _problem_or(answer), "only the real pass is redeemed"
        assert sparekey.recovery.get(issued.case.id).pass_redeemed_at is None

    check()
    typed_by_hand = issued.access_pass.lower().replace("-", "  ")
    assert client.post(REDEEM, json={"pass": typed_by_hand}).status_code == 200
    assert client.post(REDEEM, json={"pass": issued.access_pass}).status_code == 403
