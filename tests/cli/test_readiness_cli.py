"""``sparekey readiness`` as an operator runs it: a real process, in three formats, on both
databases. The process reads the real clock, so the population is made with it too."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sparekey.api import create_app
from sparekey.domain.models import Scope
from sparekey.runtime import Sparekey, initialize
from sparekey.settings import Settings
from tests.cli.test_cli import run
from tests.services.test_readiness import add_factor_row, add_operator, enroll_totp


@pytest.fixture
def deployment(settings: Settings) -> Iterator[Sparekey]:
    """alice: an app, a security key and a proven set (ready); bob: one app, an admin operator
    without a security key; carol: nothing."""
    initialize(settings)
    app = Sparekey.open(settings)
    for user_id in ("alice", "bob", "carol"):
        app.users.create(user_id=user_id, display_name=None, email=None)
    codes = app.backup_codes.regenerate("alice").codes
    assert app.readiness.check_backup_code("alice", codes[0]).valid
    enroll_totp(app, "alice", app.clock.now())
    add_factor_row(app, "alice", "fct_alice_key", at=app.clock.now())
    enroll_totp(app, "bob", app.clock.now())
    add_operator(app, "root", "bob", role="admin")
    yield app
    app.close()


def readiness(settings: Settings, *args: str) -> str:
    done = run(
        "readiness",
        *args,
        data_dir=settings.data_dir,
        env={"SPAREKEY_DATABASE_URL": settings.database_url},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def test_json_is_the_apis_report(settings: Settings, deployment: Sparekey) -> None:
    printed = json.loads(readiness(settings, "--format", "json"))
    token = deployment.api_keys.create(name="t", scopes=[Scope.ADMIN]).token
    with TestClient(create_app(deployment)) as client:
        served = client.get("/v1/readiness", headers={"Authorization": f"Bearer {token}"}).json()
    assert printed.pop("generated_at").endswith("Z")
    served.pop("generated_at")
    assert printed == served
    assert (printed["users"], printed["one_device_from_lockout"], printed["no_way_in"]) == (
        3,
        1,
        1,
    )
    assert printed["admins_without_phishing_resistant"] == ["root"]


def test_csv_has_one_fact_per_row(settings: Settings, deployment: Sparekey) -> None:
    rows = list(csv.DictReader(io.StringIO(readiness(settings, "--format", "csv"))))
    assert set(rows[0]) == {"section", "item", "value", "impact"}
    summary = {r["item"]: r["value"] for r in rows if r["section"] == "summary"}
    assert summary == {
        "users": "3",
        "one_device_from_lockout": "1",
        "no_way_in": "1",
        "mean_score": str(deployment.readiness.report().mean_score),
        "median_score": "25",
        "admins": "1",
        "admins_without_phishing_resistant": "1",
    }
    scores = [(r["item"], r["value"]) for r in rows if r["section"] == "score"]
    assert [value for _, value in scores] == ["1", "0", "1"] + ["0"] * 7 + ["1"]
    assert [item for item, _ in scores][::5] == ["0-9", "50-59", "100"]
    actions = [(r["item"], r["value"], r["impact"]) for r in rows if r["section"] == "action"]
    assert actions == [  # most points first
        ("generate_backup_codes", "2", "35"),
        ("enroll_factor", "1", "45"),
        ("add_second_factor", "1", "25"),
        ("add_phishing_resistant_factor", "2", "10"),
        ("run_recovery_drill", "2", "5"),
    ]
    admins = [r["item"] for r in rows if r["section"] == "admin_without_phishing_resistant"]
    assert admins == ["root"]


def test_table_is_for_people(settings: Settings, deployment: Sparekey) -> None:
    table = readiness(settings)  # the default format
    assert table.startswith("Recovery readiness of 3 users at ")
    assert "one lost device from lockout" in table
    assert "admins without a security key or passkey: 1 of 1 (root)" in table
    assert "generate_backup_codes" in table
    assert "Generate backup codes" in table


def test_without_a_deployment_it_fails_in_one_line(tmp_path: Path) -> None:
    done = run("readiness", data_dir=tmp_path / "empty")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "no Sparekey deployment" in done.stderr
    bad = run("readiness", "--format", "xml", data_dir=tmp_path / "empty")
    assert bad.returncode == 2
