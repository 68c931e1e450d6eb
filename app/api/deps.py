"""Dependencies: settings, database session, storage, and the owner behind the bearer key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app import crud
from app.api.errors import ApiError
from app.core.config import Settings
from app.core.storage import Storage
from app.models import Owner

bearer = HTTPBearer(auto_error=False, description="An API key from `mmguard admin create-key`")

# the browser UI keeps the key in this HttpOnly, SameSite=Strict cookie (app/api/routes/session.py);
# a cookie-authenticated request that changes something must also carry CSRF_HEADER, which a page
# on another site cannot add without a CORS preflight this API never grants
SESSION_COOKIE = "mmguard_session"
CSRF_HEADER = "X-Mmguard-Ui"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def get_storage(request: Request) -> Storage:
    return request.app.state.storage  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_db)]
StorageDep = Annotated[Storage, Depends(get_storage)]


def _unauthorized(detail: str) -> ApiError:
    error = ApiError(401, detail)
    error.headers["WWW-Authenticate"] = "Bearer"
    return error


def get_current_owner(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Owner:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie or request.headers.get("authorization"):
            raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        if request.method not in SAFE_METHODS and not request.headers.get(CSRF_HEADER):
            raise ApiError(403, f"a request signed in by cookie must carry the {CSRF_HEADER} header")
        key = cookie
    else:
        key = credentials.credentials
    owner = crud.authenticate(session, key)
    if owner is None:
        raise _unauthorized("invalid or revoked API key")
    return owner


OwnerDep = Annotated[Owner, Depends(get_current_owner)]

# where a listing starts; capped because SQLite refuses an OFFSET beyond a 64-bit integer (a 500, not a 422)
OffsetQuery = Annotated[int, Query(ge=0, le=2**31 - 1)]
