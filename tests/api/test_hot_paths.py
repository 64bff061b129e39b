"""The hot paths (checking a code, a passkey) are answered before FastAPI's middleware stack
(sparekey.api.app.SparekeyAPI); what they answer must not differ from what the stack would."""

from __future__ import annotations

import logging

import pytest

from sparekey.api.app import SparekeyAPI
from sparekey.api.routers import verify, webauthn
from sparekey.runtime import Sparekey
from tests.api.test_metrics import _client, scrape
from tests.helpers import create_user

HOT = [verify.PATH.format(user_id="alice"), webauthn.VERIFY_PATH]


def test_both_hot_paths_are_answered_before_the_stack(sparekey: Sparekey) -> None:
    with _client(sparekey) as client:
        app = client.app
        assert isinstance(app, SparekeyAPI)
        assert {route.path for route in app.hot_routes} == {verify.PATH, webauthn.VERIFY_PATH}
        hot_endpoints = {route.endpoint for route in app.hot_routes}
        assert not [r for r in app.router.routes if getattr(r, "endpoint", None) in hot_endpoints]


@pytest.mark.parametrize("path", HOT)
def test_an_unexpected_error_is_a_problem_counted_as_500_and_logged(
    sparekey: Sparekey,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    for way_in in ("verify", "verify_or_defer"):  # SQLite's path tries the write lock
        monkeypatch.setattr(sparekey.verification, way_in, fails)
    monkeypatch.setattr(sparekey.webauthn, "finish_authentication", fails)
    with _client(sparekey) as client:
        create_user(client)
        body = {"code": "123456"} if "users" in path else {"credential": {"id": "x"}}
        with caplog.at_level(logging.ERROR, logger="sparekey.api"):
            answer = client.post(path, json=body)
        metrics = scrape(client)
    assert answer.status_code == 500, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "/problems/internal-error"
    assert "a bug" not in answer.text
    assert metrics['sparekey_http_responses_total{code="500"}'] == 1
    assert any("unhandled error on POST" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("path", HOT)
def test_errors_before_the_service_are_the_stacks_problems_and_counted(
    sparekey: Sparekey, path: str
) -> None:
    with _client(sparekey) as client:
        unauthorized = client.post(path, json={}, headers={"Authorization": "Bearer nope"})
        malformed = client.post(path, content=b"{", headers={"Content-Type": "application/json"})
        other_method = client.get(path)
        metrics = scrape(client)
    assert unauthorized.status_code == 401
    assert unauthorized.json()["type"] == "/problems/unauthorized"
    assert malformed.status_code in (400, 422)
    assert malformed.headers["content-type"] == "application/problem+json"
    assert other_method.status_code == 405, "other methods go through the stack"
    assert other_method.headers["allow"] == "POST"
    assert metrics['sparekey_http_responses_total{code="401"}'] == 1
    assert metrics['sparekey_http_responses_total{code="405"}'] == 1
