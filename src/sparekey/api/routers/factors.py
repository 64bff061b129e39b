"""/v1/users/{id}/factors and backup codes: enrolling and managing second factors.

Adding or removing a factor and regenerating backup codes are sensitive changes: while the user
has an active factor they need the ``Sparekey-Assurance`` header (see ``api/assurance.py``).
"""

from __future__ import annotations

import io
from dataclasses import asdict
from typing import Annotated

import segno
from fastapi import APIRouter, Depends, Query, Response, status

from sparekey.api.assurance import Assured, forced
from sparekey.api.deps import App, ManageKey, caller_of, require
from sparekey.api.schemas import (
    BackupCodesOut,
    Body,
    CodeBody,
    ConfirmedFactorOut,
    EnrollmentOut,
    FactorCreate,
    FactorIdPath,
    FactorList,
    FactorOut,
    FactorPatch,
    FallbackEnrollmentOut,
    ResyncBody,
    SentCodeOut,
    UserIdPath,
)
from sparekey.domain.errors import InvalidInputError
from sparekey.domain.models import FactorType, Scope
from sparekey.protocols.otpauth import b32encode
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.services.assurance import Assurance

router = APIRouter(
    prefix="/v1/users/{user_id}", tags=["factors"], dependencies=[Depends(require(Scope.MANAGE))]
)


def _qr_svg(qr: segno.QRCode) -> str:
    out = io.BytesIO()
    qr.save(out, kind="svg", xmldecl=False, scale=4, border=4, title="Authenticator setup code")
    return out.getvalue().decode("utf-8")


@router.post(
    "/factors",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrollmentOut | FallbackEnrollmentOut,
)
def enroll_factor(
    user_id: UserIdPath, body: FactorCreate, app: App, key: ManageKey, assurance: Assured
) -> EnrollmentOut | FallbackEnrollmentOut:
    """A pending TOTP/HOTP factor, or an email/SMS factor (`address` or `phone`) whose first
    code is sent at once, unless the user has an email/SMS factor already (then the new
    destination waits, `usable_after`). Needs `Sparekey-Assurance` if the user has an active
    factor (a step-up token, or the enrollment token of a temporary access pass)."""
    kind = FactorType(body.type)
    if kind.fallback:
        return _enroll_fallback(user_id, kind, body, app, key, assurance)
    enrollment = app.factors.enroll(
        user_id,
        type=FactorType(body.type),
        label=body.label,
        algorithm=HashAlgorithm(body.algorithm),
        digits=body.digits,
        period=body.period,
        caller=caller_of(key, body.context),
        assurance=assurance,
    )
    qr = segno.make(enrollment.otpauth_uri, error="m")
    return EnrollmentOut(
        **FactorOut.of(enrollment.factor).model_dump(),
        otpauth_uri=enrollment.otpauth_uri,
        secret=b32encode(enrollment.secret),
        qr_svg=_qr_svg(qr),
        qr_png=qr.png_data_uri(scale=5, border=4) if body.qr_png else None,
    )


def _enroll_fallback(
    user_id: str,
    kind: FactorType,
    body: FactorCreate,
    app: App,
    key: ManageKey,
    assurance: Assurance,
) -> FallbackEnrollmentOut:
    field = "phone" if kind is FactorType.SMS else "address"
    destination = body.phone if kind is FactorType.SMS else body.address
    other = body.address if kind is FactorType.SMS else body.phone
    if not destination or other is not None:
        raise InvalidInputError(f"a {kind.value} factor needs `{field}` (and only it)", field=field)
    enrolled = app.fallback.enroll(
        user_id,
        type=kind,
        destination=destination,
        label=body.label,
        caller=caller_of(key, body.context),
        assurance=assurance,
    )
    sent = None if enrolled.sent is None else SentCodeOut(**asdict(enrolled.sent))
    return FallbackEnrollmentOut(**FactorOut.of(enrolled.factor).model_dump(), code_sent=sent)


@router.get("/factors", response_model=FactorList)
def list_factors(user_id: UserIdPath, app: App) -> FactorList:
    return FactorList(factors=[FactorOut.of(f) for f in app.factors.list(user_id)])


@router.get("/factors/{factor_id}", response_model=FactorOut)
def get_factor(user_id: UserIdPath, factor_id: FactorIdPath, app: App) -> FactorOut:
    return FactorOut.of(app.factors.get(user_id, factor_id))


