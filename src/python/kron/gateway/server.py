"""The HTTP server around the app: uvicorn (h11) with the guards it lacks on its own.

uvicorn bounds only the idle time between requests (`timeout_keep_alive`): a client that sends half
a request line, or headers one byte a minute, or a body that never ends, holds its connection (and a
file descriptor, and with a body a request task) forever. So:

- request headers must be complete `header_timeout_seconds` after the connection opened, or after
  the previous response on a kept-alive connection. This can only be enforced below ASGI (the app is
  called once the headers are in), so `GuardedH11Protocol` arms a timer per wait for a request and
  closes the connection if no request has started when it fires (answering 408 JSON if part of one
  had arrived);
- a request body must be complete `body_timeout_seconds` after the request started: enforced by
  the request middleware around `receive()` (`middleware.RequestContextMiddleware`), which answers
  408 JSON and closes the connection;
- past `max_connections` open connections, a new connection's requests get a JSON 503 and it is
  closed (uvicorn's own `limit_concurrency` answers plain text);
- errors the HTTP parser answers itself (a malformed request, a bad Content-Length, headers over
  `max_header_bytes`) are JSON `{error, detail}` like every other error, not uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from kron.common.logging import get_logger
from kron.gateway.errors import error_json
from kron.gateway.settings import GatewaySettings

log = get_logger(__name__)

_OVERLOADED = error_json(
    503, "overloaded", "Too many connections; try again shortly", headers={"Retry-After": "1", "Connection": "close"}
)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus the header timeout, the connection limit and JSON parser errors.
    Configured by subclassing (`guarded_protocol`): uvicorn builds one instance per connection."""

    header_timeout_seconds: float = 10.0
    max_connections: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self.app = _OVERLOADED  # every request of this connection; the response closes it
        self._await_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _await_request(self) -> None:
        """Close the connection unless a request has started `header_timeout_seconds` from now.
        `self.cycle` is the request being handled; a new one replaces it once its headers are in."""
        if self._header_timer is not None:
            self._header_timer.cancel()
        waiting_after = self.cycle

        def expire() -> None:
            self._header_timer = None
            idle = self.cycle is waiting_after and (self.cycle is None or self.cycle.response_complete)
            if not idle or self.transport.is_closing():
                return  # a request started (a pipelined one, perhaps, already in flight)
            partial, _ = self.conn.trailing_data
            if partial:
                # Part of a request arrived but never its end: say so, outside h11 (which cannot
                # answer a request it has not parsed).
                self.transport.write(_raw_response(408, "request_timeout", "The request headers took too long"))
            self.transport.close()

        self._header_timer = self.loop.call_later(self.header_timeout_seconds, expire)

    def send_400_response(self, msg: str) -> None:
        """The HTTP parser refused the request: JSON instead of uvicorn's plain text."""
        buffered, _ = self.conn.trailing_data
        limit = self.config.h11_max_incomplete_event_size
        if limit is not None and len(buffered) > limit:  # h11 gave up waiting for the end of the headers
            status, error, detail = 431, "request_header_too_large", f"The request headers exceed {limit} bytes"
        else:
            status, error, detail = 400, "bad_request", "Invalid HTTP request (request line, headers or framing)"
        self.transport.write(_raw_response(status, error, detail))
        self.transport.close()


def _raw_response(status: int, error: str, detail: str) -> bytes:
    """A complete JSON error response, written as bytes: h11 cannot send it (it is in its error
    state, or has not seen a request to answer)."""
    request_id = uuid.uuid4().hex
    log.info("request refused by the http layer", status=status, error=error, request_id=request_id)
    body = json.dumps({"error": error, "detail": detail}).encode()
    reason = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def guarded_protocol(settings: GatewaySettings) -> type[GuardedH11Protocol]:
    return type(
        "GatewayH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout_seconds": settings.header_timeout_seconds, "max_connections": settings.max_connections},
    )


def uvicorn_config(app: Any, settings: GatewaySettings, **overrides: Any) -> uvicorn.Config:
    """How the gateway serves `app` (main, and tests that need a real socket)."""
    values: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": guarded_protocol(settings),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "log_config": None,  # structlog (configure_logging) owns logging
        "access_log": False,  # the middleware logs each request, with its request id
        "server_header": False,
        "timeout_graceful_shutdown": 10,
        **overrides,
    }
    return uvicorn.Config(app, **values)
