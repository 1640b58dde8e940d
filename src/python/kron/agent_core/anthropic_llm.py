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
from kron.contracts.models import CacheTTL

# The SDK's own default: in-process callers keep it; the Temporal worker passes 0 so that
# Temporal's retry policy is the only one (SDK retries would hide attempts from history).
SDK_DEFAULT_MAX_RETRIES = 2
DEFAULT_TIMEOUT_SECONDS = 600.0

# Anything shaped like an Anthropic key, in case a server echoes one we do not know about.
_KEY_PATTERN = re.compile(r"sk-ant-[A-Za-z0-9_\-]+")

# Prompt caching (the API's rules: /work/shared/notes/prompt-caching.md). A request may carry at
# most this many cache breakpoints, and a breakpoint finds an earlier entry only within this many
# blocks before it (itself included).
MAX_CACHE_BREAKPOINTS = 4
CACHE_LOOKBACK_BLOCKS = 20
DEFAULT_CACHE_TTL: CacheTTL = "5m"
# Blocks that cannot carry a breakpoint (besides empty text).
_UNCACHEABLE_BLOCKS = frozenset({"thinking", "redacted_thinking"})


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
        params = request_params(request)
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


def request_params(request: ModelRequest) -> dict[str, Any]:
    """The Messages API body for `request`, with prompt-cache breakpoints.

    Each turn's request is the previous one plus the newest assistant and user blocks, so with the
    breakpoints below every call reads the whole previous request from the cache and writes only
    what is new:
    - the last tool definition (tools are sorted by name: the order a tool backend lists them in
      must not change the prefix) and the system prompt: stable, shared by every turn and by runs
      with the same tools;
    - the last cacheable block of the conversation: moves forward every turn, so the next turn's
      20-block lookback finds this turn's entry;
    - when the newest turn appended 20 blocks or more (many parallel tool calls), the block where
      the previous request's moving breakpoint was: the lookback from the end cannot reach it.
    That is at most 4, the API's cap. Nothing here reads a clock or varies between calls: the same
    conversation always gives the same body. The request's own lists are never modified.
    """
    marker = {"type": "ephemeral", "ttl": request.cache_ttl or DEFAULT_CACHE_TTL}
    params: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens}
    if request.tools:
        tools = [_without_cache_control(t) for t in sorted(request.tools, key=_tool_name)]
        tools[-1] = {**tools[-1], "cache_control": marker}
        params["tools"] = tools
    if request.system and request.system.strip():
        params["system"] = [{"type": "text", "text": request.system, "cache_control": marker}]
    elif request.system:
        params["system"] = request.system
    messages = [
        {**m, "content": [_without_cache_control(b) for b in _blocks(m.get("content"))]}
        for m in request.messages
    ]
    newest = _last_cacheable(messages, len(messages))
    if newest is not None:
        last_assistant = max(
            (i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None
        )
        previous = (
            _last_cacheable(messages, last_assistant) if last_assistant is not None else None
        )
        if previous is not None and _blocks_between(messages, previous, newest) >= CACHE_LOOKBACK_BLOCKS:
            _mark(messages, previous, marker)
        _mark(messages, newest, marker)
    params["messages"] = messages
    return params


def _tool_name(tool: dict[str, Any]) -> str:
    return str(tool.get("name", ""))


def _blocks(content: Any) -> list[Any]:
    """Message content as a list of blocks: a string is one text block (the API renders it so;
    sending it as a block every turn keeps the prefix byte-identical once it carried a breakpoint)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content) if isinstance(content, list) else []


def _without_cache_control(block: Any) -> Any:
    # Breakpoints are placed here only: one stored with a block would count against the cap.
    if isinstance(block, dict) and "cache_control" in block:
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


def _cacheable(block: Any) -> bool:
    if not isinstance(block, dict) or block.get("type") in _UNCACHEABLE_BLOCKS:
        return False
    return not (block.get("type") == "text" and not str(block.get("text", "")).strip())


def _last_cacheable(messages: list[dict[str, Any]], end: int) -> tuple[int, int] | None:
    """(message, block) of the last block before message `end` that may carry a breakpoint."""
    for i in range(end - 1, -1, -1):
        content = messages[i]["content"]
        for j in range(len(content) - 1, -1, -1):
            if _cacheable(content[j]):
                return i, j
    return None


def _blocks_between(messages: list[dict[str, Any]], start: tuple[int, int], end: tuple[int, int]) -> int:
    """How many blocks `end` lies after `start`."""
    (i0, j0), (i1, j1) = start, end
    return sum(len(messages[i]["content"]) for i in range(i0, i1)) - j0 + j1


def _mark(messages: list[dict[str, Any]], at: tuple[int, int], marker: dict[str, str]) -> None:
    i, j = at
    content = messages[i]["content"]
    content[j] = {**content[j], "cache_control": marker}


def _to_response(message: Message, request_id: str | None, started: float) -> ModelResponse:
    usage = message.usage
    # Older API versions (and servers without caching) leave the cache fields out: None is 0.
    creation = usage.cache_creation
    return ModelResponse(
        # API names, unset/None fields dropped: the blocks can be sent back verbatim as the
        # assistant turn (tool inputs keep their own nulls: exclude_none stops at dicts).
        content=[block.to_dict(mode="json", exclude_none=True) for block in message.content],
        stop_reason=message.stop_reason,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_input_tokens=usage.cache_read_input_tokens or 0,
        cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
        cache_creation_1h_input_tokens=creation.ephemeral_1h_input_tokens if creation else 0,
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
