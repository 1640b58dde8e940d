"""The `LLM` port over the Anthropic Messages API (the official `anthropic` SDK)."""

from __future__ import annotations

import datetime
import email.utils
import re
import time
from typing import Any

import anthropic
from anthropic.types import Message

from kron.agent_core.types import ModelCallError, ModelRequest, ModelResponse

# The SDK's own default: in-process callers keep it; the Temporal worker passes 0 so that
# Temporal's retry policy is the only one (SDK retries would hide attempts from history).
SDK_DEFAULT_MAX_RETRIES = 2
DEFAULT_TIMEOUT_SECONDS = 600.0

# Anything shaped like an Anthropic key, in case a server echoes one we do not know about.
_KEY_PATTERN = re.compile(r"sk-ant-[A-Za-z0-9_\-]+")


class AnthropicLLM:
    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        max_retries: int = SDK_DEFAULT_MAX_RETRIES,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        # An explicit key stops the SDK from looking for profile or federation credentials.
        self._api_key = api_key
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout
        )

    def __repr__(self) -> str:
        return f"AnthropicLLM(base_url={str(self._client.base_url)!r})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": request.messages,
        }
        if request.system:
            params["system"] = request.system
        if request.tools:
            params["tools"] = request.tools
        started = time.monotonic()
        failure: ModelCallError | None = None
        try:
            raw = await self._client.messages.with_raw_response.create(**params)
        except anthropic.APIError as exc:
            failure = self._to_model_call_error(exc)
        else:
            try:
                response = _to_response(await raw.parse(), raw.request_id, started)
            except (ValueError, TypeError, AttributeError) as exc:
                # A 200 whose body is not a message (a proxy's HTML page, truncated JSON, ...).
                failure = ModelCallError(
                    self._redact(
                        f"Anthropic API returned an unusable response: {type(exc).__name__}: {exc}"
                        f" (request_id={raw.request_id})"
                    ),
                    retryable=True,
                    status_code=raw.status_code,
                    code="model_bad_response",
                )
        if failure is not None:
            # Raised here, outside the except blocks: a chained SDK exception (whose text and
            # request may hold the key) would otherwise travel into logs and Temporal failures.
            raise failure
        return response

    async def aclose(self) -> None:
        await self._client.close()

    def _to_model_call_error(self, exc: anthropic.APIError) -> ModelCallError:
        if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
            what = "timed out" if isinstance(exc, anthropic.APITimeoutError) else "unreachable"
            cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
            return ModelCallError(
                self._redact(f"Anthropic API {what}: {exc.message}{cause}"),
                retryable=True,
                code="model_unreachable",
            )
        if not isinstance(exc, anthropic.APIStatusError):
            return ModelCallError(
                self._redact(f"Anthropic API returned an unusable response: {exc.message}"),
                retryable=True,
                code="model_bad_response",
            )
        status = exc.status_code
        code, retryable = _classify(status)
        if exc.response.headers.get("x-should-retry") == "false":  # the API says: do not retry
            retryable = False
        detail = exc.api_message or exc.response.text.strip()[:500] or "no details"
        error_type = f" {exc.type}" if exc.type else ""
        request_id = f" (request_id={exc.request_id})" if exc.request_id else ""
        return ModelCallError(
            self._redact(f"Anthropic API error {status}{error_type}: {detail}{request_id}"),
            retryable=retryable,
            status_code=status,
            retry_after_seconds=retry_after_seconds(exc.response.headers) if retryable else None,
            code=code,
        )

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "[redacted]")
        return _KEY_PATTERN.sub("[redacted]", text)


def _to_response(message: Message, request_id: str | None, started: float) -> ModelResponse:
    return ModelResponse(
        # API names, unset/None fields dropped: the blocks can be sent back verbatim as the
        # assistant turn (tool inputs keep their own nulls: exclude_none stops at dicts).
        content=[block.to_dict(mode="json", exclude_none=True) for block in message.content],
        stop_reason=message.stop_reason,
        input_tokens=message.usage.input_tokens,
        output_tokens=message.usage.output_tokens,
        model=message.model,
        request_id=request_id,
        duration_seconds=time.monotonic() - started,
    )


def _classify(status: int) -> tuple[str, bool]:
    """(code, retryable) for an HTTP status from the API."""
    if status == 429:
        return "model_rate_limited", True
    if status == 529:
        return "model_overloaded", True
    if status >= 500 or status in (408, 409):  # 408/409: the SDK retries these too
        return "model_server_error", True
    if status == 401:
        return "model_auth", False
    if status == 403:
        return "model_permission", False
    return "model_bad_request", False


def retry_after_seconds(headers: Any) -> float | None:
    """The wait the API asked for: `retry-after-ms`, else `retry-after` (seconds or an HTTP date).

    `headers` is any mapping with `.get` (httpx headers are case-insensitive).
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP dates are UTC
        when = when.replace(tzinfo=datetime.UTC)
    return max(when.timestamp() - time.time(), 0.0)
