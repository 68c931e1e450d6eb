"""Browser sign-in: the API key goes into an HttpOnly, SameSite=Strict cookie that page scripts cannot read."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from app import crud
from app.api.deps import CSRF_HEADER, SESSION_COOKIE, OwnerDep, SessionDep
from app.api.errors import ApiError
from app.schemas import Message

router = APIRouter(prefix="/session", tags=["session"])

SESSION_MAX_AGE = 12 * 3600


class SignIn(BaseModel):
    key: str = Field(min_length=1, max_length=512)


class SessionPublic(BaseModel):
    owner: str


@router.post("", response_model=SessionPublic, responses={401: {"model": Message}, 403: {"model": Message}})
def sign_in(body: SignIn, request: Request, response: Response, session: SessionDep) -> SessionPublic:
    """Check an API key and keep it in the session cookie (browser UI); send the CSRF header too."""
    if not request.headers.get(CSRF_HEADER):
        raise ApiError(403, f"signing in from a browser needs the {CSRF_HEADER} header")
    owner = crud.authenticate(session, body.key.strip())
    if owner is None:
        raise ApiError(401, "that API key is not valid or has been revoked")
    response.set_cookie(
        SESSION_COOKIE, body.key.strip(), max_age=SESSION_MAX_AGE, path="/", httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )
    return SessionPublic(owner=owner.name)


@router.get("", response_model=SessionPublic, responses={401: {"model": Message}})
def who_am_i(owner: OwnerDep) -> SessionPublic:
    """The owner behind the cookie (or bearer key)."""
    return SessionPublic(owner=owner.name)


@router.delete("", status_code=204)
def sign_out() -> Response:
    """Forget the session cookie."""
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