@router.patch("/factors/{factor_id}", response_model=FactorOut)
def update_factor(
    user_id: UserIdPath,
    factor_id: FactorIdPath,
    body: FactorPatch,
    app: App,
    key: ManageKey,
    assurance: Assured,
) -> FactorOut:
    """Rename a factor (`label`), or point an email/SMS factor at a new `address`/`phone`: a
    sensitive change (`Sparekey-Assurance`), told to the old destination, and the new one gets no
    code for `fallback_destination_wait_seconds`."""
    caller = caller_of(key, body.context)
    given = body.model_fields_set - {"context"}
    if not given:
        raise InvalidInputError("give a `label`, or a new `phone` or `address`", field="label")
    factor = None
    destination = body.phone if "phone" in given else body.address
    if {"phone", "address"} & given:
        if destination is None or {"phone", "address"} <= given:
            raise InvalidInputError("give one new `phone` or `address`", field="phone")
        factor = app.fallback.change_destination(
            user_id, factor_id, destination=destination, caller=caller, assurance=assurance
        )
    if "label" in given:
        factor = app.factors.rename(user_id, factor_id, label=body.label, caller=caller)
    assert factor is not None
    return FactorOut.of(factor)


@router.delete(
    "/factors/{factor_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
def delete_factor(
    user_id: UserIdPath,
    factor_id: FactorIdPath,
    app: App,
    key: ManageKey,
    assurance: Assured,
    force: Annotated[
        bool,
        Query(description="Admin scope: remove even the last active factor or security key"),
    ] = False,
) -> Response:
    """Needs a step-up token in `Sparekey-Assurance` if the user has an active factor. The last
    active factor, or the last security key, is kept (`last-factor`) unless `force=true`."""
    app.factors.delete(
        user_id,
        factor_id,
        caller=caller_of(key, None),
        assurance=assurance,
        force=forced(key, force),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/factors/{factor_id}/lost", response_model=FactorOut)
def mark_factor_lost(
    user_id: UserIdPath, factor_id: FactorIdPath, app: App, key: ManageKey, body: Body | None = None
) -> FactorOut:
    """The device is lost: the factor stops working at once and is listed as `lost`; the user
    and the application are notified (`factor.lost`). No step-up: the user may have nothing
    left to verify with."""
    caller = caller_of(key, body.context if body else None)
    return FactorOut.of(app.factors.mark_lost(user_id, factor_id, caller=caller))


@router.post("/factors/{factor_id}/confirm", response_model=ConfirmedFactorOut)
def confirm_factor(
    user_id: UserIdPath,
    factor_id: FactorIdPath,
    body: CodeBody,
    app: App,
    key: ManageKey,
    assurance: Assured,
) -> ConfirmedFactorOut:
    """Activate a pending factor with its first code; like enrolling, needs
    `Sparekey-Assurance` if the user has an active factor. Also confirms an email or SMS factor's
    changed destination (`destination_unconfirmed`) with a code sent there after the wait; that
    needs no step-up (the change had one). The code just checked is a fresh verification, so the
    answer carries an `assurance_token` as verify's does."""
    caller = caller_of(key, body.context)
    if app.factors.get(user_id, factor_id).type.fallback:
        confirmed = app.fallback.confirm(
            user_id, factor_id, code=body.code, caller=caller, assurance=assurance
        )
    else:
        confirmed = app.factors.confirm(
            user_id, factor_id, code=body.code, caller=caller, assurance=assurance
        )
    token = app.assurance.issue(user_id, fallback=confirmed.type.fallback)
    return ConfirmedFactorOut(**FactorOut.of(confirmed).model_dump(), assurance_token=token)


@router.post("/factors/{factor_id}/resync", response_model=FactorOut)
def resync_factor(
    user_id: UserIdPath, factor_id: FactorIdPath, body: ResyncBody, app: App, key: ManageKey
) -> FactorOut:
    first, second = body.codes
    caller = caller_of(key, body.context)
    return FactorOut.of(
        app.factors.resync(user_id, factor_id, codes=(first, second), caller=caller)
    )


@router.post("/backup-codes", status_code=status.HTTP_201_CREATED, response_model=BackupCodesOut)
def regenerate_backup_codes(
    user_id: UserIdPath, app: App, key: ManageKey, assurance: Assured
) -> BackupCodesOut:
    """A new set replacing the old; needs a step-up token in `Sparekey-Assurance` if the user
    has an active factor."""
    new_set = app.backup_codes.regenerate(user_id, caller=caller_of(key, None), assurance=assurance)
    return BackupCodesOut(codes=new_set.codes, created_at=new_set.created_at)
