"""The mark on assurance tokens from an email/SMS verification (services/assurance.py): such a
token approves no sensitive change while the user has a stronger factor, and is the step-up of a
user whose only factors are email or SMS. Codes travel through a loopback Twilio API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparekey.domain.errors import AssuranceRequiredError
from sparekey.domain.models import SYSTEM, FactorType
from sparekey.protocols.rfc4226 import hotp
from sparekey.runtime import Sparekey
from sparekey.services.assurance import Assurance, Operation
from sparekey.settings import Settings, load_settings
from tests.helpers_delivery import Provider, twilio_api, twilio_settings

PHONE = "+447911123456"
_CODE = re.compile(r"#([0-9]{6})$")


@pytest.fixture
def sms() -> Iterator[Provider]:
    with Provider(twilio_api()) as provider:
        yield provider


@pytest.fixture
def settings(tmp_path: Path, database_url: str, sms: Provider) -> Settings:
    return load_settings(
        tmp_path / "data",
        database_url=database_url,
        **twilio_settings(sms),
        fallback_channels="allowed",
    )


def _last_code(sms: Provider) -> str:
    match = _CODE.search(sms.requests[-1].form()["Body"])
    assert match, "the last text carries a code"
    return match.group(1)


def _sms_token(sparekey: Sparekey, sms: Provider, factor_id: str) -> str:
    sparekey.fallback.send("alice", factor_id)
    result = sparekey.verification.verify("alice", _last_code(sms))
    assert result.verified
    assert result.factor_type == "sms"
    assert result.assurance_token is not None
    return result.assurance_token


def _require(sparekey: Sparekey, token: str) -> None:
    with sparekey.db.write() as conn:
        sparekey.assurance.require(
            conn,
            "alice",
            operation=Operation.REMOVE_FACTOR,
            assurance=Assurance(token=token),
            caller=SYSTEM,
        )


def test_an_sms_token_steps_up_only_while_no_stronger_factor_is_active(
    sparekey: Sparekey, sms: Provider
) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    factor = sparekey.fallback.enroll("alice", type=FactorType.SMS, destination=PHONE).factor
    sparekey.fallback.confirm("alice", factor.id, code=_last_code(sms))
    weak = _sms_token(sparekey, sms, factor.id)
    assert sparekey.assurance.check(weak, user_id="alice", purpose="step-up").fallback
    _require(sparekey, weak)  # only fallback factors: this is the user's step-up

    stepped_up = Assurance(token=weak)
    hotp_enrollment = sparekey.factors.enroll("alice", type=FactorType.HOTP, assurance=stepped_up)
    sparekey.factors.confirm(
        "alice",
        hotp_enrollment.factor.id,
        code=hotp(key=hotp_enrollment.secret, counter=0),
        assurance=stepped_up,
    )
    with pytest.raises(AssuranceRequiredError, match="authenticator app or security key"):
        _require(sparekey, weak)
    fresh = _sms_token(sparekey, sms, factor.id)
    with pytest.raises(AssuranceRequiredError, match="authenticator app or security key"):
        _require(sparekey, fresh)
    strong = sparekey.verification.verify("alice", hotp(key=hotp_enrollment.secret, counter=1))
    assert strong.assurance_token is not None
    _require(sparekey, strong.assurance_token)
