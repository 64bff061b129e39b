"""/v1/users: the application's users."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from sparekey.api.deps import AdminKey, App, ManageKey, caller_of, require
from sparekey.api.schemas import SafeText, UserCreate, UserIdPath, UserList, UserOut, UserPatch
from sparekey.domain.models import Scope

router = APIRouter(
    prefix="/v1/users", tags=["users"], dependencies=[Depends(require(Scope.MANAGE))]
)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserOut)
def create_user(body: UserCreate, app: App, key: ManageKey) -> UserOut:
    user = app.users.create(
        user_id=body.id,
        display_name=body.display_name,
        email=body.email,
        caller=caller_of(key, body.context),
    )
    return UserOut.of(user)


@router.get("", response_model=UserList)
def search_users(
    app: App,
    query: Annotated[
        SafeText, Query(max_length=200, description="Part of an id, name or email")
    ] = "",
    cursor: Annotated[str | None, Query(max_length=400, pattern=r"^[A-Za-z0-9_-]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> UserList:
    page = app.users.search(query=query, cursor=cursor, limit=limit)
    return UserList(users=[UserOut.of(u) for u in page.users], next_cursor=page.next_cursor)


@router.get("/{user_id}", response_model=UserOut)
def get_user(user_id: UserIdPath, app: App) -> UserOut:
    return UserOut.of(app.users.get(user_id))


@router.patch("/{user_id}", response_model=UserOut)
def update_user(user_id: UserIdPath, body: UserPatch, app: App, key: ManageKey) -> UserOut:
    changes = {name: getattr(body, name) for name in body.model_fields_set if name != "context"}
    caller = caller_of(key, body.context)
    return UserOut.of(app.users.update(user_id, changes=changes, caller=caller))


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_user(user_id: UserIdPath, app: App, key: ManageKey) -> Response:
    app.users.delete(user_id, caller=caller_of(key, None))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{user_id}/throttle/reset", response_model=UserOut)
def lift_throttle(user_id: UserIdPath, app: App, key: AdminKey) -> UserOut:
    """Lift a lock or suspension of the user's authenticator codes (admin scope)."""
    return UserOut.of(app.users.lift_throttle(user_id, caller=caller_of(key, None)))
