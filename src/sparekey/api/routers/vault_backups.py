"""/v1/users/{id}/vault-backups: the desktop authenticator's encrypted vault, stored opaque.

Every call takes ``Authorization: Bearer skd_...``, a live device token of this user (never an
API key). Uploads are conditional (RFC 9110 §13): ``If-Match: "<ETag of the latest>"``, or
``If-None-Match: *`` for the first; each version's ETag is ``"v{version}-{16 hex of its SHA-256}"``.
The body is read up to ``vault_backup_max_bytes`` and no further.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, status
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from sparekey.api.deps import App, CurrentDeviceToken, device_caller
from sparekey.api.problems import ProblemModel
from sparekey.api.schemas import (
    UserIdPath,
    VaultBackupList,
    VaultBackupOut,
    VaultBackupStored,
    VersionPath,
)
from sparekey.domain.errors import InvalidInputError
from sparekey.domain.models import VaultBackupData
from sparekey.services.vault_backups import Precondition, VaultBackupService

router = APIRouter(prefix="/v1/users/{user_id}/vault-backups", tags=["vault backups"])

OCTET_STREAM = "application/octet-stream"
_ENTITY_TAG = re.compile(r'\s*((?:W/)?"[^"]*")\s*(?:,|$)')
_MAX_TAGS = 20


def _problem(description: str) -> dict[str, Any]:
    return {"model": ProblemModel, "description": description}


_HEADERS = {
    "ETag": {
        "description": 'The version\'s entity tag: `"v{version}-{first 16 hex of its SHA-256}"`',
        "schema": {"type": "string"},
    },
    "Cache-Control": {"description": "`no-store`", "schema": {"type": "string"}},
}
_BLOB = {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}}
_UPLOAD = {OCTET_STREAM: {"schema": {"type": "string", "format": "binary", "minLength": 1}}}
_AUTH: dict[int | str, dict[str, Any]] = {
    401: _problem("No device token, or not a live one (an API key is refused here)"),
    403: _problem("The device token belongs to another user"),
}
_READ: dict[int | str, dict[str, Any]] = {
    **_AUTH,
    200: {"description": "The bytes exactly as stored", "content": _BLOB, "headers": _HEADERS},
    404: _problem("No such backup (`vault-backup-not-found`)"),
}


def _tags(value: str) -> tuple[str, ...]:
    """The entity tags of an If-Match / If-None-Match list; a bare (unquoted) tag is taken as if
    quoted, since nothing else could have been meant."""
    found = _ENTITY_TAG.findall(value)
    if not found and value.strip():
        found = [f'"{part.strip().strip(chr(34))}"' for part in value.split(",") if part.strip()]
    if len(found) > _MAX_TAGS:
        raise InvalidInputError(f"at most {_MAX_TAGS} entity tags", field="header.if-match")
    return tuple(found)


def _precondition(if_match: str | None, if_none_match: str | None) -> Precondition:
    match_any = if_match is not None and if_match.strip() == "*"
    none_any = if_none_match is not None and if_none_match.strip() == "*"
    return Precondition(
        if_match=() if match_any or if_match is None else _tags(if_match),
        if_match_any=match_any,
        if_none_match=() if none_any or if_none_match is None else _tags(if_none_match),
        if_none_match_any=none_any,
    )


async def _body(request: Request, backups: VaultBackupService) -> bytes:
    """The request body, read no further than the limit (then 413): a declared length over it is
    refused before a byte is read, and a chunked body is cut off where it passes the limit."""
    limit = backups.max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise backups.too_large()
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise backups.too_large()
    return bytes(received)


def _blob(found: VaultBackupData) -> Response:
    return Response(
        content=found.content,
        media_type=OCTET_STREAM,
        headers={"ETag": found.backup.etag, "Cache-Control": "no-store"},
    )


@router.put(
    "/latest",
    status_code=status.HTTP_201_CREATED,
    response_model=VaultBackupStored,
    responses={
        **_AUTH,
        201: {"description": "Stored as the next version", "headers": _HEADERS},
        404: _problem("The user does not exist"),
        412: {
            **_problem("The latest is not the one named (`precondition-failed`)"),
            "headers": {"ETag": {**_HEADERS["ETag"], "description": "The latest's entity tag"}},
        },
        413: _problem("Larger than `vault_backup_max_bytes` (`vault-backup-too-large`)"),
        415: _problem("Not sent as application/octet-stream"),
        428: _problem("Neither If-Match nor If-None-Match: * (`precondition-required`)"),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The vault as the desktop encrypted it: opaque bytes, at least one "
            "and at most `vault_backup_max_bytes` (1 MiB by default)",
            "content": _UPLOAD,
        }
    },
)
async def store_vault_backup(
    user_id: UserIdPath,
    request: Request,
    response: Response,
    app: App,
    token: CurrentDeviceToken,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            max_length=2000,
            description='The ETag of the latest backup this computer has seen (`"v3-..."`)',
        ),
    ] = None,
    if_none_match: Annotated[
        str | None,
        Header(
            alias="If-None-Match",
            max_length=2000,
            description="`*` for the first backup (refused if there is one already)",
        ),
    ] = None,
) -> VaultBackupStored:
    """Store the body as the user's next version, if the latest is still the one `If-Match`
    names (or, with `If-None-Match: *`, if there is none). Two uploads from the same latest:
    one is stored, the other gets `412` with the new `ETag`. The newest `vault_backup_keep`
    versions are kept."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != OCTET_STREAM:
        raise HTTPException(415, detail=f"send the vault backup as {OCTET_STREAM}")
    precondition = _precondition(if_match, if_none_match)
    content = b""
    if precondition.given:  # otherwise store() refuses it (428) without reading the body
        content = await _body(request, app.vault_backups)
    backup = await run_in_threadpool(
        app.vault_backups.store,
        user_id,
        content,
        device_token=token,
        precondition=precondition,
        caller=device_caller(token, request),
    )
    response.headers["ETag"] = backup.etag
    response.headers["Cache-Control"] = "no-store"
    response.headers["Location"] = f"{request.url.path.removesuffix('/latest')}/{backup.version}"
    return VaultBackupStored.of(backup)


@router.get("", response_model=VaultBackupList, responses=_AUTH)
def list_vault_backups(
    user_id: UserIdPath, response: Response, app: App, token: CurrentDeviceToken
) -> VaultBackupList:
    """The versions kept, newest first, without their bytes."""
    backups = app.vault_backups.list(user_id)
    response.headers["Cache-Control"] = "no-store"
    return VaultBackupList(
        backups=[VaultBackupOut.of(b) for b in backups],
        latest=backups[0].version if backups else None,
    )


@router.get("/latest", response_class=Response, responses=_READ)
def get_latest_vault_backup(user_id: UserIdPath, app: App, token: CurrentDeviceToken) -> Response:
    """The newest version's bytes, with its `ETag`."""
    return _blob(app.vault_backups.read(user_id))


@router.get("/{version}", response_class=Response, responses=_READ)
def get_vault_backup(
    user_id: UserIdPath, version: VersionPath, app: App, token: CurrentDeviceToken
) -> Response:
    """A kept version's bytes, with its `ETag`."""
    return _blob(app.vault_backups.read(user_id, version))
