"""The step-up headers of sensitive changes (see :mod:`sparekey.services.assurance`).

- ``Sparekey-Assurance: <assurance_token>``: the token of a successful verification of this user.
- ``Sparekey-Assurance: override``: an administrator's override, from an admin-scope key only;
  audited as ``assurance.overridden``.
- ``Sparekey-Override-Reason: <text>``: optional, why an administrator overrides (step-up, or
  ``force=true`` on removing a last factor); kept in the audit log.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from sparekey.api.deps import ManageKey
from sparekey.domain.errors import PermissionDeniedError
from sparekey.domain.models import ApiKey, OperatorRole, Scope
from sparekey.services.assurance import Assurance

__all__ = ["ASSURANCE_HEADER", "OVERRIDE", "REASON_HEADER", "Assured", "assurance_of", "forced"]

ASSURANCE_HEADER = "Sparekey-Assurance"
REASON_HEADER = "Sparekey-Override-Reason"
OVERRIDE = "override"
_MAX_REASON = 200


async def assurance_of(
    key: ManageKey,
    token: Annotated[
        str | None,
        Header(
            alias=ASSURANCE_HEADER,
            description="The `assurance_token` of a successful verify of this user (needed "
            "while the user has an active factor), or `override` (admin scope; audited)",
        ),
    ] = None,
    reason: Annotated[
        str | None,
        Header(
            alias=REASON_HEADER,
            description="Why an administrator overrides a protection; kept in the audit log",
        ),
    ] = None,
) -> Assurance:
    printable = "".join(c if c.isprintable() else " " for c in reason or "")
    why = " ".join(printable.split())[:_MAX_REASON] or None  # one line, no control characters
    given = (token or "").strip() or None
    if given is not None and given.lower() == OVERRIDE:
        _admin(key, "override step-up")
        return Assurance(override=True, reason=why)
    return Assurance(token=given, reason=why)


def forced(key: ApiKey, force: bool) -> bool:
    """``force=true`` (removing a last factor) is an administrator's call."""
    if force:
        _admin(key, "force the removal of a last factor")
    return force


def _admin(key: ApiKey, what: str) -> None:
    if not key.allows(Scope.ADMIN):
        raise PermissionDeniedError(f"only an API key with the 'admin' scope may {what}")
    # An operator's personal token has the admin scope, but only an admin operator may do what
    # an administrator does: a helpdesk override would add a factor with no recovery case.
    if key.operator_role is not None and key.operator_role != OperatorRole.ADMIN:
        raise PermissionDeniedError(f"only an operator with the admin role may {what}")


Assured = Annotated[Assurance, Depends(assurance_of)]
