"""Prepared statements store values exactly as SQLAlchemy itself would."""

from datetime import UTC, datetime

from sqlalchemy import select

from sparekey.domain.models import FactorType
from sparekey.protocols.rfc4226 import hotp
from sparekey.runtime import Sparekey
from sparekey.storage import factors as factors_repo
from sparekey.storage.tables import factors


def test_timestamps_written_by_the_fast_path_read_back_through_sqlalchemy(
    sparekey: Sparekey,
) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    enrollment = sparekey.factors.enroll("alice", type=FactorType.HOTP)
    sparekey.factors.confirm(
        "alice", enrollment.factor.id, code=hotp(key=enrollment.secret, counter=0)
    )
    when = datetime(2026, 3, 1, 8, 30, 0, tzinfo=UTC)  # no microseconds: the tricky case
    with sparekey.db.unit() as unit:
        assert factors_repo.advance_step(
            unit.write(), enrollment.factor.id, step=7, drift=0, now=when
        )
    with sparekey.db.read() as conn:
        stored = conn.execute(
            select(factors.c.last_used_at, factors.c.last_step).where(
                factors.c.id == enrollment.factor.id
            )
        ).one()
    assert stored.last_used_at == when
    assert stored.last_step == 7
    assert sparekey.factors.get("alice", enrollment.factor.id).last_used_at == when
