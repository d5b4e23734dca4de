"""The one place where errors become HTTP answers.

Every answer to a failed request is JSON: ``{"message": ..., "error": {"code",
"message", "field"?, "hint"?}}``. ``message`` is what DevConnect's web client
shows; ``error.code`` is the stable machine code (the same ``error_code`` the CLI
prints with ``--json``). Statuses are chosen by error class here and nowhere else;
anything unexpected is logged with its traceback and answered 500 without
details (and counted: the Schemathesis run in the suite requires that none occurs).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from devctl.errors import (
    Conflict,
    DevctlError,
    Forbidden,
    NotFound,
    RateLimited,
    StackNotRunning,
    Unauthenticated,
    UsageError,
)

log = logging.getLogger("devctl.api")

# Most specific first: the first class an error is an instance of decides.
STATUS_BY_ERROR: tuple[tuple[type[DevctlError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (RateLimited, 429),
    (StackNotRunning, 503),  # Redis, Kafka or the database did not answer in time
    (UsageError, 400),  # InvalidInput, ConfigError-free usage problems of a request
)


def status_for(error: DevctlError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


def error_body(
    code: str, message: str, *, field: str | None = None, hint: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    if hint:
        error["hint"] = hint
    return {"message": message, "error": error}


# What a user is told when a server is out: the client shows ``message`` on a page,
# so addresses, ports and driver errors stay in the log.
_UNAVAILABLE = "The service is temporarily unavailable; please try again in a moment."
_LOG_EVERY = 5.0  # seconds between log lines of one kind of outage
_last_logged: dict[str, float] = {}


def _log_outage(error: DevctlError) -> None:
    now = time.monotonic()
    if now - _last_logged.get(error.error_code, -_LOG_EVERY) >= _LOG_EVERY:
        _last_logged[error.error_code] = now
        log.warning("answering 503: %s", error.message)


def public_message(error: DevctlError) -> str:
    """What a client is told of ``error``: an outage in general words (logged here,
    throttled), anything else as the error says it. Socket.IO's ``error`` events
    use it as the HTTP answers do."""
    if status_for(error) == 503:
        _log_outage(error)
        return _UNAVAILABLE
    return error.message


def error_response(error: DevctlError) -> JSONResponse:
    status = status_for(error)
    if status == 503:
        body = error_body(error.error_code, public_message(error))
    else:
        body = error_body(error.error_code, error.message, field=error.field, hint=error.hint)
    headers: dict[str, str] = {}
    if isinstance(error, RateLimited):
        # DevConnect's client reads these at the top level of a 429.
        for name in ("tier", "limit", "used"):
            if name in error.data:
                body[name] = error.data[name]
        retry = error.data.get("retry_after")
        if retry is not None:
            headers["Retry-After"] = str(max(1, int(-(-float(retry) // 1))))
    if status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse(body, status_code=status, headers=headers)


_HTTP_CODES = {
    400: "invalid-input",  # a body FastAPI could not parse (invalid UTF-8, too deep)
    408: "timeout",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "too-large",
    415: "unsupported-media-type",
}


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    problems = exc.errors()
    first = problems[0] if problems else {}
    kind = first.get("type")
    location = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    field = ".".join(location) or None
    reason = str(first.get("msg", "invalid request"))
    if kind == "json_invalid":  # the location is a character offset, not a field
        field, reason = None, "the body is not valid JSON"
    elif kind == "missing" and not location:
        reason = "a JSON body is required"
    message = f"{field}: {reason}" if field else reason
    body = error_body("invalid-input", message, field=field)
    body["error"]["problems"] = [
        {
            "field": ".".join(str(p) for p in p.get("loc", ()) if p != "body"),
            "message": str(p.get("msg", "")),
        }
        for p in problems[:20]
    ]
    return JSONResponse(body, status_code=400)


def install(app: FastAPI) -> None:
    """Register the handlers: domain errors, validation errors, HTTP errors, the rest."""

    @app.exception_handler(DevctlError)
    async def _domain(request: Request, exc: DevctlError) -> JSONResponse:
        if status_for(exc) == 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http-error")
        message = str(exc.detail) if exc.detail else code
        return JSONResponse(
            error_body(code, message),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body("internal", "internal error"), status_code=500)
