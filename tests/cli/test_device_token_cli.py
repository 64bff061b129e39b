"""``sparekey device-token``, run as an operator runs it: a real process."""

from __future__ import annotations

import re
from pathlib import Path

from sparekey.domain.models import FactorType
from sparekey.domain.ports import SystemClock
from sparekey.protocols.otpauth import b32encode
from sparekey.runtime import Sparekey
from sparekey.settings import load_settings
from tests.cli.test_cli import run
from tests.helpers import totp_code


def test_create_list_and_revoke(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run("init", data_dir=data).returncode == 0
    app = Sparekey.open(load_settings(data))
    try:  # alice has an active factor: the API would ask for a step-up, the command line not
        app.users.create(user_id="alice", display_name=None, email=None)
        enrollment = app.factors.enroll("alice", type=FactorType.TOTP)
        code = totp_code(b32encode(enrollment.secret), SystemClock().now())
        app.factors.confirm("alice", enrollment.factor.id, code=code)
    finally:
        app.close()

    created = run("device-token", "create", "alice", "--name", "Laptop", data_dir=data)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"skd_[A-Za-z0-9_-]{43}", token)
    assert "skauth backup restore --server http://localhost:8000 --user alice" in created.stderr
    token_id = re.search(r"dtk_[a-z2-7]+", created.stderr)
    assert token_id
    listing = run("device-token", "list", "alice", data_dir=data)
    assert listing.returncode == 0, listing.stderr
    assert token_id.group() in listing.stdout
    assert "Laptop" in listing.stdout
    assert token.removeprefix("skd_") not in listing.stdout

    revoked = run("device-token", "revoke", "alice", token_id.group(), data_dir=data)
    assert revoked.returncode == 0, revoked.stderr
    assert "Revoked device token" in revoked.stderr
    row = next(
        line
        for line in run("device-token", "list", "alice", data_dir=data).stdout.splitlines()
        if token_id.group() in line
    )
    assert not row.rstrip().endswith("-"), "the revocation time is listed"

    app = Sparekey.open(load_settings(data))
    try:
        records = [(r.event, r.actor_type, r.actor_id) for r in app.audit.export()]
    finally:
        app.close()
    assert ("assurance.overridden", "operator", "cli") in records
    assert ("device_token.created", "operator", "cli") in records
    assert ("device_token.revoked", "operator", "cli") in records

    for args, message in [
        (("device-token", "create", "nobody"), "no user with id 'nobody'"),
        (("device-token", "revoke", "alice", "dtk_nope"), "no device token with id 'dtk_nope'"),
    ]:
        failed = run(*args, data_dir=data)
        assert failed.returncode == 1
        assert message in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1
