"""Property tests of the services that read what a person types: a sign-in code (a backup code
or anything else), a recovery drill's backup code, and a temporary access pass. Any text gives
the documented answer and nothing else: a real code typed any way is accepted once, and no other
text is ever accepted or spends anything."""

from __future__ import annotations

import itertools
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparekey.domain.errors import DrillLimitedError, PermissionDeniedError
from sparekey.domain.models import Caller
from sparekey.domain.ports import FixedClock
from sparekey.protocols.backup_codes import CODE_LENGTH, normalize
from sparekey.runtime import Sparekey
from sparekey.services.recovery import PASS_LENGTH
from sparekey.storage import backup_codes as codes_repo
from tests.protocols.typed_codes import (
    Change,
    Typing,
    apply,
    change,
    changed,
    codes,
    is_reading_of,
    typed,
    typing,
)

OPERATOR = Caller(type="operator", id="op_fuzz", role="helpdesk")

# What arrives in the code field: any text, digits (the OTP path), code-shaped text, and codes
# of either length typed the way people type them.
ANY_INPUT = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="0123456789 ", max_size=70),
    st.text(alphabet=string.ascii_letters + string.digits + " -", max_size=30),
    st.sampled_from([CODE_LENGTH, PASS_LENGTH]).flatmap(codes).flatmap(typed),
)


@pytest.fixture
def backend() -> str:
    """What is fuzzed here is parsing, which does not depend on the database: SQLite only (the
    HTTP fuzz tests in tests/api/ run on both)."""
    return "sqlite"


def _remaining(app: Sparekey, user_id: str) -> int:
    with app.db.read() as conn:
        return codes_repo.count_remaining(conn, user_id)


def _issued(app: Sparekey, user_id: str) -> list[str]:
    """A fresh backup-code set of ``user_id``, in canonical form."""
    fresh = app.backup_codes.regenerate(user_id).codes
    return [code.replace("-", "") for code in fresh]


def test_sign_in_with_any_text_never_verifies_nor_spends_a_code(sparekey: Sparekey) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    issued = set(_issued(sparekey, "alice"))
    count = len(issued)

    @settings(max_examples=80, deadline=None)
    @given(ANY_INPUT)
    def check(text: str) -> None:
        result = sparekey.verification.verify("alice", text)
        assert normalize(text) not in issued  # no random text is one of the 80-bit codes
        assert result.verified is False
        assert result.assurance_token is None
        assert _remaining(sparekey, "alice") == count

    check()


def test_a_backup_code_typed_any_way_verifies_once(sparekey: Sparekey) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    count = sparekey.settings.backup_code_count
    way = typing(CODE_LENGTH)

    @settings(max_examples=15, deadline=None)
    @given(st.integers(min_value=0, max_value=count - 1), change(CODE_LENGTH), way, way, way)
    def check(index: int, how: Change, wrong: Typing, right: Typing, again: Typing) -> None:
        issued = _issued(sparekey, "alice")
        code = issued[index]
        near = changed(code, how)
        assert near not in issued  # another of the set's 80-bit codes: never
        assert sparekey.verification.verify("alice", apply(wrong, near)).verified is False
        assert _remaining(sparekey, "alice") == count, "a wrong code spends nothing"

        first = sparekey.verification.verify("alice", apply(right, code))
        assert first.verified is True
        assert first.factor_type == "backup_code"
        assert first.backup_codes_remaining == count - 1 == _remaining(sparekey, "alice")
        second = sparekey.verification.verify("alice", apply(again, code))
        assert second.verified is False, "a backup code is spent on first use, however typed"

    check()


def test_a_drill_with_any_text_answers_or_is_limited_and_never_spends(
    sparekey: Sparekey, clock: FixedClock
) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    issued = _issued(sparekey, "alice")
    checks = itertools.count()

    @settings(max_examples=40, deadline=None)
    @given(st.one_of(ANY_INPUT, st.sampled_from(issued).flatmap(typed)))
    def check(text: str) -> None:
        if next(checks) % sparekey.settings.drill_checks == 0:
            clock.advance(sparekey.settings.drill_seconds)  # a new drill window
        try:
            result = sparekey.readiness.check_backup_code("alice", text)
        except DrillLimitedError:  # the one documented refusal
            return
        canonical = normalize(text)
        assert result.valid is (canonical in issued)
        if result.valid:
            assert canonical is not None
            assert is_reading_of(text, canonical)
        assert result.remaining == len(issued) == _remaining(sparekey, "alice")

    check()
    clock.advance(sparekey.settings.drill_seconds)
    for _ in range(sparekey.settings.drill_checks):
        sparekey.readiness.check_backup_code("alice", "not a code")
    with pytest.raises(DrillLimitedError) as limited:
        sparekey.readiness.check_backup_code("alice", "not a code")
    assert limited.value.retry_after


def test_an_access_pass_is_redeemed_only_as_typed_by_a_person_and_once(
    sparekey: Sparekey,
) -> None:
    users = (f"user{n}" for n in itertools.count())
    way = typing(PASS_LENGTH)

    @settings(max_examples=15, deadline=None)
    @given(ANY_INPUT, change(PASS_LENGTH), way, way)
    def check(text: str, how: Change, wrong: Typing, right: Typing) -> None:
        user_id = next(users)
        sparekey.users.create(user_id=user_id, display_name=None, email=None)
        issued = sparekey.recovery.break_glass(user_id, reason="fuzz", caller=OPERATOR)
        secret = issued.access_pass.replace("-", "")
        assert not is_reading_of(text, secret)  # no random text is the 100-bit pass
        for attempt in (text, apply(wrong, changed(secret, how))):
            with pytest.raises(PermissionDeniedError):
                sparekey.recovery.redeem(user_id, attempt, caller=OPERATOR)
            assert sparekey.recovery.get(issued.case.id).pass_redeemed_at is None

        redeemed = sparekey.recovery.redeem(user_id, apply(right, secret), caller=OPERATOR)
        assert redeemed.case_id == issued.case.id
        assert sparekey.recovery.get(issued.case.id).pass_redeemed_at is not None
        with pytest.raises(PermissionDeniedError):
            sparekey.recovery.redeem(user_id, issued.access_pass, caller=OPERATOR)

    check()


@pytest.mark.parametrize("text", ["", " ", "-" * 40, "\x00" * 20, "é" * 20, "9" * 10_000])
def test_a_pass_for_a_user_without_a_case_is_refused_the_same_way(
    sparekey: Sparekey, text: str
) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    with pytest.raises(PermissionDeniedError):
        sparekey.recovery.redeem("alice", text, caller=OPERATOR)
    with pytest.raises(PermissionDeniedError):
        sparekey.recovery.redeem("nobody", text, caller=OPERATOR)
