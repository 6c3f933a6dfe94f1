"""Errors as RFC 9457 problem documents: the exception routes raise, its response, its OpenAPI entries."""

from __future__ import annotations

from fastapi.responses import JSONResponse

MEDIA_TYPE = "application/problem+json"
WHY = {
    400: "bad request body",
    401: "no valid token (see POST /v1/users)",
    403: "the token is another user's",
    404: "no such item",
    408: "the request body stalled",
    413: "upload or image too large",
    415: "not an image",
    422: "invalid request or undecodable image",
    429: "rate limit exceeded (see Retry-After)",
    503: "the database is unavailable (see Retry-After)",
}


class Problem(Exception):
    """An error sent to the client as a problem document (status, title, detail)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        body = {"type": "about:blank", "title": self.title, "status": self.status, "detail": self.detail}
        if self.status == 401:  # RFC 9110: say how to authenticate
            headers = {"WWW-Authenticate": "Bearer"} | (headers or {})
        return JSONResponse(body, status_code=self.status, media_type=MEDIA_TYPE, headers=headers)


def documented(*codes: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries for the problem documents a route may answer with."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {code: {"description": WHY[code], "content": {MEDIA_TYPE: {"schema": schema}}} for code in codes}
