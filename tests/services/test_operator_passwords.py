"""Operator console passwords: Argon2id hashes, rehashing when the parameters change, and the same
answer for an unknown name, a missing password, a wrong one and a disabled operator."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from sparekey.domain.errors import InvalidInputError, RateLimitedError
from sparekey.domain.models import OperatorRole
from sparekey.runtime import Sparekey
from sparekey.storage.tables import operators

PASSWORD = "a long console password"


def stored_hash(sparekey: Sparekey, name: str) -> str:
    with sparekey.db.read() as conn:
        found: str = conn.execute(
            select(operators.c.password_hash).where(operators.c.name == name)
        ).scalar_one()
    return found


def test_a_password_is_checked_against_its_argon2id_hash(sparekey: Sparekey) -> None:
    sparekey.operators.create("ada", role=OperatorRole.ADMIN)
    sparekey.operators.create("bob", role=OperatorRole.ADMIN)
    assert sparekey.operators.check_password("ada", PASSWORD) is None  # none set yet
    with pytest.raises(InvalidInputError):
        sparekey.operators.set_password("ada", "short")
    sparekey.operators.set_password("ada", PASSWORD)
    assert stored_hash(sparekey, "ada").startswith("$argon2id$")
    signed = sparekey.operators.check_password(" Ada ", PASSWORD)
    assert signed is not None
    assert signed.name == "ada"
    assert sparekey.operators.check_password("ada", PASSWORD + "x") is None
    assert sparekey.operators.check_password("nobody", PASSWORD) is None
    assert sparekey.operators.check_password("bad name!", PASSWORD) is None
    sparekey.operators.disable("ada")
    assert sparekey.operators.check_password("ada", PASSWORD) is None


def test_a_hash_with_old_parameters_is_replaced_at_sign_in(sparekey: Sparekey) -> None:
    sparekey.operators.create("ada", role=OperatorRole.ADMIN)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with sparekey.db.write() as conn:
        conn.execute(update(operators).values(password_hash=weak))
    assert sparekey.operators.check_password("ada", PASSWORD) is not None
    renewed = stored_hash(sparekey, "ada")
    assert renewed != weak
    assert not PasswordHasher().check_needs_rehash(renewed)
    assert sparekey.operators.check_password("ada", PASSWORD) is not None


def test_attempts_are_limited_per_name(sparekey: Sparekey) -> None:
    sparekey.operators.create("ada", role=OperatorRole.ADMIN)
    sparekey.operators.set_password("ada", PASSWORD)
    for _ in range(5):
        assert sparekey.operators.check_password("ada", "wrong") is None
    with pytest.raises(RateLimitedError):
        sparekey.operators.check_password("ada", PASSWORD)
    assert sparekey.operators.check_password("bob", PASSWORD) is None  # another name: its own
