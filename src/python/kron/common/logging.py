"""structlog, configured once per process: JSON lines unless stderr is a terminal.

Context such as `workflow_id` or `request_id` is bound with `structlog.contextvars` and appears on
every line logged while it is bound. Values under keys that look like secrets are redacted.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEY_PARTS = ("api_key", "apikey", "secret", "password", "authorization", "bearer", "jwt")
_configured = False


def _redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event:
        lowered = key.lower()
        # "access_token" or "token" is a secret; "input_tokens" (a count) is not.
        is_token = lowered == "token" or lowered.endswith("_token")
        if key != "event" and (is_token or any(part in lowered for part in _SECRET_KEY_PARTS)):
            event[key] = "[redacted]"
    return event


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Idempotent; `json=None` picks JSON unless stderr is a TTY."""
    global _configured
    if _configured:
        return
    _configured = True
    render_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if render_json
        # Plain tracebacks: the rich one prints frame locals, which can hold request headers.
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Route stdlib logging (temporalio, uvicorn, httpx) to stderr at WARNING so it doesn't drown us.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
