"""Errors as JSON: every refusal names a code, a message and (when there is one) the field.

The body is always `{"error": {"code", "message", "field", "request_id", ...}}`; an unexpected
exception becomes a 500 with the same shape and the request id to look up in the server log,
never a stack trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """A refusal the API answers with: HTTP status, a stable code, a message naming the field."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.details = details


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or request.headers.get("x-request-id", ""))


def error_body(
    code: str, message: str, *, field: str | None = None, request_id: str = "", **details: Any
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "field": field,
            "request_id": request_id,
            **details,
        }
    }


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    request_id: str = "",
    headers: dict[str, str] | None = None,
    **details: Any,
) -> JSONResponse:
    headers = dict(headers or {})
    if request_id:
        headers["X-Request-ID"] = request_id
    return JSONResponse(
        error_body(code, message, field=field, request_id=request_id, **details),
        status_code=status,
        headers=headers,
    )


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        where, rest = parts[0], parts[1:]
    else:
        where, rest = "body", parts
    text = ""
    for part in rest:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return f"{where}.{text}" if text and where != "body" else (text or where)


def invalid_request(errors: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The 422 for request validation errors (FastAPI's or pydantic's, locations from `body`,
    `query`, …): the first problem's field and message, and up to 20 problems."""
    problems: list[dict[str, str]] = []
    for item in errors:
        field = _location(item.get("loc", ()))
        problems.append({"field": field, "message": str(item.get("msg", "invalid"))})
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    if first["message"].startswith("JSON decode error"):
        message = "the body is not valid JSON"
    else:
        message = f"{first['field']}: {first['message']}"
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more problem(s))"
    return {
        "status": 422,
        "code": "invalid_request",
        "message": message,
        "field": first["field"],
        "problems": problems[:20],
    }


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(
            exc.status,
            exc.code,
            exc.message,
            field=exc.field,
            request_id=request_id_of(request),
            headers=exc.headers,
            **exc.details,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(**invalid_request(exc.errors()), request_id=request_id_of(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(
            exc.status_code,
            code,
            message,
            request_id=request_id_of(request),
            headers=dict(exc.headers or {}),
        )
