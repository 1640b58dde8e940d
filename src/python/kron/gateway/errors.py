"""Every error the gateway returns is JSON `{"error": <code>, "detail": <text>, ...}` with the right
status. Handlers here cover our own `ApiError`, Starlette/FastAPI `HTTPException`s (404 routes, 405,
413 bodies), request validation (422), Temporal RPC failures (503) and anything else (500).

Error bodies never echo the request: a validation error names the field and the rule, not the value
(which could be a token someone pasted into the wrong field).
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from kron.common.logging import get_logger

log = get_logger(__name__)

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    431: "request_header_too_large",
    503: "unavailable",
}
_MAX_VALIDATION_ERRORS = 20


class ErrorBody(BaseModel):
    """The shape of every error response. Some errors add fields (e.g. `connect_url`)."""

    model_config = ConfigDict(extra="allow")

    error: str
    detail: str


class ValidationErrorBody(ErrorBody):
    """422s from request validation list what was wrong (`loc`, `msg`, `type`); others (a bad
    cursor, a reused idempotency key) have only `error` and `detail`."""

    errors: list[dict[str, Any]] = Field(default_factory=list)


class ToolkitNotConnectedBody(ErrorBody):
    toolkit: str
    connect_url: str


class ApiError(Exception):
    """Raise from a route or dependency to answer with `{error, detail, **extra}`."""

    def __init__(
        self,
        status_code: int,
        error: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def not_found(what: str = "task") -> ApiError:
    return ApiError(404, "not_found", f"No such {what}")


def unauthorized(error: str, detail: str) -> ApiError:
    return ApiError(401, error, detail, headers={"WWW-Authenticate": 'Bearer realm="kron"'})


def validation_error(errors: Sequence[dict[str, Any]]) -> ApiError:
    """A 422 shaped like FastAPI's own, for checks that depend on settings (limits, model names)."""
    return ApiError(422, "validation_error", _summary(errors), errors=list(errors))


def error_json(
    status_code: int,
    error: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code, headers=headers)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can answer with."""
    models: dict[int, type[ErrorBody]] = {422: ValidationErrorBody, 409: ErrorBody}
    return {
        status: {"model": models.get(status, ErrorBody), "description": _CODES_BY_STATUS.get(status, "error")}
        for status in statuses
    }


# --- handlers


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_json(exc.status_code, exc.error, exc.detail, headers=exc.headers, **exc.extra)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES_BY_STATUS.get(exc.status_code, "client_error" if exc.status_code < 500 else "server_error")
    detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_json(exc.status_code, code, detail, headers=exc.headers)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()[:_MAX_VALIDATION_ERRORS]
    ]
    return error_json(422, "validation_error", _summary(errors), errors=errors)


async def _temporal_rpc(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RPCError)
    log.warning("temporal call failed", rpc_status=exc.status.name if exc.status else None)
    if exc.status == RPCStatusCode.RESOURCE_EXHAUSTED:
        return error_json(503, "temporal_busy", "The task service is overloaded; try again shortly",
                          headers={"Retry-After": "1"})
    return error_json(503, "temporal_unavailable", "The task service is unavailable; try again shortly",
                      headers={"Retry-After": "1"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not an input problem. The traceback goes to the log, never to the client; as plain
    # text, because a rich console traceback would print frame locals (request headers, tokens).
    # This handler runs in Starlette's outermost middleware, outside the request context the
    # middleware bound: the request id the client gets back is logged explicitly.
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    request_id = getattr(request.state, "request_id", None)
    log.error("unhandled error", exc_type=type(exc).__name__, traceback=trace, request_id=request_id)
    headers = {"X-Request-ID": request_id} if request_id else None
    return error_json(500, "internal_error", "Internal error", headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(RPCError, _temporal_rpc)
    app.add_exception_handler(Exception, _unexpected)


def _summary(errors: Sequence[dict[str, Any]]) -> str:
    parts = [f"{'.'.join(map(str, e.get('loc', ()))) or 'request'}: {e.get('msg', '')}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more if parts else "Invalid request"
