"""Whose data is it: per-user tokens for the API (the operator's CLI needs none).

``POST /v1/users`` creates a user and hands out its token once: in an HttpOnly, SameSite=Strict
cookie for the page, and in the body for API clients, who send it back as ``Authorization:
Bearer <token>``. Every per-user read and write checks it: no token or an unknown one is 401, a
token of another user 403. The database keeps only the token's sha256.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Response

from emotorch.serve.deps import RecommenderDep
from emotorch.serve.problems import Problem

TOKEN_COOKIE = "emotorch_token"
COOKIE_PATH = "/v1/"


def presented_token(request: Request) -> str | None:
    """The token the client sent: a bearer token first, else the page's cookie."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(TOKEN_COOKIE) or None


class Caller:
    """Who the request says it is: its token, looked up only when a route asks for a user (requests that
    name no user cost no database read)."""

    def __init__(self, request: Request, recommender: RecommenderDep) -> None:
        self.token, self.recommender = presented_token(request), recommender

    def require(self, user_id: str) -> None:
        """Raise 401 unless the request carried a valid token, 403 unless it is ``user_id``'s."""
        owner = self.recommender.token_owner(self.token) if self.token else None
        if owner is None:
            raise Problem(
                401,
                "Not authenticated",
                "per-user requests need the token POST /v1/users issued "
                "(Authorization: Bearer <token>, or the page's cookie)",
            )
        if owner != user_id:
            raise Problem(403, "Forbidden", "this token belongs to another user")


CallerDep = Annotated[Caller, Depends()]


def set_token_cookie(request: Request, response: Response, token: str) -> None:
    """Give the page its token in a cookie that scripts cannot read and other sites cannot send."""
    # a session cookie: the browser forgets it when it closes, as the page's consent text says
    response.set_cookie(
        TOKEN_COOKIE, token, path=COOKIE_PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


def clear_token_cookie(response: Response) -> None:
    response.delete_cookie(TOKEN_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
