"""One pure-ASGI middleware for every HTTP request: request id (bound to the log context and echoed
in `X-Request-ID`), the body-size limit and read deadline, the access log line and the request
metrics.

Pure ASGI rather than `BaseHTTPMiddleware`: it streams (SSE) untouched and the structlog context it
binds is the one the route runs in.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import structlog
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kron.common.logging import get_logger
from kron.gateway.errors import error_json
from kron.gateway.metrics import UNMATCHED_ROUTE, GatewayMetrics

log = get_logger("kron.gateway.access")

REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: GatewayMetrics,
        max_body_bytes: int,
        body_timeout_seconds: float,
        max_header_bytes: int,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500  # unless a response starts
        id_header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                declared = _content_length(scope)
                if _header_bytes(scope) > self.max_header_bytes:
                    # The HTTP layer (h11) bounds headers only while they are incomplete: headers
                    # that arrived whole in one read are measured here.
                    await error_json(
                        431, "request_header_too_large", f"The request headers exceed {self.max_header_bytes} bytes",
                        headers={"Connection": "close"},
                    )(scope, receive, send_with_request_id)
                elif declared is not None and declared > self.max_body_bytes:
                    # Refused before reading a byte of it.
                    await self._too_large()(scope, receive, send_with_request_id)
                else:
                    await self.app(scope, self._limited(receive), send_with_request_id)
            finally:
                seconds = time.perf_counter() - started
                route = _route_template(scope)
                self.metrics.observe_request(route, scope["method"], status, seconds)
                log.info(
                    "request",
                    method=scope["method"],
                    route=route,
                    status=status,
                    duration_ms=round(seconds * 1000, 2),
                )

    def _too_large(self) -> ASGIApp:
        return error_json(
            413, "payload_too_large", f"The request body is larger than {self.max_body_bytes} bytes"
        )

    def _limited(self, receive: Receive) -> Receive:
        """Count body bytes as they arrive (chunked bodies have no Content-Length), and give the
        whole body `body_timeout_seconds` from the start of the request: a body that stalls or
        trickles is a 408 that closes the connection. Once the body is in, `receive` is passed
        through (a streaming response waits on it for the client's disconnect)."""
        received = 0
        body_done = False
        deadline = asyncio.get_running_loop().time() + self.body_timeout_seconds

        async def receive_limited() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                # FastAPI re-raises HTTPExceptions from body reading: the 408 handler answers.
                raise StarletteHTTPException(
                    408, f"The request body did not arrive within {self.body_timeout_seconds:g} s",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise StarletteHTTPException(
                        413, f"The request body is larger than {self.max_body_bytes} bytes"
                    )
            return message

        return receive_limited


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = bytes(value).decode("latin-1")
            if _CLIENT_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def _header_bytes(scope: Scope) -> int:
    """The request line and headers' size, about as sent."""
    line = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
    return line + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _route_template(scope: Scope) -> str:
    """The matched route's template (`/tasks/{task_id}`), never the raw path: bounded labels."""
    path: object = getattr(scope.get("route"), "path", None)
    if path is None and "endpoint" in scope:
        # FastAPI sets `route` for its own routes only; plain Starlette ones (/openapi.json, /docs)
        # are found by their endpoint.
        routes = getattr(scope.get("app"), "routes", [])
        path = next((r.path for r in routes if getattr(r, "endpoint", None) is scope["endpoint"]), None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE
