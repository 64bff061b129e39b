"""`sparekey keys rotate-dek` killed at chosen points of the re-encryption, resumed to the end,
while a server keeps verifying codes: no secret is ever left unreadable, none stays under the old
data key, and the old key is destroyed once nothing names it."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from sparekey.crypto.keyring import KeyPurpose
from sparekey.protocols.rfc4226 import hotp
from tests.crash.nodes import Deployment, Server
from tests.services.test_keys import hotp_users

pytestmark = pytest.mark.slow  # real processes, started and killed

USERS = 24
BATCH = "8"


def _keys_in_use(deployment: Deployment) -> dict[int, int]:
    rows = deployment.query("SELECT secret_key_id, COUNT(*) AS n FROM factors GROUP BY 1")
    return {int(row.secret_key_id): int(row.n) for row in rows}


def _everyone_signs_in(
    deployment: Deployment, server: Server, users: dict[str, tuple[bytes, int]]
) -> None:
    """Each user's next HOTP code verifies: their secret decrypts, whichever key seals it."""
    for user_id, (seed, counter) in users.items():
        code = hotp(key=seed, counter=counter)
        answer = server.post(deployment.admin_token, f"/v1/users/{user_id}/verify", {"code": code})
        assert answer.status_code == 200, answer.text
        assert answer.json()["verified"] is True, f"{user_id} cannot sign in"
        users[user_id] = (seed, counter + 1)


def test_a_rotation_killed_mid_batch_and_between_batches_resumes_and_loses_nothing(
    deploy: Callable[..., Deployment],
) -> None:
    deployment = deploy()
    with deployment.app() as app:
        users = hotp_users(app, USERS)
        old = app.keyring.active_id(KeyPurpose.ENCRYPTION)
    (server,) = deployment.serve(None)
    rotate = ("keys", "rotate-dek", "--batch-size", BATCH)

    # Killed in the second batch, four secrets into it: the first batch stays, the second is
    # rolled back whole.
    code, output = deployment.run(*rotate, crash_at="keys.reencrypt.resealed:12")
    assert code == -signal.SIGKILL, output
    with deployment.app() as app:
        new = app.keyring.active_id(KeyPurpose.ENCRYPTION)
    assert new != old, "the new key is active from the start"
    assert _keys_in_use(deployment) == {new: 8, old: 16}
    _everyone_signs_in(deployment, server, users)

    # Run again, killed right after its first batch commits: it went on where the first stopped.
    code, output = deployment.run(*rotate, crash_at="keys.reencrypt.batch_committed:1")
    assert code == -signal.SIGKILL, output
    assert _keys_in_use(deployment) == {new: 16, old: 8}
    _everyone_signs_in(deployment, server, users)

    code, output = deployment.run(*rotate)
    assert code == 0, output
    assert f"Resumed the rotation to encryption key {new} is active." in output
    assert f"Re-encrypted {USERS // 3} secrets." in output
    assert f"Retired keys: {old}." in output
    assert _keys_in_use(deployment) == {new: USERS}, "nothing left under the old key"
    _everyone_signs_in(deployment, server, users)
    server.stop()

    assert deployment.query("SELECT id FROM data_keys WHERE id = :id", id=old) == []
    keys = [
        (event, details)
        for event, details in deployment.audit()
        if event in ("keys.dek_created", "keys.reencrypted", "keys.dek_destroyed")
    ]
    assert keys[-3:] == [
        ("keys.dek_created", {"key_id": new, "purpose": "encryption", "kek": keys[-3][1]["kek"]}),
        ("keys.reencrypted", {"key_id": new, "records": USERS // 3, "resumed": True}),
        ("keys.dek_destroyed", {"key_id": old, "purpose": "encryption"}),
    ], "one new key for the three runs, re-encryption recorded once it finished"
    deployment.assert_audit_chain_verifies()
