"""The hot path's units of work: all or nothing, and pooled connections left as others expect."""

from datetime import datetime

import pytest
from sqlalchemy import func, select

from sparekey.domain.models import FactorType
from sparekey.protocols.rfc4226 import hotp
from sparekey.runtime import Sparekey
from sparekey.storage import factors as factors_repo
from sparekey.storage import users as users_repo
from sparekey.storage.tables import users


def _now(sparekey: Sparekey) -> datetime:
    return sparekey.clock.now()


def test_after_a_unit_a_failed_transaction_still_writes_nothing(sparekey: Sparekey) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    for _ in range(30):  # cycle through the pool so the next write reuses a unit's connection
        with sparekey.db.unit() as unit:
            assert users_repo.user_exists(unit, "alice")
    now = _now(sparekey)

    def insert_then_fail() -> None:
        with sparekey.db.write() as conn:
            conn.execute(users.insert().values(id="bob", created_at=now, updated_at=now))
            raise RuntimeError("fails after the first statement")

    with pytest.raises(RuntimeError):
        insert_then_fail()
    with sparekey.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(users)).scalar_one() == 1


def test_a_unit_that_raises_after_writing_commits_nothing(sparekey: Sparekey) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    enrollment = sparekey.factors.enroll("alice", type=FactorType.HOTP)
    secret, factor_id = enrollment.secret, enrollment.factor.id
    sparekey.factors.confirm("alice", factor_id, code=hotp(key=secret, counter=0))

    def advance_then_fail() -> None:
        with sparekey.db.unit() as unit:
            now = _now(sparekey)
            assert factors_repo.advance_step(unit.write(), factor_id, step=5, drift=0, now=now)
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        advance_then_fail()
    assert sparekey.verification.verify("alice", hotp(key=secret, counter=3)).verified, (
        "counter 5 was never recorded, so 3 is still ahead of the last one used"
    )
